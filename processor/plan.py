"""Plan a training step before running it: FLOPs, peak memory by kind, and what fits on which GPU (issue 17).

The real model code runs one training step (forward under the config's autocast, backward, the Adam step) on
fake tensors (``FakeTensorMode``: shapes, dtypes and strides, no data, nothing allocated), so ViT-B/16 at any
batch plans in seconds on a CPU. FLOPs are torch's own count of that step (``FlopCounterMode``); memory is the
bytes of every live tensor storage, followed op by op (a ``TorchDispatchMode``): the peak, and what was alive at
the peak by kind. With ``fixed_shapes`` the step's shapes are the padded ones (text_length, ``mlm_rows``); the
plan also reports the FLOPs that padding adds over the kept-length step. Without it the model's data-dependent
shapes are fixed ahead (``TextShapes``): the kept text lengths (``model.build.kept_lengths``, passed to the
model's forward) and the number of MLM-masked positions (its boolean indexing).

Steps meant for CUDA are planned on fake CPU tensors: without a GPU torch cannot run backward on fake CUDA
tensors. The aten ops are the same; what differs is named in docs/benchmarks.md and measured by
bench/gpu_suite.sh.
"""
from __future__ import annotations

import contextlib
import gc
import itertools
import math
import weakref
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from datasets.bases import DatasetError, dataset_files, get_benchmark
from datasets.reader import read_benchmark
from model.build import build_model, kept_lengths, mlm_rows
from processor.gpus import GPU_SPECS, GpuSpec
from processor.trainer import last_epoch
from solver.build import build_optimizer
from utils.config import Config
from utils.errors import UserError
from utils.precision import auto_amp, autocast
from utils.tokenizer import SPECIAL_TOKENS, get_tokenizer

GIB = 2 ** 30
TERA = 1e12


# Share of a GPU's memory a step may plan for: the CUDA context, cuBLAS/cuDNN workspaces and the caching
# allocator's fragmentation take the rest (none of them is a tensor the planner sees).
USABLE_MEMORY_FRACTION = 0.9
# Utilisation of the vendor peak assumed for the time estimate: the step mixes matmuls with memory-bound ops
# (layer norms, softmax, the Adam step); measured on this project's CPU, fp32: 71% of the matmul rate.
ASSUMED_UTILISATION = 0.4
ASSUMED_CAPTION_TOKENS = (40, 60)  # no dataset: BPE tokens per caption, inclusive (bench/bench_train.py's batches)
ANSWER_PHRASE_TOKENS = 3  # tokens of the longest answer phrase (method §6.1 phrases: 2-3 tokens in the bench)
BOOLEAN_INDEX_OPS = (torch.ops.aten.index.Tensor, torch.ops.aten.index_put.default,
                     torch.ops.aten.index_put_.default, torch.ops.aten._index_put_impl_.default)
KINDS = ("weights", "gradients", "optimizer_state", "batch", "activations", "temporaries")
PHASES = ("forward", "backward", "optimizer step")  # the parts of a step, in order
# Why a kind holds no bytes at the peak, by the phase the peak falls in (None: in any phase). A kind and phase not
# named here get the plain fact ("none alive at the peak, in the <phase>").
ZERO_REASONS: dict[tuple[str, str | None], str] = {
    ("gradients", "forward"): "backward has not made this step's yet, and the optimizer's zero_grad(set_to_none=True) "
                              "freed the previous step's",
    ("gradients", "backward"): "the peak comes before backward made its first parameter gradient",
    ("temporaries", "forward"): "they are what backward and the optimizer step make; the forward's tensors count "
                                "as activations",
    ("activations", "backward"): "backward had freed every tensor the forward saved",
    ("activations", "optimizer step"): "backward freed the tensors the forward saved before the optimizer step",
    ("optimizer_state", None): "the optimizer keeps no state (e.g. SGD without momentum)",
}


class PlanError(UserError, ValueError):
    """A config the planner cannot plan (e.g. a GPU name it does not know)."""


