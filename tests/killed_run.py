"""train.py stopped by a signal at a chosen moment (for the crash-safety test).

    python tests/killed_run.py step:<n> <train.py arguments>                # SIGKILL after the n-th training step
    python tests/killed_run.py save:<file>:<epoch> <train.py arguments>     # SIGKILL half-way through writing <file>
    python tests/killed_run.py sigint:<n> <train.py arguments>              # Ctrl-C (SIGINT) after the n-th step

SIGKILL: the process kills itself, as an out-of-memory killer or a cluster's pre-emption would: no cleanup runs.
SIGINT: what Ctrl-C in the terminal sends; train.py ends with the resume command.
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root

import torch  # noqa: E402

import processor.trainer as trainer  # noqa: E402
import train  # noqa: E402


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)


def signal_after_step(step: int, send: Callable[[], None]) -> None:
    original = trainer.backward_step
    done = [0]

    def counted(loss, optimizer, scaler):
        original(loss, optimizer, scaler)
        done[0] += 1
        if done[0] == step:
            send()

    trainer.backward_step = counted


def kill_while_saving(name: str, epoch: int) -> None:
    original = torch.save  # what utils.io writes with

    def torn(obj, file):
        original(obj, file)
        if Path(file).name.startswith(f".{name}.") and obj.get("epoch") == epoch:
            size = os.path.getsize(file)
            with open(file, "r+b") as f:  # half the bytes are on disk when the process dies
                f.truncate(size // 2)
            die()

    torch.save = torn


if __name__ == "__main__":
    kind, *where = sys.argv[1].split(":")
    if kind in ("step", "sigint"):
        signal_after_step(int(where[0]), die if kind == "step" else ctrl_c)
    else:
        kill_while_saving(where[0], int(where[1]))
    train.run_cli(lambda: train.main(sys.argv[2:]))
