#!/usr/bin/env bash
# Install the stack into .venv (as the demo does) and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh
.venv/bin/python -m pytest tests "$@"
