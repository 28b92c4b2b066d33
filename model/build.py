"""Model factories: the training model of a loss recipe (method §5, 6) and the retrieval model (method §6.5), also with
the weights of a training checkpoint or of the pretrained CLIP."""
from __future__ import annotations

import logging
import math
import os
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from model.clip import CLIP, EncoderOutput
from model.irra import MLMHead, build_cross_attn, build_cross_modal_transformer, cross_former
from model.objectives import compute_aqa, compute_id, compute_mlm, compute_sdm, cosine_matrix
from model.pretrained import ARCHIVE_EXTRAS, apply_state_dict, load_pretrained, pretrained_state_dict
from model.sgiha import SGIHAHead
from model.shard import LOCAL, BatchShard
from utils.checkpoint import CheckpointError, load_checkpoint
from utils.config import Config, ConfigError
from utils.errors import one_line
from utils.tokenizer import SPECIAL_TOKENS

logger = logging.getLogger(__name__)

BACKBONE_PREFIX = "backbone."
COMMON_INPUTS = ("images", "caption_ids", "pids")  # batch entries every recipe reads (SDM and ID, method §5)
# Batch entries each further loss reads: the one list that the batch check, the text passes and the kept lengths use.
LOSS_INPUTS = {"mlm": ("mlm_ids", "mlm_labels"), "aqa": ("question_ids", "question_mask", "answer_ids")}
# Token-id inputs encoded together in one text-tower pass (larger matrix products): captions with questions (equal
# lengths: a question replaces a phrase by as many masks as it has tokens, method §6.1), MLM inputs, answers.
TEXT_PASSES = (("caption_ids", "question_ids"), ("mlm_ids",), ("answer_ids",))
# Inputs every pass keeps at full length: the cross-modal transformer attends to the MLM input's padding (method §5).
FULL_LENGTH_INPUTS = ("mlm_ids",)
MLM_OVERFLOW = "mlm_overflow"  # fixed_shapes output: 1 when a batch had more MLM-masked positions than mlm_rows
WRAPPER_ATTRS = ("module", "_orig_mod")  # the wrapped module of DistributedDataParallel / torch.compile
WRAPPER_PREFIXES = tuple(f"{attr}." for attr in WRAPPER_ATTRS)  # what they add to state-dict keys


def _accuracy(scores: Tensor, targets: Tensor, shard: BatchShard = LOCAL, global_count: int | None = None) -> Tensor:
    """Share of rows whose highest score is at the target, detached (a metric, not a loss)."""
    return shard.mean((scores.detach().argmax(dim=-1) == targets).float(), global_count)


def _split(output: EncoderOutput, sizes: Sequence[int]) -> list[EncoderOutput]:
    """Per-input views of one text-tower pass over concatenated inputs."""
    feats, tokens = output.global_feat.split(sizes), output.tokens.split(sizes)
    hidden = {k: v.split(sizes) for k, v in output.hidden.items()}
    return [EncoderOutput(feats[i], tokens[i], {k: v[i] for k, v in hidden.items()}) for i in range(len(sizes))]


def text_passes(losses: Sequence[str]) -> list[tuple[str, ...]]:
    """The token-id inputs of ``losses``, grouped by text-tower pass (TEXT_PASSES order)."""
    inputs = COMMON_INPUTS + tuple(k for name in losses for k in LOSS_INPUTS.get(name, ()))
    passes = [tuple(n for n in names if n in inputs) for names in TEXT_PASSES]
    return [names for names in passes if names]


def kept_lengths(batch: Mapping[str, Tensor], losses: Sequence[str]) -> dict[str, int]:
    """Per caption, question and answer input of ``losses``, the positions its pass must keep for exact results.

    The text tower is causal (method §3), so positions up to the last EOT (largest id) do not depend on the
    padding after it; SG-IHA reads questions up to their last attended position (padded keys are masked
    and only position 0 is read out, method §6.3). MLM inputs keep every position (FULL_LENGTH_INPUTS).
    One host synchronisation: the lengths are shapes.
    """
    names = [n for names in text_passes(losses) for n in names if n not in FULL_LENGTH_INPUTS]
    ends = [batch[name].argmax(dim=1) for name in names]  # EOT: the largest id (method §3)
    if "question_ids" in names:
        mask = batch["question_mask"].bool()
        positions = torch.arange(mask.shape[1], device=mask.device)
        at = names.index("question_ids")
        ends[at] = torch.maximum(ends[at], (positions * mask).amax(dim=1))
    return dict(zip(names, (torch.stack([end.max() for end in ends]) + 1).tolist()))


