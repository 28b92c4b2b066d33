"""Data parallelism on CPU (gloo): N processes train exactly the 1-process recipe on the same global batch.

- the gathered losses give every process the gradient of the single-process loss (float64, uneven shares);
- 2 processes and 1 process train the tiny model step for step to the same weights, losses and metrics
  (all four losses, augmentation on, random and identity samplers, a partial last batch);
- the torchrun command line ends with the 1-process run's last.pth;
- ranks keep the same schedule and weights on disjoint shares of the data, one run folder is written and
  each evaluation happens once.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import train as train_script
from model.objectives import compute_aqa, compute_id, compute_mlm, compute_sdm
from model.shard import BatchShard
from tests.tiny_run import benchmark_settings, make_tiny_toy, tiny_args
from utils.checkpoint import load_checkpoint
from utils.config import CONFIG_DIR

pytestmark = pytest.mark.slow  # processes started per test (see pytest.ini)

# float32 summation order aside, the weights of N processes and of one are the same: the batches are bit-identical
# (tests/test_datasets_loaders.py) and the gathered losses give the single-process gradients to 1e-12 in float64
# (test above). Measured on the test below (issue 32, torch 2.14.1 CPU): 2.5e-8 after step 1 growing evenly to
# 6.1e-8 at step 16 (identity sampler) and 3.6e-8 at step 8 (random), largest in the SG-IHA blocks' weights; no
# step amplifies it. The 1.0e-5 measured earlier no longer occurs.
REL_TOL = 1e-5
LOGGED_REL_TOL = 1e-4  # logged epoch means: a loss amplifies the weights' noise (AQA 3.6e-5 measured)
# method §7's Adam epsilon. The demo's 1e-8 turns float32 noise into whole steps for the parameters whose true
# gradient is zero (attention key biases: softmax ignores them), as it does between any two summation orders.
SPEC_EPS = ["--adam_eps", "1e-3"]
TOY_SAMPLES = 16 * 2 * 2  # make_tiny_toy: 16 training ids x 2 images x 2 captions


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join_group(rank: int, world_size: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world_size), RANK=str(rank),
                      LOCAL_RANK=str(rank))


def _flat_weights(optimizer) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for g in optimizer.param_groups for p in g["params"]])


def _record_steps(snapshots: list[torch.Tensor]):
    """Patch the trainer's backward_step to keep the weights after every step."""
    import processor.trainer as trainer

    original = trainer.backward_step

    def step(loss, optimizer, scaler):
        original(loss, optimizer, scaler)
        snapshots.append(_flat_weights(optimizer))

    trainer.backward_step = step


def _relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# ---------------------------------------------------------------- gathered losses, float64


def _features() -> dict[str, torch.Tensor]:
    """A global batch of 5 (shares of 3 and 2 rows) with repeated identities, float64."""
    g = torch.Generator().manual_seed(0)
    return {"image": torch.randn(5, 6, generator=g, dtype=torch.float64),
            "text": torch.randn(5, 6, generator=g, dtype=torch.float64),
            "answer": torch.randn(5, 6, generator=g, dtype=torch.float64),
            "bridge": torch.randn(5, 6, generator=g, dtype=torch.float64),
            "image_logits": torch.randn(5, 4, generator=g, dtype=torch.float64),
            "text_logits": torch.randn(5, 4, generator=g, dtype=torch.float64),
            "mlm_scores": torch.randn(5, 3, 7, generator=g, dtype=torch.float64),
            "pids": torch.tensor([0, 2, 0, 1, 2]),
            "mlm_labels": torch.tensor([[0, 3, 0], [1, 0, 0], [0, 0, 0], [5, 6, 2], [0, 4, 0]])}


def _all_losses(f: dict[str, torch.Tensor], shard: BatchShard) -> torch.Tensor:
    return (compute_sdm(f["image"], f["text"], f["pids"], 50.0, shard=shard)
            + compute_id(f["image_logits"], f["text_logits"], f["pids"], shard)
            + compute_mlm(f["mlm_scores"], f["mlm_labels"], shard)
            + compute_aqa(f["answer"], f["bridge"], 0.04, shard))


