"""Two gloo processes on CPU train the tiny demo: identical weights after every step, one set of outputs."""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.tiny_run import make_tiny_toy, tiny_args


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, toy_root: str, out: str, report: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world_size), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    import processor.trainer as trainer
    import train

    original_step = trainer.backward_step
    checks: list[bool] = []

    def checked_step(loss, optimizer, scaler):
        original_step(loss, optimizer, scaler)
        flat = torch.cat([p.detach().flatten() for g in optimizer.param_groups for p in g["params"]])
        gathered = [torch.zeros_like(flat) for _ in range(world_size)]
        dist.all_gather(gathered, flat)
        checks.append(all(torch.equal(gathered[0], g) for g in gathered))

    trainer.backward_step = checked_step
    run_dir = train.main(tiny_args(Path(toy_root), Path(out), "--num_epoch", "2", "--batch_size", "4"))
    Path(report, f"rank{rank}.json").write_text(json.dumps({"checks": checks, "run_dir": str(run_dir)}))


def test_two_process_training_keeps_ranks_in_sync(tmp_path: Path):
    toy_root = make_tiny_toy(tmp_path / "toy")
    out, report = tmp_path / "runs", tmp_path / "report"
    report.mkdir()
    mp.spawn(_worker, args=(2, _free_port(), str(toy_root), str(out), str(report)), nprocs=2, join=True)

    reports = [json.loads((report / f"rank{r}.json").read_text()) for r in range(2)]
    # 16 ids x 2 images x 2 captions = 64 samples; 32 per rank; batch 4 -> 8 steps per epoch, 2 epochs
    assert [len(r["checks"]) for r in reports] == [16, 16]
    assert all(all(r["checks"]) for r in reports)
    assert reports[0]["run_dir"] == reports[1]["run_dir"]
    runs = list((out / "CUHK-PEDES").iterdir())
    assert len(runs) == 1
    files = sorted(p.name for p in runs[0].iterdir())
    assert files == ["best.pth", "configs.yaml", "last.pth", "metrics.jsonl", "train.log"]
    log = (runs[0] / "train.log").read_text()
    assert log.count("epoch 1 evaluation") == 1 and "global batch 8" in log
