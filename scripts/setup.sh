#!/usr/bin/env bash
# Creates (or reuses) a virtual environment with the check, what the Agent ships for it, and the test tools.
# PYTHON picks the interpreter (default python3, >= 3.11); VENV the environment's folder (default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is required, this is " + sys.version' \
  || { echo "error: $PYTHON is older than 3.11; set PYTHON=/path/to/python3.11+" >&2; exit 1; }
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[agent,cli,test]'
