"""processor/plan.py and tools/plan_run.py: FLOPs and peak memory of a fake step against real steps (issue 17)."""
import itertools
import json
import shlex
import subprocess
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench import plan_table
from bench.bench_train import TINY_NUM_CLASSES, bench_config, build_and_step, synthetic_batch, train_step
from bench.memory import cpu_allocation_peak
from datasets.bases import DatasetError, dataset_files
from datasets.reader import read_benchmark
from model.build import build_model, mlm_rows
from processor import plan
from tests.cli_checks import REPO, assert_one_error_line
from tools import plan_run
from utils.config import CONFIG_DIR, load_config
from utils.doc_blocks import block_names, read_block
from utils.tokenizer import get_tokenizer

IRRA_SGIHA = str(CONFIG_DIR / "CUHK-PEDES" / "irra_sgiha.yaml")
# The bench's tiny backbone as command-line overrides.
TINY_CLI = ["--img_size", "[32, 16]", "--backbone.embed_dim", "32", "--backbone.vision_width", "32",
            "--backbone.text_width", "32", "--backbone.vision_layers", "3", "--backbone.text_layers", "3",
            "--backbone.vision_heads", "2", "--backbone.text_heads", "2", "--mlm.heads", "2", "--mlm.cmt_depth", "1",
            "--sgiha.heads", "2", "--sgiha.layers", "[1, 2]", "--batch_size", "4", "--root_dir", "no_such_folder"]
PEAK_TOLERANCE = 0.15  # issue 17: predicted CPU peak within 15% of the measured one
FP32_BYTES = 4


def tiny_cfg(recipe: str = "irra_sgiha", batch_size: int = 4):
    return bench_config(recipe, batch_size, "none", False, tiny=True)


def batches(cfg, count: int) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [synthetic_batch(cfg, TINY_NUM_CLASSES, generator) for _ in range(count)]


@pytest.mark.parametrize(("recipe", "fixed"), [("irra_sgiha", True), ("irra_sgiha", False), ("clip_finetune", True)])
def test_flops_equal_torchs_count_of_a_real_step(recipe, fixed):
    cfg = tiny_cfg(recipe)
    cfg.fixed_shapes = fixed
    (batch,) = batches(cfg, 1)
    torch.manual_seed(0)
    model = build_model(cfg, TINY_NUM_CLASSES).train()
    optimizer = torch.optim.Adam(model.parameters())
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    with FlopCounterMode(display=False) as counter:
        train_step(model, batch, optimizer, scaler, torch.device("cpu"), "none")
    planned = plan.plan_step(cfg, TINY_NUM_CLASSES, plan.batch_shapes(cfg, batch), "none")
    assert planned.flops == counter.get_total_flops() > 0


def test_fixed_shapes_plan_the_padded_step_and_report_what_padding_adds():
    cfg = tiny_cfg()  # text_length 77: longer than the assumed captions (at most 62 positions)
    cfg.fixed_shapes = True
    report = plan.plan_run(cfg, "cpu", [])
    shapes = report["text_shapes"]
    assert shapes["caption_length"] == shapes["answer_length"] == cfg.text_length == 77
    assert shapes["mlm_masked"] == mlm_rows(4, 77, cfg.mlm.fixed_sigmas, cfg.mlm.prob)
    cfg.fixed_shapes = False
    kept = plan.plan_run(cfg, "cpu", [])
    assert kept["text_shapes"]["caption_length"] < 77
    # Either mode reports what fixed shapes add over the kept lengths: the difference of the two plans' steps.
    assert report["padding_flops_per_step"] == kept["padding_flops_per_step"]
    assert report["padding_flops_per_step"] == report["flops_per_step"] - kept["flops_per_step"] > 0


def test_planned_peak_is_within_tolerance_of_a_measured_cpu_step():
    cfg = tiny_cfg(batch_size=8)
    first, second = batches(cfg, 2)
    queue = [first, second]
    torch.manual_seed(0)
    with cpu_allocation_peak() as measured:
        build_and_step(cfg, TINY_NUM_CLASSES, torch.device("cpu"), "none", 2, lambda: queue.pop(0))
    planned = plan.plan_step(cfg, TINY_NUM_CLASSES, plan.batch_shapes(cfg, second), "none")
    assert abs(planned.peak_bytes / measured["peak_bytes"] - 1) <= PEAK_TOLERANCE, (planned, measured)


