"""Runs that users start in the real world: short splits, one-epoch smoke runs, shared storage, changed settings
on resume, several ranks, and what best.pth holds."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import train as train_script
import utils.seed as seed
from datasets.toy import make_toy_dataset
from tests.test_distributed import _free_port, _join_group
from tests.tiny_run import benchmark_settings, tiny_args
from utils.checkpoint import RESUME_KEYS, load_checkpoint
from utils.io import atomic_save_safetensors, atomic_torch_save, atomic_write_text


@pytest.fixture(scope="module")
def toy(tiny_toy: Path) -> Path:
    return tiny_toy


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_split_smaller_than_the_batch_trains_every_caption(tmp_path: Path):
    root = tmp_path / "toy"
    make_toy_dataset(root, "CUHK-PEDES", num_train_ids=10, num_val_ids=2, num_test_ids=3, images_per_id=2,
                     image_size=[64, 32], seed=2)  # 10 ids x 2 images x 2 captions = 40 training captions
    seen: list[int] = []
    import processor.trainer as trainer
    original = trainer.backward_step

    def counting(loss, optimizer, scaler):
        seen.append(1)
        original(loss, optimizer, scaler)

    trainer.backward_step = counting
    try:
        run_dir = train_script.main(tiny_args(root, tmp_path / "out", "--batch_size", "64", "--num_epoch", "1"))
    finally:
        trainer.backward_step = original
    assert len(seen) == 1  # one batch of all 40 captions
    assert "global batch 64: 64 per process x 1 process(es); 1 steps per epoch" in (run_dir / "train.log").read_text()


def test_one_epoch_smoke_run_of_the_demo(toy: Path, tmp_path: Path):
    # the benchmark configs' cosine (method §7; the demo uses a step schedule): one epoch of warm-up is all of it
    run_dir = train_script.main(tiny_args(toy, tmp_path, *benchmark_settings(), "--num_epoch", "1",
                                          "--warmup_epochs", "1"))
    assert [r["epoch"] for r in _rows(run_dir)] == [1]
    assert "the schedule is the linear warm-up only" in (run_dir / "train.log").read_text()


def test_best_holds_what_evaluation_needs_and_last_what_resume_needs(tiny_run: Path):
    run_dir = tiny_run
    best, last = load_checkpoint(run_dir / "best.pth"), load_checkpoint(run_dir / "last.pth")
    assert not set(RESUME_KEYS) & set(best) and set(RESUME_KEYS) <= set(last)
    assert best["config"]["dataset_name"] == "CUHK-PEDES"
    row = next(r for r in _rows(run_dir) if r["epoch"] == best["epoch"])
    assert best["scores"]["test"]["R1"] == row["R1"] and best["scores"]["val"] == row["val"]
    assert best["model"].keys() == last["model"].keys()
    assert (run_dir / "best.pth").stat().st_size < 0.6 * (run_dir / "last.pth").stat().st_size  # Adam: 2 moments
    assert load_checkpoint(run_dir / "last_prev.pth")["epoch"] == 1  # the previous epoch's copy


def test_a_checkpoint_without_grad_scaler_resumes_under_fp16(toy: Path, tmp_path: Path):
    run_dir = train_script.main(tiny_args(toy, tmp_path, "--num_epoch", "1", "--amp", "bf16"))
    resumed = train_script.main(["--resume", str(run_dir / "last.pth"), "--amp", "fp16", "--num_epoch", "2"])
    assert [r["epoch"] for r in _rows(resumed)] == [1, 2]
    log = (run_dir / "train.log").read_text()
    assert "no fp16 grad-scaler state" in log and "resuming with changed settings: amp: 'bf16' -> 'fp16'" in log


def test_cuda_rng_states_of_more_gpus_restore_on_fewer(monkeypatch):
    saved = seed.get_rng_states()
    states = [torch.full((16,), i, dtype=torch.uint8) for i in range(8)]  # a checkpoint from 8 GPUs
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state: restored.append(state))
    seed.set_rng_states({**saved, "cuda": states})
    assert len(restored) == 1 and torch.equal(restored[0], states[1])  # this process's device, no crash
    seed.set_rng_states({**saved, "cuda": states[:1]})  # saved by one GPU, resumed as rank 1
    assert torch.equal(restored[1], states[0])


@pytest.fixture
def open_folder():
    """A folder every user can enter (pytest's own tmp folders are owner-only)."""
    folder = Path(tempfile.mkdtemp(dir="/tmp"))
    os.chmod(folder, 0o755)
    yield folder
    shutil.rmtree(folder)


@pytest.mark.parametrize("write", [
    lambda path: atomic_write_text(path, "name: x\n"),
    lambda path: atomic_torch_save({"epoch": 1}, path),
    lambda path: atomic_save_safetensors({"w": torch.zeros(2)}, path),  # safetensors replaces the file it is given
], ids=["text", "torch", "safetensors"])
def test_every_atomic_writer_follows_the_umask(open_folder: Path, write):
    previous = os.umask(0o027)
    try:
        write(open_folder / "out")
    finally:
        os.umask(previous)
    assert oct((open_folder / "out").stat().st_mode & 0o777) == oct(0o640)


def test_written_files_are_readable_by_the_group(open_folder: Path):
    folder = open_folder
    previous = os.umask(0o027)  # group may read, others nothing
    try:
        atomic_write_text(folder / "configs.yaml", "name: x\n")
    finally:
        os.umask(previous)
    path = folder / "configs.yaml"
    assert path.stat().st_mode & 0o777 == 0o640
    if os.geteuid() != 0:
        return  # reading as another user needs root to switch users
    reader = ["cat", str(path)]
    as_group = subprocess.run(reader, user=65534, group=os.getgid(), extra_groups=[], capture_output=True)
    assert as_group.returncode == 0, as_group.stderr  # another user of the file's group
    as_other = subprocess.run(reader, user=65534, group=65534, extra_groups=[], capture_output=True)
    assert as_other.returncode != 0 and b"Permission denied" in as_other.stderr


def _nan_worker(rank: int, world_size: int, port: int, toy_root: str, out: str) -> None:
    _join_group(rank, world_size, port)
    from model.build import TrainingModel

    if rank == 1:  # only this process's loss turns nan, at its second step
        original, calls = TrainingModel.forward, [0]

        def forward(self, batch):
            outputs = original(self, batch)
            calls[0] += 1
            if calls[0] == 2:
                outputs["sdm_loss"] = outputs["sdm_loss"] * float("nan")
            return outputs

        TrainingModel.forward = forward
    try:
        train_script.main(tiny_args(Path(toy_root), Path(out), "--num_epoch", "1"))
        message = "finished"
    except Exception as exc:  # noqa: BLE001  (the message is the test's result)
        message = f"{type(exc).__name__}: {exc}"
    Path(out, f"rank{rank}.txt").write_text(message)


@pytest.mark.slow
def test_a_non_finite_loss_on_one_rank_stops_every_rank(toy: Path, tmp_path: Path):
    mp.spawn(_nan_worker, args=(2, _free_port(), str(toy), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        assert (tmp_path / f"rank{rank}.txt").read_text().startswith(
            "NonFiniteLossError: non-finite loss at epoch 1, step 2"), rank
