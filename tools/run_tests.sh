#!/usr/bin/env bash
# Install the stack into .venv (as the demo does), run the pre-commit hooks
# (lint, import order, spelling: seconds) and then the test suite, on one
# pytest-xdist worker per core (most tests are single-threaded or start
# subprocesses; extra arguments go to pytest, e.g. -n 0 for one process).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh
PATH="$PWD/.venv/bin:$PATH" .venv/bin/pre-commit run --all-files --show-diff-on-failure
.venv/bin/python -m pytest -n auto tests "$@"
