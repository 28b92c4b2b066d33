"""solver: method §7's parameter groups and the per-epoch learning-rate schedule, checked against formulas
written out here independently of solver/build.py."""
import math

import pytest
import torch
from torch import nn

from solver import build_lr_scheduler, build_optimizer
from solver.build import continue_schedule
from utils.config import load_config

BASE_LR, WD, EPOCHS = 1e-5, 4e-5, 60


class TinyTrainingModel(nn.Module):
    """Carries the module names of the training model (method §7 groups), with tiny layers."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3))
        self.backbone[0].bias.requires_grad_(False)
        self.cross_attn = nn.MultiheadAttention(4, 2)
        self.cross_modal_transformer = nn.Linear(4, 4)
        self.ln_pre_t, self.ln_pre_i, self.ln_post = nn.LayerNorm(4), nn.LayerNorm(4), nn.LayerNorm(4)
        self.classifier = nn.Linear(4, 5)
        self.mlm_head = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 7))
        self.sgiha = nn.ModuleList([nn.Linear(4, 4, bias=False), nn.LayerNorm(4)])
        self.sgiha_like = nn.Linear(2, 2)  # 'sgiha' as a substring only: must stay at the base lr


def expected_lr_and_decay(name: str) -> tuple[float, float]:
    """method §7 by hand: 5x for new modules, bias 2x and no decay (a new module's bias: 5x, no decay)."""
    new = name.split(".")[0] in ("cross_attn", "cross_modal_transformer", "classifier", "mlm_head", "sgiha")
    is_bias = name.endswith("bias")
    head_or_sgiha = name.split(".")[0] in ("classifier", "mlm_head", "sgiha")
    if is_bias:
        return (5 * BASE_LR if head_or_sgiha else 2 * BASE_LR), 0.0
    return (5 * BASE_LR if new else BASE_LR), WD


def spec_lr(base: float, epoch: int) -> float:
    """method §7 written out: k = epoch - 1; warm-up 0.1 -> 1 over 5 epochs, then cosine to 0 at epoch 60's end."""
    k = epoch - 1
    if k < 5:
        return base * (0.1 * (1 - k / 5) + k / 5)
    return base * 0.5 * (1 + math.cos(math.pi * (k - 5) / (60 - 5)))


def lrs_by_param(optimizer) -> dict[int, tuple[float, float]]:
    return {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}


def run_epochs(optimizer, scheduler, epochs) -> list[list[float]]:
    """The trainer's use: train epoch e at the current lr, step the scheduler after it."""
    seen = []
    for _ in epochs:
        seen.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return seen


def test_every_parameter_gets_spec_lr_and_weight_decay():
    model = TinyTrainingModel()
    optimizer = build_optimizer(load_config(None), model)
    assert isinstance(optimizer, torch.optim.Adam)
    by_param = lrs_by_param(optimizer)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert len(by_param) == len(trainable)  # frozen parameters left out, nothing counted twice
    assert id(model.backbone[0].bias) not in by_param
    for name, param in trainable:
        lr, wd = by_param[id(param)]
        exp_lr, exp_wd = expected_lr_and_decay(name)
        assert lr == pytest.approx(exp_lr, rel=1e-12), name
        assert wd == exp_wd, name
    for name in ("ln_pre_t.weight", "ln_pre_i.weight", "ln_post.weight", "sgiha_like.weight"):
        assert by_param[id(model.get_parameter(name))] == (pytest.approx(BASE_LR), WD), name


def test_groups_merge_equal_settings_and_are_named():
    optimizer = build_optimizer(load_config(None), TinyTrainingModel())
    keys = [(g["lr"], g["weight_decay"]) for g in optimizer.param_groups]
    assert len(keys) == len(set(keys)) == 4  # base, bias 2x, new 5x, new-module bias 5x without decay
    names = [g["name"] for g in optimizer.param_groups]
    assert all(isinstance(n, str) and n for n in names) and len(set(names)) == len(names)
    assert optimizer.defaults["eps"] == 1e-3 and optimizer.defaults["betas"] == (0.9, 0.999)


@pytest.mark.parametrize("name, cls", [("AdamW", torch.optim.AdamW), ("SGD", torch.optim.SGD)])
def test_other_optimizers(name, cls):
    optimizer = build_optimizer(load_config(None, {"optimizer": name}), TinyTrainingModel())
    assert isinstance(optimizer, cls)
    if name == "SGD":
        assert optimizer.defaults["momentum"] == 0.9


def test_no_trainable_parameter_is_an_error():
    model = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="requires_grad"):
        build_optimizer(load_config(None), model)