@dataclass(frozen=True)
class TextShapes:
    """The data-dependent shapes of a batch, fixed ahead: kept positions of the caption (and question) pass,
    of the answer pass, and the MLM-masked positions of the whole batch."""

    caption_length: int
    answer_length: int
    mlm_masked: int
    source: str  # where the figures come from (dataset statistics or the stated assumption)

    def kept_lengths(self) -> dict[str, int]:
        return {"caption_ids": self.caption_length, "question_ids": self.caption_length,
                "answer_ids": self.answer_length}


@dataclass(frozen=True)
class StepPlan:
    """One planned training step."""

    batch_size: int
    flops: int
    peak_bytes: int
    breakdown: dict[str, int]  # KINDS -> bytes alive at the peak
    peak_phase: str  # the part of the step (PHASES) the peak falls in


def zero_at_peak(breakdown: Mapping[str, int], phase: str) -> dict[str, str]:
    """Each kind with no bytes at the peak -> why, from the phase the peak falls in (ZERO_REASONS)."""
    return {kind: ZERO_REASONS.get((kind, phase)) or ZERO_REASONS.get((kind, None))
            or f"none alive at the peak, in the {phase}" for kind in KINDS if breakdown[kind] == 0}


def expected_batch_max(lengths: Sequence[int], batch_size: int) -> float:
    """E[max of ``batch_size`` draws] from the empirical distribution of ``lengths`` (draws with replacement)."""
    counts = Counter(lengths)
    below, total, expected = 0, len(lengths), 0.0
    for value in sorted(counts):
        above = below + counts[value]
        expected += value * ((above / total) ** batch_size - (below / total) ** batch_size)
        below = above
    return expected


def caption_lengths(cfg: Config) -> tuple[list[int], str, int | None, int | None]:
    """Positions per training caption (SOT..EOT, cut at text_length), where they come from, the training
    captions and identities (None without the dataset)."""
    try:
        dataset_files(cfg.dataset_name, cfg.root_dir, cfg.annotation_file)
    except DatasetError:  # no dataset here: plan with the stated assumption (a broken one fails below)
        low, high = ASSUMED_CAPTION_TOKENS
        return ([n + SPECIAL_TOKENS for n in range(low, high + 1)],
                f"assumed: captions of {low}-{high} BPE tokens ({cfg.dataset_name} not readable under "
                f"{cfg.root_dir})", None, None)
    data = read_benchmark(cfg.dataset_name, cfg.root_dir, verify_images=False, annotation_file=cfg.annotation_file)
    tokenizer = get_tokenizer()
    lengths = [min(tokenizer.sequence_length(s.caption), cfg.text_length) for s in data.train]
    return lengths, f"{cfg.dataset_name} training captions ({len(lengths)})", len(lengths), data.num_classes


def padded_shapes(cfg: Config, batch_size: int, source: str) -> TextShapes:
    """The shapes of every fixed_shapes step: texts at text_length, ``mlm_rows`` MLM rows."""
    return TextShapes(cfg.text_length, cfg.text_length,
                      mlm_rows(batch_size, cfg.text_length, cfg.mlm.fixed_sigmas, cfg.mlm.prob),
                      f"fixed_shapes: text_length and the fixed MLM rows ({source})")


def text_shapes(cfg: Config, lengths: Sequence[int], source: str) -> TextShapes:
    """Shapes of a typical batch: with fixed_shapes the padded ones; else the expected longest caption of
    ``batch_size`` draws, rounded up (``kept_text_shapes``)."""
    if cfg.fixed_shapes:
        return padded_shapes(cfg, cfg.batch_size, source)
    return kept_text_shapes(cfg, lengths, source)


def kept_text_shapes(cfg: Config, lengths: Sequence[int], source: str) -> TextShapes:
    """Shapes of a typical batch of the kept-length step: the expected longest caption of ``batch_size`` draws,
    rounded up, and the expected MLM-masked positions."""
    caption = min(cfg.text_length, math.ceil(expected_batch_max(lengths, cfg.batch_size)))
    answer = SPECIAL_TOKENS + cfg.sgiha.answer_prefix_masks + ANSWER_PHRASE_TOKENS
    mean_tokens = sum(lengths) / len(lengths) - SPECIAL_TOKENS
    masked = max(1, round(cfg.mlm.prob * mean_tokens * cfg.batch_size))
    return TextShapes(caption, answer, masked, source)