def test_breakdown_counts_weights_and_adam_state_by_hand():
    cfg = tiny_cfg()
    (batch,) = batches(cfg, 1)
    model = build_model(cfg, TINY_NUM_CLASSES)
    weights = sum(p.numel() for p in model.parameters()) * FP32_BYTES
    trainable = [p for p in model.parameters() if p.requires_grad]
    planned = plan.plan_step(cfg, TINY_NUM_CLASSES, plan.batch_shapes(cfg, batch), "none")
    assert planned.breakdown["weights"] == weights
    # Adam: exp_avg and exp_avg_sq per trainable parameter, plus one fp32 step counter each.
    moments = 2 * sum(p.numel() for p in trainable) * FP32_BYTES
    assert moments <= planned.breakdown["optimizer_state"] <= moments + len(trainable) * FP32_BYTES
    assert 0 < planned.breakdown["gradients"] <= sum(p.numel() for p in trainable) * FP32_BYTES
    assert planned.breakdown["batch"] == sum(v.numel() * v.element_size() for v in batch.values())
    assert sum(planned.breakdown.values()) == planned.peak_bytes


@pytest.mark.slow
def test_memory_is_affine_in_the_batch_and_the_largest_batch_is_solved_from_two_plans():
    cfg = tiny_cfg()
    plans = [plan.plan_step(cfg, TINY_NUM_CLASSES, plan.worst_case_shapes(cfg, b), "none", batch_size=b)
             for b in (4, 8, 12)]
    slope, intercept = plan.affine_fit(plans[0], plans[2])
    assert abs(slope * 8 + intercept - plans[1].peak_bytes) <= 0.02 * plans[1].peak_bytes
    assert plan.largest_batch(10.0, 100.0, 205.0) == 10  # (205 - 100) / 10 = 10.5 samples
    assert plan.largest_batch(10.0, 100.0, 99.0) == 0


@pytest.mark.slow
def test_checkpointing_lowers_the_planned_activations():
    cfg = tiny_cfg(batch_size=16)
    shapes = plan.worst_case_shapes(cfg, 16)
    plain = plan.plan_step(cfg, TINY_NUM_CLASSES, shapes, "none", grad_checkpoint=False)
    checkpointed = plan.plan_step(cfg, TINY_NUM_CLASSES, shapes, "none", grad_checkpoint=True)
    assert checkpointed.peak_bytes < plain.peak_bytes
    assert checkpointed.flops > plain.flops  # the recomputed forward


@pytest.mark.slow
def test_full_vit_b16_plans_under_fake_tensors_without_allocating():
    cfg = bench_config("irra_sgiha", 64, "bf16", False, tiny=False)
    with torch.device("meta"):
        params = sum(p.numel() for p in build_model(cfg, 11_003).parameters())
    with cpu_allocation_peak() as allocated:
        planned = plan.plan_step(cfg, 11_003, plan.worst_case_shapes(cfg, 64), "bf16")
    assert planned.breakdown["weights"] == params * FP32_BYTES
    assert planned.peak_bytes > 3 * params * FP32_BYTES  # weights, Adam moments and some gradients
    # At this size the peak ends the forward: no gradient is made yet, nothing of backward's exists.
    assert planned.peak_phase == "forward"
    assert planned.breakdown["gradients"] == planned.breakdown["temporaries"] == 0
    assert set(plan.zero_at_peak(planned.breakdown, planned.peak_phase)) == {"gradients", "temporaries"}
    assert allocated["peak_bytes"] < 0.01 * planned.peak_bytes  # fake tensors: no real storage


