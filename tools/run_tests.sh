#!/usr/bin/env bash
# Install the stack into .venv (as the demo does), run the pre-commit hooks
# (lint, import order, spelling: seconds) and then the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh
PATH="$PWD/.venv/bin:$PATH" .venv/bin/pre-commit run --all-files --show-diff-on-failure
.venv/bin/python -m pytest tests "$@"