def test_cosine_schedule_every_group_every_epoch():
    cfg = load_config(None)
    optimizer = build_optimizer(cfg, TinyTrainingModel())
    scheduler = build_lr_scheduler(cfg, optimizer)
    bases = [g["initial_lr"] for g in optimizer.param_groups]
    seen = run_epochs(optimizer, scheduler, range(1, EPOCHS + 1))
    for epoch, lrs in enumerate(seen, start=1):
        for base, lr in zip(bases, lrs):
            assert lr == pytest.approx(spec_lr(base, epoch), rel=1e-9, abs=1e-18), (epoch, base)
    assert seen[0][0] == pytest.approx(0.1 * bases[0]) and seen[5][0] == pytest.approx(bases[0])


def test_cosine_reaches_target_lr():
    cfg = load_config(None, {"target_lr": 1e-7, "num_epoch": 10, "warmup_epochs": 0})
    optimizer = build_optimizer(cfg, TinyTrainingModel())
    scheduler = build_lr_scheduler(cfg, optimizer)
    bases = [g["initial_lr"] for g in optimizer.param_groups]
    run_epochs(optimizer, scheduler, range(10))  # after epoch 10: k = num_epoch, the cosine's end
    for base, group in zip(bases, optimizer.param_groups):
        assert group["lr"] == pytest.approx(1e-7)
        assert base != pytest.approx(1e-7)


def test_step_schedule_after_warmup():
    cfg = load_config(None, {"lrscheduler": "step", "milestones": [20, 50], "gamma": 0.1})
    optimizer = build_optimizer(cfg, TinyTrainingModel())
    scheduler = build_lr_scheduler(cfg, optimizer)
    bases = [g["initial_lr"] for g in optimizer.param_groups]
    for epoch, lrs in enumerate(run_epochs(optimizer, scheduler, range(1, EPOCHS + 1)), start=1):
        k = epoch - 1
        warm = 0.1 * (1 - k / 5) + k / 5 if k < 5 else 1.0
        decay = 1.0 if k < 20 else (0.1 if k < 50 else 0.01)
        for base, lr in zip(bases, lrs):
            assert lr == pytest.approx(base * warm * decay, rel=1e-9), epoch


@pytest.mark.parametrize("finished", [2, 7])  # in the warm-up; in the cosine
def test_resume_mid_schedule_continues_identically(finished):
    cfg = load_config(None)
    model = TinyTrainingModel()
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    run_epochs(optimizer, scheduler, range(finished))
    saved = optimizer.state_dict()
    expected = run_epochs(optimizer, scheduler, range(finished, EPOCHS))
    for group in saved["param_groups"]:  # what a checkpoint's lrs may be: a warm-up's, another config's
        group["lr"], group["initial_lr"] = 123.0, 456.0

    fresh_opt, fresh_sched = _fresh(cfg, model)
    fresh_opt.load_state_dict(saved)
    continue_schedule(fresh_sched, finished)
    assert run_epochs(fresh_opt, fresh_sched, range(finished, EPOCHS)) == expected
    assert expected[0][0] == pytest.approx(spec_lr(BASE_LR, finished + 1))  # group 0: backbone.0.weight's


def _fresh(cfg, model):
    optimizer = build_optimizer(cfg, model)
    return optimizer, build_lr_scheduler(cfg, optimizer)


def test_schedule_no_longer_than_its_warmup_is_the_warmup():
    cfg = load_config(None, {"num_epoch": 2, "warmup_epochs": 5})  # the release accepts this (a smoke run)
    optimizer, scheduler = _fresh(cfg, TinyTrainingModel())
    bases = [g["initial_lr"] for g in optimizer.param_groups]
    seen = run_epochs(optimizer, scheduler, range(2))
    for k, row in enumerate(seen):  # method §7's linear warm-up: 0.1 x (1 - k/5) + k/5
        assert row == pytest.approx([b * (0.1 * (1 - k / 5) + k / 5) for b in bases])


def test_milestones_must_increase():
    with pytest.raises(ValueError, match="milestones"):
        load_config(None, {"lrscheduler": "step", "milestones": [50, 20]})
