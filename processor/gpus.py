"""The GPUs a run is planned for (tools/plan_run.py, processor/plan.py): memory and vendor peak FLOP/s. Kept apart
from the planner so that the planner's command line answers --help without importing torch."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GpuSpec:
    """A GPU's memory and its vendor peak dense FLOP/s (no sparsity) per precision; None: not supported."""

    memory_gib: float
    fp32_tflops: float
    fp16_tflops: float  # tensor cores, fp32 accumulation
    bf16_tflops: float | None


# Vendor datasheets: NVIDIA V100 (SXM2), A100 (SXM4), H100 (SXM5), H200 (SXM) datasheets, GeForce RTX 3090 / 4090
# (Ampere GA102 and Ada AD102 whitepapers: fp16 with fp32 accumulation). FP32 is plain fp32 (torch does not use
# TF32 for matmuls by default). Memory: the nominal size in GiB.
GPU_SPECS: dict[str, GpuSpec] = {
    "V100-16GB": GpuSpec(16, 15.7, 125.0, None),
    "V100-32GB": GpuSpec(32, 15.7, 125.0, None),
    "RTX3090-24GB": GpuSpec(24, 35.6, 71.0, 71.0),
    "RTX4090-24GB": GpuSpec(24, 82.6, 165.2, 165.2),
    "A100-40GB": GpuSpec(40, 19.5, 312.0, 312.0),
    "A100-80GB": GpuSpec(80, 19.5, 312.0, 312.0),
    "H100-80GB": GpuSpec(80, 67.0, 989.0, 989.0),
    "H200-141GB": GpuSpec(141, 67.0, 989.0, 989.0),
}
