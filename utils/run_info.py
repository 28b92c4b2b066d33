"""What made a result: ``run_info.json``, written into a run folder when training starts (and by test.py next to
its scores), so that two runs that differ say where (tools/compare_runs.py).

It records the command line, the code (git commit, uncommitted changes: their diff is saved beside it as
``run_info.diff``, untracked files are listed), the package versions, the devices and world size, the resolved
amp and why, the SHA-256 of the annotation and of the weights read, the split sizes and the seed. Where something
cannot be known (no git, not a repository, no GPU, weights open_clip downloads) the file says so; nothing fails.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import torch

from utils.config import Config
from utils.io import atomic_write_text
from utils.precision import choose_amp

RUN_INFO_STEM = "run_info"
RUN_INFO_FILE = f"{RUN_INFO_STEM}.json"
DIFF_FILE = f"{RUN_INFO_STEM}.diff"  # `git diff HEAD` of a tree with uncommitted changes
REPO_ROOT = Path(__file__).resolve().parents[1]  # the code a run executes
HASH_CHUNK_BYTES = 1 << 20  # files are hashed in 1 MiB reads: constant memory for weights of any size
GIT_TIMEOUT_S = 10  # a git command slower than this (a hung network file system) is reported, not waited for
PACKAGES = ("numpy", "open_clip_torch")  # versions recorded besides Python, torch, CUDA and cuDNN
NOT_CACHED = "downloaded by open_clip, not hashed"  # OpenAI weights not (yet) in open_clip's cache
RANDOM_WEIGHTS = "pretrain_choice none: random initial weights, no file read"


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of the file's bytes, read in chunks; computed once per (path, size, modification time)."""
    stat = os.stat(path)
    return _sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=None)
def _sha256(path: str, size: int, mtime_ns: int) -> str:  # size and mtime key the cache: a changed file rehashes
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_record(path: str | os.PathLike | None, absent: str) -> dict[str, Any]:
    """{'path', 'sha256'} of a file read, or {'path': None, 'sha256': None, 'note': absent} when there is none."""
    if path is None:
        return {"path": None, "sha256": None, "note": absent}
    return {"path": str(Path(path).absolute()), "sha256": file_sha256(path)}


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True,
                          timeout=GIT_TIMEOUT_S).stdout


def code_state(root: str | os.PathLike = REPO_ROOT, diff_file: str = DIFF_FILE) -> tuple[dict[str, Any], str]:
    """(record, diff): the commit of ``root``, whether tracked files differ from it, the untracked files, and the
    diff itself ('' when clean; to be saved as ``diff_file``); without git, or outside a repository, a record
    saying so."""
    root = Path(root)
    try:
        commit = _git(root, "rev-parse", "HEAD").strip()
        diff = _git(root, "diff", "HEAD", "--binary")
        untracked = _git(root, "ls-files", "--others", "--exclude-standard").splitlines()
    except FileNotFoundError:
        return {"repository": str(root), "commit": None, "note": "git is not installed"}, ""
    except subprocess.CalledProcessError as exc:
        reason = (exc.stderr or "").strip().splitlines()
        return {"repository": str(root), "commit": None,
                "note": f"not a git repository with a commit ({reason[0] if reason else 'git failed'})"}, ""
    except subprocess.TimeoutExpired:
        return {"repository": str(root), "commit": None, "note": f"git took over {GIT_TIMEOUT_S} s"}, ""
    return {"repository": str(root), "commit": commit, "dirty": bool(diff),
            "diff_sha256": hashlib.sha256(diff.encode("utf-8")).hexdigest() if diff else None,
            "diff_file": diff_file if diff else None, "untracked": untracked}, diff


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """Python, torch, CUDA, cuDNN and PACKAGES versions (None: not installed / no CUDA build)."""
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": cudnn, **{name: _version(name) for name in PACKAGES}, "platform": platform.platform()}


def machine(device: torch.device, world_size: int) -> dict[str, Any]:
    """The host, the device this process runs on, the GPUs it sees and the number of processes."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    gpus = [torch.cuda.get_device_name(i) for i in range(count)]
    record = {"host": platform.node(), "device": str(device), "gpu_count": len(gpus), "gpus": gpus,
              "world_size": world_size}
    if not gpus:
        record["note"] = "no GPU: CUDA is not available"
    return record


def collect_run_info(cfg: Config, device: torch.device, world_size: int, data: dict[str, Any],
                     weights: dict[str, dict[str, Any]], argv: Sequence[str] | None = None,
                     root: str | os.PathLike | None = None, diff_file: str = DIFF_FILE) -> tuple[dict[str, Any], str]:
    """(record, diff) of this process: ``data`` is the annotation read (datasets.bases.DataRecord.to_dict()),
    ``weights`` the ``file_record`` of each weights file read, by role; ``root`` the code's repository (default:
    this project's); a non-empty diff goes to ``diff_file``."""
    argv = list(sys.argv if argv is None else argv)
    amp, reason = choose_amp(cfg.amp, device)
    code, diff = code_state(REPO_ROOT if root is None else root, diff_file)
    info = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": shlex.join([sys.executable, *argv]),
            "cwd": os.getcwd(), "code": code, "environment": environment(), "machine": machine(device, world_size),
            "precision": {"amp": amp, "reason": reason}, "seed": cfg.seed, "data": data, "weights": weights}
    return info, diff


def write_diff(folder: str | os.PathLike, info: dict[str, Any], diff: str) -> None:
    """Save a non-empty ``diff`` in ``folder`` under the name ``info`` gives it (atomically)."""
    if diff:
        atomic_write_text(Path(folder) / info["code"]["diff_file"], diff)


def write_run_info(folder: str | os.PathLike, info: dict[str, Any], diff: str, name: str = RUN_INFO_FILE) -> Path:
    """Write ``info`` as ``folder/name`` and a non-empty ``diff`` beside it (both atomically)."""
    write_diff(folder, info, diff)
    atomic_write_text(Path(folder) / name, json.dumps(info, indent=2) + "\n")
    return Path(folder) / name


def record_run(run_dir: str | os.PathLike, cfg: Config, device: torch.device, world_size: int, data: dict[str, Any],
               weights: dict[str, dict[str, Any]], resumed_after: int | None = None) -> Path:
    """Write the training run's run_info.json (``collect_run_info``'s arguments); a resumed session's record goes
    to run_info_resumed_after_epoch<N>.json, so the run's start stays on record."""
    stem = RUN_INFO_STEM if resumed_after is None else f"{RUN_INFO_STEM}_resumed_after_epoch{resumed_after}"
    info, diff = collect_run_info(cfg, device, world_size, data, weights, diff_file=f"{stem}.diff")
    return write_run_info(run_dir, info, diff, f"{stem}.json")


def read_run_info(folder: str | os.PathLike) -> dict[str, Any] | None:
    """A run folder's run_info.json, or None for a run made before it existed (or a damaged file)."""
    path = Path(folder) / RUN_INFO_FILE
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return info if isinstance(info, dict) else None