def _gradient_worker(rank: int, world_size: int, port: int, out: str) -> None:
    _join_group(rank, world_size, port)
    dist.init_process_group("gloo")
    rows = [range(0, 3), range(3, 5)][rank]
    local = {k: v[rows].clone().requires_grad_(v.is_floating_point()) for k, v in _features().items()}
    shard = BatchShard.of(len(rows), torch.device("cpu"), world_size, rank)
    loss = _all_losses(local, shard)
    loss.backward()
    grads = {k: v.grad / world_size for k, v in local.items() if v.is_floating_point()}  # DDP averages over ranks
    torch.save({"loss": loss.detach(), "grads": grads}, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


def test_gathered_losses_give_the_single_process_gradients(tmp_path: Path):
    mp.spawn(_gradient_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    full = {k: v.clone().requires_grad_(v.is_floating_point()) for k, v in _features().items()}
    reference = _all_losses(full, BatchShard())  # the single-process losses on the concatenated batch
    reference.backward()
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    torch.testing.assert_close(sum(r["loss"] for r in results) / 2, reference.detach(), rtol=1e-12, atol=1e-12)
    for key, value in full.items():
        if value.is_floating_point():
            gathered = torch.cat([results[r]["grads"][key] for r in range(2)])
            torch.testing.assert_close(gathered, value.grad, rtol=1e-10, atol=1e-12, msg=key)


# ---------------------------------------------------------------- training, step for step


def _train_worker(rank: int, world_size: int, port: int, args: list[str], out: str) -> None:
    _join_group(rank, world_size, port)
    snapshots: list[torch.Tensor] = []
    _record_steps(snapshots)
    run_dir = train_script.main(args)
    torch.save({"steps": snapshots, "run_dir": str(run_dir)}, Path(out) / f"rank{rank}.pt")


def _train(tmp: Path, args: list[str], world_size: int) -> tuple[list[torch.Tensor], Path]:
    report = tmp / f"report{world_size}"
    report.mkdir()
    if world_size == 1:
        snapshots: list[torch.Tensor] = []
        _record_steps(snapshots)
        return snapshots, train_script.main(args)
    mp.spawn(_train_worker, args=(world_size, _free_port(), args, str(report)), nprocs=world_size, join=True)
    ranks = [torch.load(report / f"rank{r}.pt") for r in range(world_size)]
    for other in ranks[1:]:  # every process holds the same weights after every step
        assert all(torch.equal(a, b) for a, b in zip(ranks[0]["steps"], other["steps"]))
    return ranks[0]["steps"], Path(ranks[0]["run_dir"])


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _assert_rows_close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, dict):
            _assert_rows_close(value, b[key])
        else:
            assert value == pytest.approx(b[key], rel=LOGGED_REL_TOL, abs=1e-6), key


@pytest.mark.parametrize("sampler", ["random", "identity"])
def test_two_processes_train_exactly_as_one(tmp_path: Path, sampler: str):
    toy = make_tiny_toy(tmp_path / "toy")
    # global batch 20: three full batches and a partial one of 4 per epoch (random); augmentation on (demo config)
    extra = [*SPEC_EPS, *benchmark_settings(), "--loss_names", "sdm+id+mlm+aqa", "--img_aug", "true",
             "--sampler", sampler, "--num_instance", "2", "--batch_size", "20" if sampler == "random" else "8",
             "--test_batch_size", "10"]
    one_steps, one_dir = _train(tmp_path, tiny_args(toy, tmp_path / "one", *extra), 1)
    two_steps, two_dir = _train(tmp_path, tiny_args(toy, tmp_path / "two", *extra), 2)
    if sampler == "random":
        assert len(one_steps) == 2 * 4  # 2 epochs of 20 + 20 + 20 + 4
    assert len(one_steps) == len(two_steps) > 0
    for step, (a, b) in enumerate(zip(two_steps, one_steps), start=1):
        assert _relative_difference(a, b) < REL_TOL, f"step {step}"
    rows_one, rows_two = _metrics(one_dir), _metrics(two_dir)
    assert [r["epoch"] for r in rows_two] == [1, 2]
    for a, b in zip(rows_two, rows_one):  # logged losses, accuracies, lr and every metric
        _assert_rows_close(a, b)


def test_torchrun_command_line_matches_one_process(tmp_path: Path):
    toy = make_tiny_toy(tmp_path / "toy")
    args = [*SPEC_EPS, *benchmark_settings(), "--num_epoch", "1", "--batch_size", "16"]
    one = train_script.main(tiny_args(toy, tmp_path / "one", *args))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(CONFIG_DIR.parent / "train.py"), *tiny_args(toy, tmp_path / "two", *args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (two,) = list((tmp_path / "two" / "CUHK-PEDES").iterdir())
    a, b = load_checkpoint(two / "last.pth")["model"], load_checkpoint(one / "last.pth")["model"]
    assert a.keys() == b.keys()
    flat = [torch.cat([d[k].flatten().float() for k in sorted(a)]) for d in (a, b)]
    assert _relative_difference(*flat) < REL_TOL
    assert "global batch 16: 8 per process x 2 process(es)" in (two / "train.log").read_text()


# ---------------------------------------------------------------- ranks in sync, one set of outputs


def _sync_worker(rank: int, world_size: int, port: int, toy_root: str, out: str, report: str) -> None:
    _join_group(rank, world_size, port)
    import datasets.train_dataset as train_dataset
    import processor.trainer as trainer

    original_step, original_item = trainer.backward_step, train_dataset.TrainDataset.__getitem__
    drawn: list[int] = []  # training samples read since the last step (num_workers 0: in this process)
    steps: list[dict] = []

    def recorded_item(self, key):
        drawn.append(key.index)
        return original_item(self, key)

    def checked_step(loss, optimizer, scaler):
        original_step(loss, optimizer, scaler)
        flat = _flat_weights(optimizer)
        gathered = [torch.zeros_like(flat) for _ in range(world_size)]
        dist.all_gather(gathered, flat)
        steps.append({"samples": list(drawn), "lrs": [group["lr"] for group in optimizer.param_groups],
                      "same_weights": all(torch.equal(gathered[0], g) for g in gathered)})
        drawn.clear()

    train_dataset.TrainDataset.__getitem__ = recorded_item
    trainer.backward_step = checked_step
    run_dir = train_script.main(tiny_args(Path(toy_root), Path(out), "--num_epoch", "2", "--batch_size", "8"))
    Path(report, f"rank{rank}.json").write_text(json.dumps({"steps": steps, "run_dir": str(run_dir)}))


def test_two_process_training_keeps_ranks_in_sync(tmp_path: Path):
    """What DDP does not keep in step: each rank's schedule and its share of the data. At every step the ranks
    have the same learning rates (and weights) and disjoint halves of the global batch; over an epoch the halves
    hold every training sample once."""
    toy_root = make_tiny_toy(tmp_path / "toy")
    out, report = tmp_path / "runs", tmp_path / "report"
    report.mkdir()
    mp.spawn(_sync_worker, args=(2, _free_port(), str(toy_root), str(out), str(report)), nprocs=2, join=True)

    reports = [json.loads((report / f"rank{r}.json").read_text()) for r in range(2)]
    per_epoch = TOY_SAMPLES // 8  # global batch 8 (4 per process)
    assert [len(r["steps"]) for r in reports] == [2 * per_epoch, 2 * per_epoch]  # 2 epochs
    for first, second in zip(reports[0]["steps"], reports[1]["steps"]):
        assert first["lrs"] == second["lrs"] and first["same_weights"] and second["same_weights"]
        assert len(first["samples"]) == len(second["samples"]) == 4
        assert not set(first["samples"]) & set(second["samples"])
    for epoch in range(2):
        steps = slice(epoch * per_epoch, (epoch + 1) * per_epoch)
        drawn = [i for r in reports for step in r["steps"][steps] for i in step["samples"]]
        assert sorted(drawn) == list(range(TOY_SAMPLES))
    assert reports[0]["run_dir"] == reports[1]["run_dir"]
    runs = list((out / "CUHK-PEDES").iterdir())
    assert len(runs) == 1
    files = sorted(p.name for p in runs[0].iterdir())
    diff = json.loads((runs[0] / "run_info.json").read_text())["code"]["diff_file"]  # a tree with changes only
    assert files == sorted(["best.pth", "configs.yaml", "last.pth", "last_prev.pth", "metrics.jsonl", "run_info.json",
                            "train.log", *([diff] if diff else [])])
    log = (runs[0] / "train.log").read_text()
    assert log.count("epoch 1 evaluation") == 1 and "global batch 8: 4 per process x 2 process(es)" in log


# ---------------------------------------------------------------- evaluation with an empty share


class _TinyEncoder(torch.nn.Module):
    """Anything with encode_image / encode_text: two linear maps."""

    def __init__(self):
        super().__init__()
        self.image, self.text = torch.nn.Linear(6, 4), torch.nn.Linear(3, 4)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.image(images)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        return self.text(ids.float())


def _tiny_split(gallery: int, queries: int, world_size: int, rank: int):
    """An EvalSet of ``gallery`` images and ``queries`` captions; this rank's contiguous share of each."""
    from datasets.build import EvalSet
    from utils.distributed import shard_bounds

    g = torch.Generator().manual_seed(gallery * 10 + queries + 1)
    g_pids, q_pids = torch.arange(gallery), torch.zeros(queries, dtype=torch.long)  # one match: gallery image 0
    images, ids = torch.randn(gallery, 6, generator=g), torch.randint(0, 9, (queries, 3), generator=g)

    def loader(pids, inputs):
        start, stop = shard_bounds(len(pids), world_size, rank)
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(pids[start:stop], inputs[start:stop]),
                                           batch_size=2)

    return EvalSet("test", loader(g_pids, images), loader(q_pids, ids), g_pids, q_pids, [], [], world_size)


EMPTY_SHARE_SPLITS = [(1, 3), (5, 1), (1, 1)]  # (gallery, queries): a split of 1 leaves process 1 without items


def _evaluate_splits(world_size: int, rank: int) -> list:
    from processor.evaluator import evaluate

    torch.manual_seed(0)
    model = _TinyEncoder()
    return [evaluate(model, _tiny_split(g, q, world_size, rank), torch.device("cpu"), "none", 8, rank=rank)
            for g, q in EMPTY_SHARE_SPLITS]


def _evaluate_worker(rank: int, world_size: int, port: int, out: str) -> None:
    _join_group(rank, world_size, port)
    dist.init_process_group("gloo")
    try:
        Path(out, f"rank{rank}.json").write_text(json.dumps(_evaluate_splits(world_size, rank)))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_evaluation_with_an_empty_share_matches_one_process(tmp_path: Path):
    mp.spawn(_evaluate_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranked, other = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    assert other == [None] * len(EMPTY_SHARE_SPLITS)  # process 1 (empty shares) only sent its nothing
    assert ranked == _evaluate_splits(1, 0)
    assert ranked[1]["mAP"] < 100  # premise: the 5 gathered images are ranked, not trivially all right