class _FixedBooleanIndex(TorchDispatchMode):
    """Boolean-mask indexing with a count fixed ahead (fake tensors hold no mask values): the model's only
    boolean masks select the MLM-masked positions."""

    def __init__(self, count: int):
        super().__init__()
        self.count = count

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in BOOLEAN_INDEX_OPS and any(i is not None and i.dtype == torch.bool for i in args[1]):
            indices = []
            for index in args[1]:
                if index is not None and index.dtype == torch.bool:
                    indices += [torch.zeros(self.count, dtype=torch.long, device=index.device)] * index.dim()
                else:
                    indices.append(index)
            args = (args[0], indices, *args[2:])
        return func(*args, **kwargs)


class _LiveStorages(TorchDispatchMode):
    """Bytes of every live tensor storage made by an op, the peak, and the storages alive at the peak."""

    def __init__(self):
        super().__init__()
        self.kind = "temporaries"  # kind of the storages made now
        self.phase = PHASES[0]  # the part of the step running now
        self.peak_phase = self.phase
        self._serial = itertools.count()
        self._live: dict[int, tuple[int, int, str, Any]] = {}  # id(storage) -> (serial, bytes, kind, weakref)
        self._events: list[tuple[int, int, str]] = []  # (serial, +bytes / -bytes, kind)
        self.now = self.peak = 0
        self._peak_event = -1

    def add(self, tensor: Tensor, kind: str) -> None:
        storage = tensor.untyped_storage()
        key = id(storage)  # the Python storage object lives as long as the storage (PyObject preservation)
        if key in self._live:
            return
        serial, size = next(self._serial), storage.nbytes()
        self._live[key] = (serial, size, kind, weakref.ref(storage, lambda _, k=key: self._free(k)))
        self._record(serial, size, kind)

    def serial(self, tensor: Tensor) -> int | None:
        entry = self._live.get(id(tensor.untyped_storage()))
        return None if entry is None else entry[0]

    def _free(self, key: int) -> None:
        serial, size, kind, _ = self._live.pop(key)
        self._record(serial, -size, kind)

    def _record(self, serial: int, change: int, kind: str) -> None:
        self._events.append((serial, change, kind))
        self.now += change
        if self.now > self.peak:
            self.peak, self._peak_event, self.peak_phase = self.now, len(self._events) - 1, self.phase

    def alive_at_peak(self) -> dict[int, tuple[int, str]]:
        """serial -> (bytes, kind) of the storages alive at the peak."""
        alive: dict[int, tuple[int, str]] = {}
        for serial, change, kind in self._events[:self._peak_event + 1]:
            if change >= 0:
                alive[serial] = (change, kind)
            else:
                alive.pop(serial, None)
        return alive

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, Tensor):
                self.add(leaf, self.kind)
        return out