def mlm_rows(captions: int, text_length: int, sigmas: float, prob: float) -> int:
    """The rows the fixed-shape MLM head gets for a batch of ``captions``: the masked positions' count if every
    caption filled text_length (method §4: SOT and EOT are never masked), mean plus ``sigmas`` standard deviations
    of that binomial, at most every real position. A batch with more masked positions flags an overflow."""
    real = captions * (text_length - SPECIAL_TOKENS)
    return min(real, math.ceil(real * prob + sigmas * math.sqrt(real * prob * (1 - prob))))


def masked_rows(x: Tensor, labels: Tensor, rows: int) -> tuple[Tensor, Tensor]:
    """The first ``rows`` positions of ``x`` [B, L, D] in row-major order of those with a label (``labels`` != 0)
    first, then unlabelled ones (label 0: no loss), and their labels: boolean indexing without its data-dependent
    shape. Exact while the labelled positions are at most ``rows``."""
    order = torch.sort((labels == 0).flatten().to(torch.uint8), stable=True).indices[:rows]
    return x.flatten(0, 1)[order], labels.flatten()[order]


class TrainingModel(nn.Module):
    """CLIP backbone plus the heads of the configured losses; ``forward`` returns weighted losses and accuracies.

    Top-level module names are fixed (the optimizer groups match them): ``backbone``, ``classifier``,
    ``cross_attn``, ``cross_modal_transformer``, ``ln_pre_t``, ``ln_pre_i``, ``ln_post``, ``mlm_head``, ``sgiha``.
    Only the modules of the configured losses are built. With ``world_size`` > 1 (data parallelism) every
    loss covers the global batch (model/shard.py). With ``fixed_shapes`` every step has the same shapes and no
    host synchronisation (text passes at text_length, ``mlm_rows`` MLM rows): one graph for torch.compile and
    CUDA graphs; the output then also holds ``MLM_OVERFLOW``, 1 for a batch with more masked positions.
    """

    def __init__(self, cfg, num_classes: int, world_size: int = 1, rank: int = 0):
        super().__init__()
        self.world_size, self.rank = world_size, rank
        self.losses = cfg.losses
        self.fixed_shapes = cfg.fixed_shapes
        self.loss_weights = {name: float(cfg.loss_weights[name]) for name in self.losses}
        self.logit_scale = 1.0 / cfg.temperature  # method §5: fixed, not learned
        self.backbone = CLIP.from_config(cfg)
        # CLIP's learned scale is unused here: frozen, so it never counts as an unused trainable (e.g. for DDP).
        self.backbone.logit_scale.requires_grad_(False)
        embed_dim = cfg.backbone.embed_dim
        if "id" in self.losses:
            self.classifier = nn.Linear(embed_dim, num_classes)
            nn.init.normal_(self.classifier.weight, std=cfg.id_init_std)
            nn.init.zeros_(self.classifier.bias)
        if "mlm" in self.losses:
            depth, heads = cfg.mlm.cmt_depth, cfg.mlm.heads
            self.cross_attn = build_cross_attn(embed_dim, heads, depth)
            self.cross_modal_transformer = build_cross_modal_transformer(embed_dim, depth, heads)
            self.ln_pre_t = nn.LayerNorm(embed_dim)
            self.ln_pre_i = nn.LayerNorm(embed_dim)
            self.ln_post = nn.LayerNorm(embed_dim)
            self.mlm_head = MLMHead(embed_dim, cfg.backbone.vocab_size, depth)
            self.mlm_prob, self.mlm_sigmas = cfg.mlm.prob, cfg.mlm.fixed_sigmas
        if "aqa" in self.losses:
            self.sgiha = SGIHAHead(cfg)
            self.detach_hidden = cfg.sgiha.detach_hidden
            self.aqa_temperature = cfg.sgiha.temperature

    def _check_batch(self, batch: Mapping[str, Tensor]) -> None:
        """Clear errors for a batch that lacks what the configured losses read."""
        for name in self.losses:
            missing = [k for k in COMMON_INPUTS + LOSS_INPUTS.get(name, ()) if k not in batch]
            if missing:
                raise KeyError(f"loss '{name}' needs batch entries {missing}; the batch has {sorted(batch)}")
        lengths = {k: batch[k].shape[1] for names in text_passes(self.losses) for k in names}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"token sequences must share one length (text_length); got {lengths}")

    def forward(self, batch: Mapping[str, Tensor], lengths: Mapping[str, int] | None = None) -> dict[str, Tensor]:
        """Weighted losses and accuracies of ``batch``.

        ``lengths``: the positions each text pass keeps, when known ahead (the planner's fake batches hold no ids);
        by default ``kept_lengths`` of the batch, or every position with ``fixed_shapes``.
        """
        self._check_batch(batch)
        if lengths is None:  # before the image pass: the one host sync of kept_lengths then waits for nothing
            lengths = {} if self.fixed_shapes else kept_lengths(batch, self.losses)
        taps = self.sgiha.layers if "aqa" in self.losses else ()
        image = self.backbone.image_features(batch["images"], taps)  # the step's only image pass
        texts = self._encode_texts(batch, lengths, taps)
        caption = texts["caption_ids"].global_feat
        pids = batch["pids"]
        shard = BatchShard.of(pids.shape[0], pids.device, self.world_size, self.rank)
        out: dict[str, Tensor] = {}
        if "sdm" in self.losses:
            out["sdm_loss"] = compute_sdm(image.global_feat, caption, pids, self.logit_scale, shard=shard)
        if "id" in self.losses:
            image_logits, text_logits = self.classifier(image.global_feat), self.classifier(caption)
            out["id_loss"] = compute_id(image_logits, text_logits, pids, shard)
            out["img_acc"], out["txt_acc"] = _accuracy(image_logits, pids, shard), _accuracy(text_logits, pids, shard)
        if "mlm" in self.losses:
            out.update(self._mlm(texts["mlm_ids"].tokens, image.tokens, batch["mlm_labels"], shard))
        if "aqa" in self.losses:
            question_mask = batch["question_mask"][:, :texts["question_ids"].tokens.shape[1]]
            out["aqa_loss"], out["aqa_acc"] = self._aqa(image, texts["question_ids"].hidden,
                                                        texts["answer_ids"].global_feat, question_mask, shard)
        for name in self.losses:
            out[f"{name}_loss"] = out[f"{name}_loss"] * self.loss_weights[name]
        return out

    def _encode_texts(self, batch: Mapping[str, Tensor], lengths: Mapping[str, int],
                      taps: Sequence[int]) -> dict[str, EncoderOutput]:
        """Text-tower passes over the kept prefixes (inputs without a kept length: every position)."""
        texts: dict[str, EncoderOutput] = {}
        for names in text_passes(self.losses):
            length = max(lengths.get(n, batch[n].shape[1]) for n in names)
            ids = torch.cat([batch[n][:, :length] for n in names])
            output = self.backbone.text_features(ids, taps if "question_ids" in names else ())
            texts.update(zip(names, _split(output, [batch[n].shape[0] for n in names])))
        return texts

    def _mlm(self, text_tokens: Tensor, image_tokens: Tensor, labels: Tensor, shard: BatchShard) -> dict[str, Tensor]:
        """IRRA's masked-token prediction (method §5): loss and accuracy; the vocabulary head sees only the masked
        positions, and with ``fixed_shapes`` a fixed number of rows (``mlm_rows``) plus the overflow flag."""
        x = cross_former(self.cross_attn, self.cross_modal_transformer, self.ln_pre_t(text_tokens),
                         self.ln_pre_i(image_tokens))
        if not self.fixed_shapes:
            masked = labels != 0
            scores = self.mlm_head(self.ln_post(x[masked]))
            targets = labels[masked]
            positions = shard.count(targets.numel(), targets.device)  # the mean runs over the global batch's masks
            return {"mlm_loss": compute_mlm(scores, targets, shard, positions),
                    "mlm_acc": _accuracy(scores, targets, shard, positions)}
        rows, targets = masked_rows(x, labels, mlm_rows(labels.shape[0], labels.shape[1], self.mlm_sigmas,
                                                        self.mlm_prob))
        scores = self.mlm_head(self.ln_post(rows))
        local = (labels != 0).sum()
        positions = shard.total(local)
        correct = (scores.detach().argmax(dim=-1) == targets) & (targets != 0)  # padding rows are never correct
        return {"mlm_loss": compute_mlm(scores, targets, shard, positions),
                "mlm_acc": correct.sum() * (shard.world_size / positions),
                MLM_OVERFLOW: (local > targets.shape[0]).float()}

    def _aqa(self, image: EncoderOutput, question_hidden: dict[int, Tensor], answer: Tensor,
             question_mask: Tensor, shard: BatchShard) -> tuple[Tensor, Tensor]:
        """SG-IHA's attribute question answering loss (method §6.2-6.4) and answer->bridge batch accuracy."""
        visual_hidden = image.hidden
        if self.detach_hidden:  # method §6.2: the release's behaviour, no AQA gradient into the tapped layers
            visual_hidden = {k: v.detach() for k, v in visual_hidden.items()}
            question_hidden = {k: v.detach() for k, v in question_hidden.items()}
        bridge = self.sgiha(image.global_feat, visual_hidden, question_hidden, question_mask)
        scores = cosine_matrix(answer, shard.gather(bridge.detach()))
        targets = torch.arange(scores.shape[0], device=scores.device) + shard.offset
        return compute_aqa(answer, bridge, self.aqa_temperature, shard), _accuracy(scores, targets, shard)


