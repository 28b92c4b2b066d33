#!/usr/bin/env bash
# The GPU table of docs/benchmarks.md in one command: the four recipes at the global batch of 64 (SPEC 7),
# fp32 / bf16 / fp16 AMP, with and without activation checkpointing; then feature extraction at fp16.
# Usage: bash bench/gpu_suite.sh [OUT_DIR]     (default docs/gpu; one markdown table per setting)
# About 5 minutes on one H100/H200. Each table names the machine (device, torch, load) in its first lines.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-${REPO}/docs/gpu}
PYTHON=${PYTHON:-python}
mkdir -p "$OUT"
for amp in none bf16 fp16; do
  for checkpointing in "" "--grad_checkpoint"; do
    name="train_b64_${amp}${checkpointing:+_ckpt}"
    echo "== ${name}"
    "$PYTHON" "${REPO}/bench/bench_train.py" --device cuda --batch_size 64 --amp "$amp" $checkpointing \
      --steps 5 --warmup 2 --out "${OUT}/${name}.md"
  done
done
echo "== inference_fp16"
"$PYTHON" "${REPO}/bench/bench_inference.py" --device cuda --batch_size 256 --amp fp16 --out "${OUT}/inference_fp16.md"
