#!/usr/bin/env bash
# Set up (CPU torch first, then the project with its test extra) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet torch==2.13.0
python3 -m pip install --quiet -e ".[test]"
python3 -m pytest -q "$@"