def build_model(cfg, num_classes: int, world_size: int = 1, rank: int = 0) -> TrainingModel:
    """The training model of ``cfg.loss_names``, with pretrained weights (OpenAI's, or ``pretrain_path``'s) unless
    ``pretrain_choice`` is none."""
    if cfg.pretrain_choice == "none":
        if cfg.pretrain_path:
            logger.info("pretrain_choice none: random initial weights; pretrain_path %s is not read", cfg.pretrain_path)
        return TrainingModel(cfg, num_classes, world_size, rank)
    # Weights first: a missing file fails before the model is allocated.
    state = pretrained_state_dict(cfg.pretrain_choice, cfg.pretrain_path)
    model = TrainingModel(cfg, num_classes, world_size, rank)
    source = f"pretrain_path {cfg.pretrain_path}" if cfg.pretrain_path else f"pretrain_choice {cfg.pretrain_choice}"
    apply_state_dict(model.backbone, state, source, cfg.backbone.pretrain_grid)
    return model


def build_retrieval_model(cfg) -> CLIP:
    """The evaluation model (method §6.5): the backbone alone, randomly initialised, to receive trained weights."""
    return CLIP.from_config(cfg)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under any DistributedDataParallel / torch.compile wrappers, in either order."""
    while True:
        inner = next((model._modules[attr] for attr in WRAPPER_ATTRS if attr in model._modules), None)
        if inner is None:
            return model
        model = inner


def _strip_wrappers(key: str) -> str:
    """A state-dict key without the prefixes those wrappers add."""
    while key.startswith(WRAPPER_PREFIXES):
        key = key.split(".", 1)[1]
    return key


def retrieval_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The backbone's entries of a training model's state dict (``backbone.*``) or of an OpenAI-layout dict."""
    state = {_strip_wrappers(k): v for k, v in state_dict.items()}
    if any(k.startswith(BACKBONE_PREFIX) for k in state):
        state = {k[len(BACKBONE_PREFIX):]: v for k, v in state.items() if k.startswith(BACKBONE_PREFIX)}
    state = {k: v for k, v in state.items() if k not in ARCHIVE_EXTRAS}
    if "visual.conv1.weight" not in state:
        raise ValueError("expected a training model's state dict (keys 'backbone.visual...') or an OpenAI CLIP "
                         f"state dict (key 'visual.conv1.weight'); got keys like {list(state_dict)[:5]}")
    return state


