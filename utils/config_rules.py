"""What each configuration value may be, checked when the config loads, before any run folder or data.

``utils/config.py`` already enforces each key's type (that of its declared default) and its choices; these
rules add ranges, list shapes and the relations between keys. Every error names the key, the value and
what is allowed.
"""
from __future__ import annotations

import re
from typing import Any, Callable

from utils.errors import UserError

EVAL_SPLITS = ("val", "test")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
MIN_BATCH = 2  # the contrastive losses compare a sample with the others of its batch
SEED_LIMIT = 2 ** 32  # np.random.seed takes seeds below 2**32; utils.seed.derive_seed's keys are 32-bit words


class ConfigError(UserError, ValueError):
    """A configuration file or override that does not fit the declared keys."""


def _fail(key: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{key} = {value!r}: {allowed}")


def split_over_processes(total: int, world_size: int, refusal: str, fix: str,
                         error: type[UserError] = ConfigError) -> int:
    """``total`` (a global batch's samples or identities) divided among ``world_size`` processes; when it does not
    divide, ``error``: '<refusal> over <world_size> processes; <fix>'."""
    if total % world_size:
        raise error(f"{refusal} over {world_size} processes; {fix}")
    return total // world_size


def per_process(total: int, world_size: int, key: str) -> int:
    """Each process's share of the global batch size ``key`` (batch_size, test_batch_size) = ``total``."""
    example = max(world_size, total // world_size * world_size)
    return split_over_processes(total, world_size, f"{key} = {total} is the global batch and does not divide",
                                f"use a multiple of {world_size} (e.g. {example})")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def int_at_least(low: int) -> Callable[[str, Any], None]:
    def check(key: str, value: Any) -> None:
        if not _is_int(value) or value < low:
            _fail(key, value, f"must be a whole number >= {low}")
    return check


def int_in_range(low: int, limit: int) -> Callable[[str, Any], None]:
    def check(key: str, value: Any) -> None:
        if not _is_int(value) or not low <= value < limit:
            _fail(key, value, f"must be a whole number in [{low}, {limit - 1}]")
    return check


def number_above(low: float, inclusive: bool = False) -> Callable[[str, Any], None]:
    def check(key: str, value: Any) -> None:
        if not _is_number(value) or value < low or (value == low and not inclusive):
            _fail(key, value, f"must be a number {'>=' if inclusive else '>'} {low}")
    return check


def probability(key: str, value: Any) -> None:
    if not _is_number(value) or not 0 <= value <= 1:
        _fail(key, value, "must be a number in [0, 1]")


def non_empty_text(key: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        _fail(key, value, "must be a non-empty string")


def run_name(key: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip() or "/" in value or "\\" in value:
        _fail(key, value, "must be a non-empty name without path separators (it names the run folder)")


def device(key: str, value: Any) -> None:
    if not isinstance(value, str) or not DEVICE_PATTERN.match(value):
        _fail(key, value, "must be auto, cpu, cuda or cuda:N")


def pair_of_ints(low: int) -> Callable[[str, Any], None]:
    def check(key: str, value: Any) -> None:
        if not (isinstance(value, list) and len(value) == 2 and all(_is_int(v) and v >= low for v in value)):
            _fail(key, value, f"must be two whole numbers >= {low}, e.g. [384, 128]")
    return check


def betas(key: str, value: Any) -> None:
    if not (isinstance(value, list) and len(value) == 2 and all(_is_number(v) and 0 <= v < 1 for v in value)):
        _fail(key, value, "must be two numbers in [0, 1), e.g. [0.9, 0.999]")


def erase_scale(key: str, value: Any) -> None:
    ok = isinstance(value, list) and len(value) == 2 and all(_is_number(v) for v in value)
    if not ok or not 0 < value[0] <= value[1] <= 1:
        _fail(key, value, "must be two numbers 0 < low <= high <= 1 (the erased share of the image)")


def increasing_ints(key: str, value: Any) -> None:
    if not (isinstance(value, list) and all(_is_int(v) and v >= 1 for v in value) and value == sorted(set(value))):
        _fail(key, value, "must be a list of increasing whole numbers >= 1 (epochs)")


def eval_splits(key: str, value: Any) -> None:
    distinct = isinstance(value, list) and len(set(map(str, value))) == len(value)
    if not (distinct and value and all(v in EVAL_SPLITS for v in value)):
        _fail(key, value, f"must be a non-empty list of distinct splits from {list(EVAL_SPLITS)}")


POSITIVE_INT = int_at_least(1)
NON_NEGATIVE_INT = int_at_least(0)
POSITIVE = number_above(0)
NON_NEGATIVE = number_above(0, inclusive=True)

RULES: dict[str, Callable[[str, Any], None]] = {
    "name": run_name, "output_dir": non_empty_text, "root_dir": non_empty_text, "seed": int_in_range(0, SEED_LIMIT),
    "device": device, "log_period": POSITIVE_INT,
    "demo.toy.num_train_ids": POSITIVE_INT, "demo.toy.num_val_ids": NON_NEGATIVE_INT,
    "demo.toy.num_test_ids": POSITIVE_INT, "demo.toy.images_per_id": POSITIVE_INT,
    "demo.toy.image_size": pair_of_ints(1), "demo.toy.seed": NON_NEGATIVE_INT,
    "img_size": pair_of_ints(1), "img_flip_prob": probability, "img_pad": NON_NEGATIVE_INT,
    "img_erase_scale": erase_scale, "text_length": int_at_least(2), "batch_size": int_at_least(MIN_BATCH),
    "test_batch_size": POSITIVE_INT, "num_workers": NON_NEGATIVE_INT, "num_instance": POSITIVE_INT,
    "stride_size": POSITIVE_INT, "backbone.pretrain_grid": pair_of_ints(1),
    "backbone.token_init_std": POSITIVE, "backbone.pos_init_std": POSITIVE,
    "temperature": POSITIVE, "id_init_std": POSITIVE,
    "mlm.prob": probability, "mlm.mask_ratio": probability, "mlm.random_ratio": probability,
    "mlm.cmt_depth": POSITIVE_INT, "mlm.heads": POSITIVE_INT,
    "sgiha.temperature": POSITIVE, "sgiha.heads": POSITIVE_INT, "sgiha.mlp_ratio": POSITIVE_INT,
    "sgiha.ln_eps": POSITIVE, "sgiha.filter_ln_eps": POSITIVE, "sgiha.init_std": POSITIVE,
    "sgiha.answer_prefix_masks": NON_NEGATIVE_INT, "sgiha.min_word_len": POSITIVE_INT,
    "sgiha.fallback_min_len": POSITIVE_INT,
    "lr": POSITIVE, "betas": betas, "adam_eps": POSITIVE, "momentum": NON_NEGATIVE, "weight_decay": NON_NEGATIVE,
    "weight_decay_bias": NON_NEGATIVE, "bias_lr_factor": NON_NEGATIVE, "lr_factor": NON_NEGATIVE,
    "num_epoch": POSITIVE_INT, "early_stop_epoch": POSITIVE_INT, "warmup_epochs": NON_NEGATIVE_INT,
    "warmup_factor": probability, "target_lr": NON_NEGATIVE, "milestones": increasing_ints, "gamma": POSITIVE,
    "eval_period": POSITIVE_INT, "eval_splits": eval_splits, "eval_chunk_size": POSITIVE_INT,
}
PREFIX_RULES = {"backbone.": POSITIVE_INT, "loss_weights.": NON_NEGATIVE}  # every other key of these sections


def _rule(key: str) -> Callable[[str, Any], None] | None:
    if key in RULES:
        return RULES[key]
    return next((rule for prefix, rule in PREFIX_RULES.items() if key.startswith(prefix)), None)


def _check_relations(cfg) -> None:
    """Rules that involve several keys."""
    losses = cfg.loss_names.split("+")
    if len(set(losses)) != len(losses):
        _fail("loss_names", cfg.loss_names, "names a loss twice")
    if cfg.select_on not in cfg.eval_splits:
        _fail("select_on", cfg.select_on, f"must be one of eval_splits {cfg.eval_splits} (it picks best.pth)")
    b = cfg.backbone
    if min(cfg.img_size) < b.patch_size:
        _fail("img_size", cfg.img_size, f"each side must be at least backbone.patch_size = {b.patch_size}")
    if cfg.stride_size > b.patch_size:
        _fail("stride_size", cfg.stride_size, f"must be at most backbone.patch_size = {b.patch_size} (a larger "
                                              "stride skips pixels)")
    for width, heads in (("vision_width", "vision_heads"), ("text_width", "text_heads")):
        if b[width] % b[heads]:
            _fail(f"backbone.{heads}", b[heads], f"must divide backbone.{width} = {b[width]}")
    for section, loss in (("mlm", "mlm"), ("sgiha", "aqa")):  # a head's settings matter when its loss is trained
        if loss in losses and b.embed_dim % cfg[section].heads:
            _fail(f"{section}.heads", cfg[section].heads, f"must divide backbone.embed_dim = {b.embed_dim}")
    if cfg.mlm.mask_ratio + cfg.mlm.random_ratio > 1:
        _fail("mlm.random_ratio", cfg.mlm.random_ratio, f"plus mlm.mask_ratio ({cfg.mlm.mask_ratio}) must be <= 1")
    if cfg.pretrain_choice == "file" and not cfg.pretrain_path:
        _fail("pretrain_choice", cfg.pretrain_choice, "needs pretrain_path: the weights file to start from")
    if "aqa" in losses:
        _check_sgiha_layers(cfg.sgiha.layers, min(b.vision_layers, b.text_layers))
    if cfg.sampler == "identity" and cfg.batch_size % cfg.num_instance:
        _fail("batch_size", cfg.batch_size, f"must be a multiple of num_instance = {cfg.num_instance} for the "
                                            "identity sampler (P identities x K instances)")


def _check_sgiha_layers(layers: Any, depth: int) -> None:
    ok = isinstance(layers, list) and layers and all(_is_int(v) and 0 <= v <= depth for v in layers)
    if not ok or len(set(layers)) != len(layers):
        _fail("sgiha.layers", layers, f"must be a non-empty list of distinct hidden-state indices in 0..{depth} "
                                      "(0 = input of block 1, i = output of block i)")


def check_config(cfg, flat: dict[str, Any]) -> None:
    """Every rule on ``flat`` (dotted key -> value of ``cfg``), then the relations between keys."""
    for key, value in flat.items():
        rule = _rule(key)
        if rule is not None and value is not None:
            rule(key, value)
    _check_relations(cfg)
