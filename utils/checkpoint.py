"""Checkpoints: atomic save, and a loader that says clearly what is wrong with a file.

A run writes ``last.pth`` (everything a resume needs) after every epoch, keeping the one it replaces as
``last_prev.pth`` when asked, and ``best.pth`` (what evaluation and search need: weights, config, epoch,
scores; no optimizer state) when the selected score improves.

A checkpoint is data, never code: it is read with torch's weights-only unpickler, so it may hold tensors, numbers,
strings, lists, tuples and dicts only, and a file holding anything else is refused before any of it runs.
"""
from __future__ import annotations

import contextlib
import io
import os
import pickle
import pickletools
import re
import warnings
import zipfile
from pathlib import Path
from typing import IO, Any

import torch

from utils.errors import UserError
from utils.io import atomic_torch_save

CHECKPOINT_KEYS = ("model", "epoch")
# What last.pth holds beyond best.pth's. Not the scheduler: an epoch's lr follows from config and epoch alone; a
# "scheduler" entry of an older last.pth is ignored.
RESUME_KEYS = ("optimizer", "scaler", "rng", "history")
PREVIOUS_SUFFIX = "_prev"  # last.pth -> last_prev.pth
# torch's weights-only unpickler names the first class or function it refused in its error message.
TORCH_REFUSED_GLOBAL = re.compile(r"GLOBAL (\S+) (?:was not an allowed global|whose module)")
REFUSED_LISTED = 3  # refused names quoted in the error line
# What a last.pth of an earlier version pickled besides plain data: numpy's RNG state, an ndarray (numpy 1 and 2).
PICKLED_RNG_GLOBALS = frozenset({"numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
                                 "numpy.ndarray", "numpy.dtype"})
CONVERT_COMMAND = "python tools/convert_checkpoint.py --trust"


class CheckpointError(UserError, ValueError):
    """A checkpoint file that is missing, unreadable, or not one this project wrote."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint that holds objects other than weights and plain data: refused, none of it was run."""

    def __init__(self, path: Path, refused: list[str]):
        self.refused = refused  # the classes and functions its pickle would call
        super().__init__(refusal_message(path, refused))


def previous_path(path: str | os.PathLike) -> Path:
    """Where the checkpoint replaced by ``path``'s latest save is kept: last.pth -> last_prev.pth."""
    path = Path(path)
    return path.with_name(f"{path.stem}{PREVIOUS_SUFFIX}{path.suffix}")


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike, keep_previous: bool = False) -> None:
    """Write ``state`` to ``path`` atomically: an interrupted save leaves the previous file intact.

    ``keep_previous``: the file replaced is kept as ``previous_path(path)`` (the previous epoch's copy).
    """
    atomic_torch_save(state, path, previous_path(path) if keep_previous else None)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by ``save_checkpoint`` (a dict with at least 'model' and 'epoch'), weights-only."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():  # a pickle protocol torch does not write is refused below, not warned about
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        refused = refused_objects(path, exc)
        if refused:
            raise UnsafeCheckpointError(path, refused) from None
        detail = "not a file torch.save writes" if isinstance(exc, pickle.UnpicklingError) else exc
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint, truncated or corrupt "
                              f"({type(exc).__name__}: {detail})") from exc
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a training checkpoint of this project (missing {missing}); "
                              "for OpenAI CLIP weights use pretrain_path instead")
    return state


def refusal_message(path: Path, refused: list[str]) -> str:
    """Why ``path`` is refused; for the numpy RNG state of an earlier version's last.pth, how to convert it."""
    listed = ", ".join(refused[:REFUSED_LISTED]) + (", ..." if len(refused) > REFUSED_LISTED else "")
    message = (f"{path}: refused, it holds objects other than weights and plain data ({listed}); a checkpoint may "
               "hold only tensors, numbers, strings, lists and dicts, since unpickling anything else runs code "
               "from the file")
    if only_pickled_rng(refused):
        message += (f"; a last.pth of an earlier version keeps numpy's RNG state that way: if the file is from a "
                    f"run you trust, convert it once with {CONVERT_COMMAND} {path}")
    return message


def only_pickled_rng(refused: list[str]) -> bool:
    """Whether ``refused`` is what an earlier version's last.pth holds (tools/convert_checkpoint.py converts it)."""
    return set(refused) <= PICKLED_RNG_GLOBALS


def refused_objects(path: Path, error: Exception) -> list[str]:
    """The classes and functions ``path``'s pickle would call that the weights-only unpickler refuses, found
    without running any: torch's scan of a torch.save archive, else the name in torch's ``error``, else every
    import of a pickle in a form that unpickler does not read at all (e.g. pickle protocol 4); [] for a load that
    failed otherwise (a truncated or foreign file)."""
    if not isinstance(error, pickle.UnpicklingError):
        return []
    if zipfile.is_zipfile(path):
        with contextlib.suppress(Exception):  # the scan knows only the opcodes torch.save writes
            refused = torch.serialization.get_unsafe_globals_in_checkpoint(path)
            if refused:
                return sorted(refused)
    return TORCH_REFUSED_GLOBAL.findall(str(error)) or pickle_imports(path)


def pickle_imports(path: Path) -> list[str]:
    """Every 'module.name' the pickle in ``path`` (a torch.save archive's data.pkl) imports, read by pickletools
    without running it; [] when the file holds no complete pickle."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                member = next(name for name in archive.namelist() if name.endswith("data.pkl"))
                return _imports(io.BytesIO(archive.read(member)))
        with path.open("rb") as stream:
            return _imports(stream)
    except (OSError, zipfile.BadZipFile, StopIteration):
        return []


def _imports(stream: IO[bytes]) -> list[str]:
    names: list[str] = []
    memo: dict[int, str | None] = {}
    strings: list[str | None] = []  # the strings pushed so far, None for any other value
    try:
        for opcode, arg, _ in pickletools.genops(stream):
            if opcode.name in ("GLOBAL", "INST"):  # arg: 'module name'
                names.append(arg.replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL":  # module and name: the two values pushed last
                names.append(".".join(str(s) for s in strings[-2:]))
            elif opcode.name == "MEMOIZE":
                memo[len(memo)] = strings[-1] if strings else None
            elif opcode.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[arg] = strings[-1] if strings else None
            elif opcode.name in ("GET", "BINGET", "LONG_BINGET"):
                strings.append(memo.get(arg))
            elif opcode.stack_after:
                strings.append(arg if isinstance(arg, str) else None)
    except Exception:  # not a pickle (or a truncated one): nothing is claimed about it
        return []
    return sorted(set(names))