def retrieval_model(cfg: Config, state_dict: Mapping[str, Tensor], device: torch.device,
                    source: str = "the checkpoint") -> CLIP:
    """The inference model (CLIP backbone only, method §6.5) with the backbone entries of ``state_dict``, in eval
    mode."""
    model = build_retrieval_model(cfg)
    try:
        model.load_state_dict(retrieval_state_dict(state_dict))
    except (RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{source} does not fit the backbone of this config (backbone.*, img_size, "
                              f"stride_size, text_length): {one_line(exc)}") from exc
    logger.info("inference model: %.2fM parameters", sum(p.numel() for p in model.parameters()) / 1e6)
    return model.to(device).eval()


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A training checkpoint (utils.checkpoint.load_checkpoint), with a log line naming its epoch."""
    state = load_checkpoint(path)
    logger.info("loaded %s (epoch %d)", path, state["epoch"])
    return state


def load_retrieval_model(cfg: Config, checkpoint: str | os.PathLike, device: torch.device) -> nn.Module:
    """The inference model with a training checkpoint's weights, in eval mode."""
    return retrieval_model(cfg, read_checkpoint(checkpoint)["model"], device, str(checkpoint))


def load_pretrained_model(cfg: Config, device: torch.device) -> CLIP:
    """The zero-shot model: the config's pretrained CLIP weights (pretrain_choice / pretrain_path, method §3) with the
    positional grid resized to img_size / stride_size, in eval mode."""
    if cfg.pretrain_choice == "none":  # random weights, as in training: a pretrain_path is not read
        raise ConfigError("pretrain_choice = 'none': there are no pretrained weights to evaluate; set pretrain_choice "
                          "(e.g. ViT-B/16, or file with pretrain_path)")
    model = build_retrieval_model(cfg)
    load_pretrained(model, cfg.pretrain_choice, cfg.pretrain_path, cfg.backbone.pretrain_grid)
    logger.info("zero-shot model: %s", cfg.pretrain_path or f"OpenAI {cfg.pretrain_choice}")
    return model.to(device).eval()
