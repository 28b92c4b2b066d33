"""train.py killed with SIGKILL at a chosen moment (for the crash-safety test).

    python tests/killed_run.py step:<n> <train.py arguments>                # after the n-th training step
    python tests/killed_run.py save:<file>:<epoch> <train.py arguments>     # half-way through writing <file>

The process kills itself, as an out-of-memory killer or a cluster's pre-emption would: no cleanup runs.
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root

import processor.trainer as trainer  # noqa: E402
import train  # noqa: E402
import utils.io as io  # noqa: E402


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def kill_after_step(step: int) -> None:
    original = trainer.backward_step
    done = [0]

    def counted(loss, optimizer, scaler):
        original(loss, optimizer, scaler)
        done[0] += 1
        if done[0] == step:
            die()

    trainer.backward_step = counted


def kill_while_saving(name: str, epoch: int) -> None:
    original = io.torch.save

    def torn(obj, file):
        original(obj, file)
        if Path(file).name.startswith(f".{name}.") and obj.get("epoch") == epoch:
            size = os.path.getsize(file)
            with open(file, "r+b") as f:  # half the bytes are on disk when the process dies
                f.truncate(size // 2)
            die()

    io.torch.save = torn


if __name__ == "__main__":
    kind, *where = sys.argv[1].split(":")
    if kind == "step":
        kill_after_step(int(where[0]))
    else:
        kill_while_saving(where[0], int(where[1]))
    train.run_cli(lambda: train.main(sys.argv[2:]))
