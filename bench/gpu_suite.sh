#!/usr/bin/env bash
# The GPU table of docs/benchmarks.md in one command, each measurement beside the planner's prediction
# (bench/bench_plan.py runs bench/bench_train.py and processor/plan.py on the same batches):
#   1. IRRA + SG-IHA at the global batch of 64 (method §7): fp32 / bf16 / fp16 AMP, with and without activation
#      checkpointing, and bf16 with torch.compile: peak memory, s/step, FLOPs against a real step's count, the
#      AMP step's losses against the fp32 step's;
#   2. the four recipes at batch 64, fp16 (amp auto on CUDA);
#   3. tools/plan_run.py's full plan of IRRA + SG-IHA (JSON), and feature extraction at fp16;
#   4. the training-step modes (bench/bench_step_modes.py): eager-dynamic, fixed-shape, compiled and reduce-overhead
#      (CUDA graphs), bf16, for the demo's tiny CLIP and ViT-B/16 at batch 64: the measurement that decides
#      fixed_shapes and compile for GPU runs.
# Usage: bash bench/gpu_suite.sh [OUT_DIR]     (default docs/gpu; one markdown table per setting)
# Planned for at most 10 minutes on one H100/H200 (not yet timed: no GPU was lent to this work).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-${REPO}/docs/gpu}
PYTHON=${PYTHON:-python}
mkdir -p "$OUT"
COMMON=(--device cuda --batch_sizes 64 --steps 5 --warmup 2)
for amp in none bf16 fp16; do
  for checkpointing in "" "--grad_checkpoint"; do
    name="plan_irra_sgiha_b64_${amp}${checkpointing:+_ckpt}"
    echo "== ${name}"
    "$PYTHON" "${REPO}/bench/bench_plan.py" "${COMMON[@]}" --amp "$amp" $checkpointing --out "${OUT}/${name}.md"
  done
done
echo "== plan_irra_sgiha_b64_bf16_compile"
"$PYTHON" "${REPO}/bench/bench_plan.py" "${COMMON[@]}" --amp bf16 --compile --out "${OUT}/plan_irra_sgiha_b64_bf16_compile.md"
echo "== plan_recipes_b64_fp16"
"$PYTHON" "${REPO}/bench/bench_plan.py" "${COMMON[@]}" --amp fp16 --recipes clip_finetune clip_finetune_sgiha irra \
  --out "${OUT}/plan_recipes_b64_fp16.md"
echo "== plan_run irra_sgiha"
"$PYTHON" "${REPO}/tools/plan_run.py" --config_file "${REPO}/configs/CUHK-PEDES/irra_sgiha.yaml" --json \
  > "${OUT}/plan_run_irra_sgiha.json"
echo "== inference_fp16"
"$PYTHON" "${REPO}/bench/bench_inference.py" --device cuda --batch_size 256 --amp fp16 --out "${OUT}/inference_fp16.md"
echo "== step_modes_bf16"
"$PYTHON" "${REPO}/bench/bench_step_modes.py" --device cuda --amp bf16 --sizes demo --repeats 10 \
  --out "${OUT}/step_modes_demo_bf16.md"
"$PYTHON" "${REPO}/bench/bench_step_modes.py" --device cuda --amp bf16 --sizes vitb16 --batch_size 64 --repeats 10 \
  --out "${OUT}/step_modes_vitb16_b64_bf16.md"
