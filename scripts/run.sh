#!/usr/bin/env bash
# Set up (CPU torch first, then the project) and run the main job on the embedded tiny model.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet torch==2.13.0
python3 -m pip install --quiet -e .
out="${1:-dgq-output}"
dgq export tiny -o "$out/tiny-export" --overwrite
