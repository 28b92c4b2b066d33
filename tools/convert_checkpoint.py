"""Convert a checkpoint of an earlier version to plain data, once: ``python tools/convert_checkpoint.py --trust FILE``.

Checkpoints are read weights-only (tensors, numbers, strings, lists and dicts). A ``last.pth`` written before that
rule keeps numpy's RNG state as a pickled numpy array, which that loader refuses. This tool reads FILE with the
full unpickler, which runs whatever the file holds (hence ``--trust``: only for a file from a run you trust),
stores the RNG states as tensors and numbers, checks that the result loads weights-only, and replaces FILE.
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # project imports when run as tools/...py

from utils.cli import parse_first, run_cli  # noqa: E402


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="the checkpoint to convert in place (e.g. <run>/last.pth)")
    parser.add_argument("--trust", action="store_true",
                        help="the file comes from a run you trust: reading it may run code it carries")
    return parser.parse_args(argv)


parse_first(parse_args, __name__)  # --help and argument mistakes answer here, before torch loads

import torch  # noqa: E402

from utils.checkpoint import CheckpointError, UnsafeCheckpointError, load_checkpoint, only_pickled_rng  # noqa: E402
from utils.errors import one_line  # noqa: E402
from utils.io import atomic_torch_save  # noqa: E402
from utils.seed import plain_numpy_state  # noqa: E402


def plain_checkpoint(state: object, path: Path) -> dict:
    """``state`` with numpy's RNG state as tensors and numbers (the form utils.seed.get_rng_states writes)."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a training checkpoint of this project (a {type(state).__name__})")
    rng = state.get("rng")
    if isinstance(rng, dict) and "numpy" in rng:
        state = {**state, "rng": {**rng, "numpy": plain_numpy_state(rng["numpy"])}}
    return state


def every_refused_global(path: Path) -> list[str]:
    """Every class or function the archive's pickle imports that the weights-only unpickler refuses: torch's
    static scan, which reads the whole pickle and fails on any opcode torch.save does not write."""
    try:
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception as exc:
        raise CheckpointError(f"{path}: not converted: not a torch.save archive whose pickle can be checked before "
                              f"it is read ({one_line(exc)}); nothing in it was run") from exc


def check_weights_only(state: dict, path: Path) -> None:
    """Raise unless ``state`` would load weights-only once saved (nothing is written before this passes)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    try:
        torch.load(buffer, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not converted: besides numpy's RNG state it holds objects other than "
                              f"weights and plain data ({one_line(exc)})") from exc


def main(argv: Sequence[str] | None = None) -> Path:
    """Convert the checkpoint in place; returns its path."""
    args = parse_args(argv)
    path = Path(args.checkpoint)
    try:
        load_checkpoint(path)
        print(f"{path} already loads weights-only: nothing to convert")
        return path
    except UnsafeCheckpointError:
        refused = every_refused_global(path)
        if not only_pickled_rng(refused):  # converting would not make it plain data: it is not read at all
            raise CheckpointError(f"{path}: not converted: it holds {', '.join(refused)}, not only the numpy RNG "
                                  "state of an earlier version's last.pth; nothing in it was run") from None
    if not args.trust:
        raise CheckpointError(f"{path}: converting reads it with the full unpickler, which runs what the file "
                              f"carries: add --trust if it comes from a run you trust")
    state = plain_checkpoint(torch.load(path, map_location="cpu", weights_only=False), path)
    check_weights_only(state, path)
    atomic_torch_save(state, path)
    print(f"converted {path}: it now loads weights-only")
    return path


if __name__ == "__main__":
    run_cli(main)
