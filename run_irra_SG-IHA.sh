#!/usr/bin/env bash
# Train IRRA + SG-IHA (SDM + ID + MLM + AQA).
# Usage: bash run_irra_SG-IHA.sh [DATASET] [ROOT_DIR] [--key value ...]
#   DATASET: CUHK-PEDES (default) | ICFG-PEDES | RSTPReid   (or env DATASET)
#   ROOT_DIR: folder holding DATASET/ (default: data, or env ROOT_DIR), relative to where you run the script
#   Further arguments go to train.py, e.g. --pretrain_path ~/ViT-B-16.pt --batch_size 32
set -euo pipefail
REPO=$(cd "$(dirname "$0")" && pwd)
RECIPE=irra_sgiha
source "${REPO}/tools/run_common.sh"