@pytest.mark.slow
def test_json_plan_has_the_documented_schema(capsys):
    report = plan_run.main(["--config_file", IRRA_SGIHA, *TINY_CLI, "--gpu", "A100-40GB", "V100-16GB", "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(report))
    assert set(printed["breakdown"]) == set(plan.KINDS)
    assert sum(printed["breakdown"].values()) == printed["peak_memory_bytes"]
    assert printed["flops_per_epoch"] == printed["flops_per_step"] * printed["steps_per_epoch"]
    a100 = printed["gpus"]["A100-40GB"]
    for key in ("fits", "max_batch_size", "max_batch_size_checkpointed", "epoch_seconds_lower_bound",
                "epoch_seconds_estimate", "run_seconds_lower_bound"):
        assert key in a100
    assert a100["fits"] and a100["max_batch_size_checkpointed"] >= a100["max_batch_size"] > 4
    assert a100["epoch_seconds_lower_bound"] == pytest.approx(printed["flops_per_epoch"] / 312e12)
    assert printed["gpu_amp"] == "fp16" and printed["gpus"]["V100-16GB"]["epoch_seconds_lower_bound"] is not None


@pytest.mark.slow
def test_bf16_on_a_gpu_without_bf16_has_no_time():
    report = plan_run.main(["--config_file", IRRA_SGIHA, *TINY_CLI, "--amp", "bf16", "--gpu", "V100-32GB",
                            "--device", "cpu", "--json"])
    assert report["amp"] == "bf16" and report["gpus"]["V100-32GB"]["epoch_seconds_lower_bound"] is None


@pytest.mark.slow
def test_memory_warning_names_the_fix():
    cfg = tiny_cfg(batch_size=16)
    shapes = plan.worst_case_shapes(cfg, 16)
    plain = plan.plan_step(cfg, TINY_NUM_CLASSES, shapes, "none", grad_checkpoint=False).peak_bytes
    checkpointed = plan.plan_step(cfg, TINY_NUM_CLASSES, shapes, "none", grad_checkpoint=True).peak_bytes
    assert plan.memory_warning(cfg, TINY_NUM_CLASSES, "none", 1, plain) is None
    line = plan.memory_warning(cfg, TINY_NUM_CLASSES, "none", 1, (plain + checkpointed) // 2)
    assert "set grad_checkpoint: true (planned" in line and "\n" not in line
    smaller = plan.memory_warning(cfg, TINY_NUM_CLASSES, "none", 1, checkpointed - 1)
    batch = int(smaller.split("batch_size ")[1].split()[0])
    assert 0 < batch < 16
    fitted = plan.plan_step(cfg, TINY_NUM_CLASSES, plan.worst_case_shapes(cfg, batch), "none", batch_size=batch,
                            grad_checkpoint=True)
    assert fitted.peak_bytes <= checkpointed - 1


@pytest.mark.parametrize("extra, names", [
    (["--gpu", "H100-80GB", "B200"], ["B200", "unknown GPU", "H100-80GB"]),
    (["--dataset_name", "custom"], ["custom", "root_dir"]),
    (["--write_docs", str(REPO / "bench" / "README.md")], ["bench/README.md", "<!-- plan_run:gpu_table begin -->"]),
])
def test_wrong_commands_end_in_one_error_line(extra, names):
    command = [sys.executable, str(REPO / "tools" / "plan_run.py"), "--config_file", IRRA_SGIHA, *TINY_CLI, *extra]
    assert_one_error_line(subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=False), names)


def test_expected_batch_max_matches_enumeration():
    lengths, batch = [3, 5, 5, 9], 3
    draws = list(itertools.product(lengths, repeat=batch))
    assert plan.expected_batch_max(lengths, batch) == pytest.approx(sum(max(d) for d in draws) / len(draws))


@pytest.mark.slow
def test_text_lengths_and_epoch_come_from_the_dataset_when_present(toy_root):
    report = plan_run.main(["--config_file", IRRA_SGIHA, *TINY_CLI, "--root_dir", str(toy_root), "--gpu",
                            "H100-80GB", "--fixed_shapes", "false", "--json"])  # the kept lengths of the dataset
    data = read_benchmark("CUHK-PEDES", toy_root, verify_images=False)
    tokenizer = get_tokenizer()
    longest = max(min(tokenizer.sequence_length(s.caption), 77) for s in data.train)
    assert "training captions" in report["text_shapes"]["source"]
    assert report["train_captions"] == len(data.train) and report["num_classes"] == data.num_classes
    assert report["steps_per_epoch"] == -(-len(data.train) // 4)
    assert report["text_shapes"]["caption_length"] <= longest


@pytest.mark.slow
def test_a_plan_does_not_depend_on_what_ran_before():
    """Storages held in reference cycles (activation checkpointing makes some) are freed whenever Python's cycle
    collector runs; the planned peak must not depend on when that is (issue 20: measurements by history)."""
    cfg = tiny_cfg(batch_size=16)
    shapes = plan.worst_case_shapes(cfg, 16)
    peaks = [plan.plan_step(cfg, TINY_NUM_CLASSES, shapes, "none", grad_checkpoint=True).peak_bytes
             for _ in range(3)]
    assert peaks[0] == peaks[1] == peaks[2]


def test_each_kind_empty_at_the_peak_is_explained_by_the_peak_phase():
    breakdown = dict.fromkeys(plan.KINDS, 1) | {"gradients": 0, "temporaries": 0}
    forward = plan.zero_at_peak(breakdown, "forward")
    assert list(forward) == ["gradients", "temporaries"]
    assert "backward has not made" in forward["gradients"] and "set_to_none=True" in forward["gradients"]
    after = plan.zero_at_peak(dict.fromkeys(plan.KINDS, 1) | {"activations": 0}, "optimizer step")
    assert after == {"activations": plan.ZERO_REASONS[("activations", "optimizer step")]}
    # a pair without a reason of its own gets the plain fact, naming the phase
    assert plan.zero_at_peak(dict.fromkeys(plan.KINDS, 1) | {"batch": 0}, "backward") == {
        "batch": "none alive at the peak, in the backward"}
    assert plan.zero_at_peak(dict.fromkeys(plan.KINDS, 1), "forward") == {}


def test_sgd_without_momentum_plans_no_optimizer_state_and_says_why():
    cfg = tiny_cfg()
    cfg.optimizer, cfg.momentum = "SGD", 0.0
    planned = plan.plan_step(cfg, TINY_NUM_CLASSES, plan.worst_case_shapes(cfg, 4), "none")
    assert planned.peak_phase in plan.PHASES and planned.breakdown["optimizer_state"] == 0
    assert "keeps no state" in plan.zero_at_peak(planned.breakdown, planned.peak_phase)["optimizer_state"]
    assert planned.breakdown["gradients"] > 0  # the tiny model's peak lies in backward, after gradients exist


def test_repeated_gpu_flags_keep_every_gpu_once_in_order():
    args, _ = plan_run.parse_args(["--config_file", IRRA_SGIHA, "--gpu", "A100-40GB", "V100-16GB",
                                   "--gpu", "A100-80GB", "--gpu", "A100-40GB"])
    assert args.gpu == ["A100-40GB", "V100-16GB", "A100-80GB"]
    args, _ = plan_run.parse_args(["--config_file", IRRA_SGIHA])
    assert args.gpu == list(plan_run.GPU_SPECS)


@pytest.mark.slow
@pytest.mark.parametrize("stop, runs", [("7", 7), ("null", 10), ("12", 10)])
def test_run_time_counts_the_epochs_the_config_runs(stop: str, runs: int):
    report = plan_run.main(["--config_file", IRRA_SGIHA, *TINY_CLI, "--num_epoch", "10", "--early_stop_epoch",
                            stop, "--gpu", "A100-40GB", "--json"])
    a100 = report["gpus"]["A100-40GB"]
    assert report["epochs"] == runs
    assert a100["run_seconds_lower_bound"] == pytest.approx(runs * a100["epoch_seconds_lower_bound"])
    assert a100["run_seconds_estimate"] == pytest.approx(runs * a100["epoch_seconds_estimate"])


DOCS = REPO / "docs" / "benchmarks.md"


def skip_when_the_dataset_is_here(cfg) -> None:
    """The docs plan with the assumed captions: a machine that holds the dataset plans other text lengths."""
    try:
        dataset_files(cfg.dataset_name, cfg.root_dir, cfg.annotation_file)
    except DatasetError:
        return
    pytest.skip(f"{cfg.dataset_name} is under {cfg.root_dir}: the docs plan with the assumed captions")


@pytest.mark.slow
@pytest.mark.parametrize("block", block_names(DOCS, plan_run.DOCS_BLOCK))
def test_docs_blocks_are_what_the_planner_prints(block: str, capsys):
    """docs/benchmarks.md's planner blocks, regenerated by the command each names: equal, so they cannot drift."""
    args = plan_run.documented_command(DOCS, block)
    parsed, overrides = plan_run.parse_args(args)
    skip_when_the_dataset_is_here(load_config(parsed.config_file, overrides))
    report = plan_run.main(args)
    command = shlex.join(["python", "tools/plan_run.py", *args])
    assert plan_run.docs_block(report, command) == read_block(DOCS, block), (
        f"docs/benchmarks.md is stale: rerun {command} --write_docs docs/benchmarks.md --docs_block {block}")
    assert plan_run.format_report(report).split("\n")[0] in capsys.readouterr().out


@pytest.mark.slow
def test_docs_gpu_table_predictions_are_what_the_planner_gives():
    """The predicted columns of docs/benchmarks.md's GPU table (bench/plan_table.py --write_docs): the IRRA + SG-IHA
    rows regenerated (six plans; the other recipes are written by the same code) and found in the block."""
    skip_when_the_dataset_is_here(bench_config("irra_sgiha", 64, "none", False, tiny=False))
    lines = read_block(DOCS, plan_table.DOCS_BLOCK).splitlines()
    assert lines[0] == "| " + " | ".join(plan_table.HEADER) + " |"
    for row in plan_table.table_rows(["irra_sgiha"]):
        assert "| " + " | ".join(row) + " |" in lines, ("docs/benchmarks.md is stale: rerun python "
                                                         "bench/plan_table.py --write_docs docs/benchmarks.md", row)
