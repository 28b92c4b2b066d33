#!/usr/bin/env bash
# The CPU demo, one command on a fresh clone: builds the demo's backbone when missing, generates the toy data,
# fine-tunes IRRA + SG-IHA, evaluates, draws the grounding picture and says where everything is (demo.py).
# Usage: bash run_demo.sh [--config_file configs/demo.yaml] [--key value ...]   (default configs/demo_pretrained.yaml)
# It runs in the repository folder, wherever it is started: the toy data and backbone go to data/, the runs to logs/,
# and relative paths among the arguments are read from there.
set -euo pipefail
cd "$(dirname "$0")"
exec "${PYTHON:-python}" demo.py "$@"
