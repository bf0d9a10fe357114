#!/usr/bin/env bash
# Set up (CPU torch first, then the project) and run the main job on the embedded model.
# Writes dgq-report/ (report.md, figures, graphs), replacing an earlier dgq-report/.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet torch==2.13.0
python3 -m pip install --quiet -e .
python3 -m dgq_compiler run -o dgq-report --overwrite "$@"