@contextlib.contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Python's cycle collector paused: storages held in reference cycles are freed when it happens to run, which
    depends on what the process did before, so a peak counted with it running would depend on history (issue 20)."""
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _fake_batch(cfg: Config, batch_size: int, num_classes: int) -> dict[str, Tensor]:
    """A batch of the shapes and dtypes the loader gives (values do not matter to a fake step)."""
    height, width = cfg.img_size
    ids = {k: torch.zeros(batch_size, cfg.text_length, dtype=torch.long)
           for k in ("caption_ids", "mlm_ids", "mlm_labels", "question_ids", "question_mask", "answer_ids")}
    return {"images": torch.zeros(batch_size, 3, height, width), **ids,
            "pids": torch.zeros(batch_size, dtype=torch.long).clamp_max(num_classes - 1),
            "image_ids": torch.arange(batch_size)}


def _step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: Mapping[str, Tensor], amp: str,
          lengths: Mapping[str, int], tracker: _LiveStorages | None = None) -> set[int]:
    """One training step as processor/trainer.py runs it (on fake CPU tensors, under the runtime's autocast),
    with the kept text ``lengths`` fixed ahead; the tracker serials of the gradients it made."""
    if tracker is not None:
        tracker.kind = "activations"
    with autocast(torch.device("cpu"), amp):
        outputs = model(batch, lengths)
    loss = sum(v for k, v in outputs.items() if k.endswith("_loss"))
    del outputs
    if tracker is not None:
        tracker.kind, tracker.phase = "temporaries", PHASES[1]
    loss.backward()  # fp16's GradScaler multiplies the loss and unscales in place: no memory of its own
    grads = set()
    if tracker is not None:
        grads = {tracker.serial(p.grad) for p in model.parameters() if p.grad is not None}
        tracker.phase = PHASES[2]
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return grads


def _with(cfg: Config, **values: Any) -> Config:
    """A copy of ``cfg`` with top-level ``values`` set."""
    copy = Config(cfg.to_dict())
    for key, value in values.items():
        setattr(copy, key, value)
    return copy


def plan_step(cfg: Config, num_classes: int, shapes: TextShapes, amp: str, batch_size: int | None = None,
              grad_checkpoint: bool | None = None) -> StepPlan:
    """FLOPs and peak memory of one steady-state training step (Adam state already made) of ``cfg``."""
    cfg = _with(cfg, pretrain_choice="none", batch_size=batch_size or cfg.batch_size,
                grad_checkpoint=cfg.grad_checkpoint if grad_checkpoint is None else grad_checkpoint)
    size = cfg.batch_size
    with torch.device("meta"):  # shapes only: no initialisation, no weights file
        model = build_model(cfg, num_classes)
    fake = FakeTensorMode(allow_non_fake_inputs=True)  # the meta-device model's tensors become fake CPU tensors
    with fake, _FixedBooleanIndex(shapes.mlm_masked):
        model = model.to_empty(device="cpu").train()
        optimizer = build_optimizer(cfg, model)
        for p in model.parameters():  # the Adam state of a step after the first one
            if p.requires_grad:
                p.grad = torch.zeros_like(p)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tracker = _LiveStorages()
        for p in model.parameters():
            tracker.add(p, "weights")
        for b in model.buffers():
            tracker.add(b, "weights")
        for state in optimizer.state.values():
            for value in tree_leaves(state):
                if isinstance(value, Tensor):
                    tracker.add(value, "optimizer_state")
        batch = _fake_batch(cfg, size, num_classes)
        for value in batch.values():
            tracker.add(value, "batch")
        with tracker, FlopCounterMode(display=False) as counter, _no_cycle_collection():
            grads = _step(model, optimizer, batch, amp, shapes.kept_lengths(), tracker)
    breakdown = dict.fromkeys(KINDS, 0)
    for serial, (nbytes, kind) in tracker.alive_at_peak().items():
        breakdown["gradients" if serial in grads else kind] += nbytes
    return StepPlan(size, int(counter.get_total_flops()), tracker.peak, breakdown, tracker.peak_phase)


def published_train_counts(cfg: Config) -> tuple[int, int]:
    """(training captions, identities) the literature reports for ``cfg.dataset_name`` (method §2)."""
    try:
        identities, _, captions = get_benchmark(cfg.dataset_name).published["train"]
    except (KeyError, ValueError) as exc:
        raise PlanError(f"dataset_name {cfg.dataset_name!r} is not readable under root_dir {cfg.root_dir} and has "
                        f"no published training counts to plan with; point root_dir at the dataset") from exc
    return captions, identities


def affine_fit(first: StepPlan, second: StepPlan) -> tuple[float, float]:
    """(bytes per sample, fixed bytes) of the line through two plans' peaks (memory is affine in the batch)."""
    slope = (second.peak_bytes - first.peak_bytes) / (second.batch_size - first.batch_size)
    return slope, first.peak_bytes - slope * first.batch_size


def largest_batch(slope: float, intercept: float, budget_bytes: float) -> int:
    """The largest batch whose planned peak is within ``budget_bytes`` (0: not even one sample)."""
    return max(0, math.floor((budget_bytes - intercept) / slope)) if slope > 0 else 0


def peak_tflops(spec: GpuSpec, amp: str) -> float | None:
    """Vendor peak of the step's matmul precision: fp32 without AMP, else the AMP dtype's tensor-core rate."""
    return {"none": spec.fp32_tflops, "fp16": spec.fp16_tflops, "bf16": spec.bf16_tflops}[amp]


def planned_amp(amp: str, device_type: str, gpus: Sequence[str] = ()) -> str:
    """``amp``, or for 'auto' the runtime's choice (utils.precision.auto_amp) for GPUs that need not be here:
    bf16 when every GPU in ``gpus`` has native bf16 (compute capability >= 8; a bf16 rate in GPU_SPECS), fp16 when
    one has not (V100)."""
    if amp != "auto":
        return amp
    return auto_amp(device_type, all(GPU_SPECS[name].bf16_tflops is not None for name in gpus))


def gpu_rows(cfg: Config, num_classes: int, lengths: Sequence[int], source: str, flops_per_epoch: float,
             gpus: Sequence[str], cuda_plan: StepPlan, amp: str) -> dict[str, dict[str, Any]]:
    """Per named GPU: fits, largest batch with and without checkpointing, epoch and run time bounds (a run: the
    epochs the config runs, early_stop_epoch included)."""
    size = cfg.batch_size
    lines = {}
    for checkpointed in (False, True):
        plans = [cuda_plan if checkpointed == cfg.grad_checkpoint and b == size else
                 plan_step(cfg, num_classes, text_shapes(_with(cfg, batch_size=b), lengths, source), amp,
                           batch_size=b, grad_checkpoint=checkpointed) for b in (size, 2 * size)]
        lines[checkpointed] = affine_fit(*plans)
    rows = {}
    for name in gpus:
        spec = GPU_SPECS[name]
        budget = spec.memory_gib * GIB * USABLE_MEMORY_FRACTION
        tflops = peak_tflops(spec, amp)
        lower = None if tflops is None else flops_per_epoch / (tflops * TERA)
        run = None if lower is None else lower * last_epoch(cfg)
        rows[name] = {
            "memory_bytes": int(spec.memory_gib * GIB), "usable_bytes": int(budget),
            "fits": cuda_plan.peak_bytes <= budget, "max_batch_size": largest_batch(*lines[False], budget),
            "max_batch_size_checkpointed": largest_batch(*lines[True], budget), "peak_tflops": tflops,
            "epoch_seconds_lower_bound": lower, "run_seconds_lower_bound": run, "utilisation": ASSUMED_UTILISATION,
            "epoch_seconds_estimate": None if lower is None else lower / ASSUMED_UTILISATION,
            "run_seconds_estimate": None if run is None else run / ASSUMED_UTILISATION,
        }
    return rows


def plan_run(cfg: Config, device_type: str, gpus: Sequence[str]) -> dict[str, Any]:
    """The whole plan of a config: its step on ``device_type``, per epoch, and per named GPU (JSON-ready)."""
    unknown = [g for g in gpus if g not in GPU_SPECS]
    if unknown:
        raise PlanError(f"--gpu {' '.join(unknown)}: unknown GPU; expected names from {sorted(GPU_SPECS)}")
    lengths, source, captions, num_classes = caption_lengths(cfg)
    if captions is None:
        captions, num_classes = published_train_counts(cfg)
        source += f"; {captions} training captions and {num_classes} identities as published (method §2)"
    amp = planned_amp(cfg.amp, device_type, gpus)
    shapes = text_shapes(cfg, lengths, source)
    step = plan_step(cfg, num_classes, shapes, amp)
    # The other step mode, for what padding costs (or would cost) over the kept lengths.
    other_cfg = _with(cfg, fixed_shapes=not cfg.fixed_shapes)
    other = plan_step(other_cfg, num_classes, text_shapes(other_cfg, lengths, source), amp)
    fixed, kept = (step, other) if cfg.fixed_shapes else (other, step)
    steps_per_epoch = captions // cfg.batch_size if cfg.drop_last else math.ceil(captions / cfg.batch_size)
    report: dict[str, Any] = {
        "device": device_type, "amp": amp, "batch_size": cfg.batch_size, "grad_checkpoint": cfg.grad_checkpoint,
        "losses": list(cfg.losses), "num_classes": num_classes, "train_captions": captions,
        "text_shapes": {"caption_length": shapes.caption_length, "answer_length": shapes.answer_length,
                        "mlm_masked": shapes.mlm_masked, "source": shapes.source},
        "flops_per_step": step.flops, "fixed_shapes": cfg.fixed_shapes,
        "padding_flops_per_step": fixed.flops - kept.flops,
        "steps_per_epoch": steps_per_epoch,
        "flops_per_epoch": step.flops * steps_per_epoch, "epochs": last_epoch(cfg),
        "peak_memory_bytes": step.peak_bytes, "breakdown": step.breakdown, "peak_phase": step.peak_phase,
        "zero_at_peak": zero_at_peak(step.breakdown, step.peak_phase),
    }
    cuda_amp = planned_amp(cfg.amp, "cuda", gpus)
    cuda_plan = step if cuda_amp == amp else plan_step(cfg, num_classes, shapes, cuda_amp)
    report["gpu_amp"] = cuda_amp
    report["gpus"] = gpu_rows(cfg, num_classes, lengths, source, step.flops * steps_per_epoch, gpus, cuda_plan,
                              cuda_amp)
    return report


def worst_case_shapes(cfg: Config, batch_size: int) -> TextShapes:
    """Every caption at text_length: the most a batch can hold (no dataset statistics needed)."""
    tokens = cfg.text_length - SPECIAL_TOKENS
    if cfg.fixed_shapes:
        return padded_shapes(cfg, batch_size, f"worst case: captions of {tokens} tokens")
    return TextShapes(cfg.text_length, SPECIAL_TOKENS + cfg.sgiha.answer_prefix_masks + ANSWER_PHRASE_TOKENS,
                      max(1, round(cfg.mlm.prob * tokens * batch_size)), f"worst case: captions of {tokens} tokens")


def memory_warning(cfg: Config, num_classes: int, amp: str, world_size: int, free_bytes: int) -> str | None:
    """None when a process's share of a step (worst-case captions) fits in ``free_bytes``; else one line with
    the planned peak and the fix: grad_checkpoint, or the largest global batch that fits."""
    batch_size = cfg.batch_size // world_size
    plan = plan_step(cfg, num_classes, worst_case_shapes(cfg, batch_size), amp, batch_size=batch_size)
    if plan.peak_bytes <= free_bytes:
        return None
    head = (f"the planned peak of a training step ({batch_size} samples per process, amp {amp}) is "
            f"{plan.peak_bytes / GIB:.1f} GiB but the device has {free_bytes / GIB:.1f} GiB free")
    if not cfg.grad_checkpoint:
        checkpointed = plan_step(cfg, num_classes, worst_case_shapes(cfg, batch_size), amp, batch_size=batch_size,
                                 grad_checkpoint=True)
        if checkpointed.peak_bytes <= free_bytes:
            return f"{head}: set grad_checkpoint: true (planned {checkpointed.peak_bytes / GIB:.1f} GiB)"
        plan = checkpointed
    half = max(1, batch_size // 2)
    smaller = plan_step(cfg, num_classes, worst_case_shapes(cfg, half), amp, batch_size=half, grad_checkpoint=True)
    fits = largest_batch(*affine_fit(smaller, plan), free_bytes) if half < batch_size else 0
    return (f"{head}: set grad_checkpoint: true and batch_size {fits * world_size} (or more processes)" if fits
            else f"{head}, even one sample with grad_checkpoint: true: use a larger GPU")


def batch_shapes(cfg: Config, batch: Mapping[str, Tensor]) -> TextShapes:
    """The shapes a real batch gives the model: its kept text lengths and MLM-masked positions (with
    fixed_shapes: the padded shapes of every batch)."""
    if cfg.fixed_shapes:
        return padded_shapes(cfg, batch["caption_ids"].shape[0], "a real batch")
    kept = kept_lengths(batch, cfg.losses)
    caption = max(kept["caption_ids"], kept.get("question_ids", 0))
    answer = kept.get("answer_ids", caption)
    masked = int((batch["mlm_labels"] != 0).sum()) if "mlm_labels" in batch else 0
    return TextShapes(caption, answer, max(1, masked), "a real batch")
