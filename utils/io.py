"""Atomic file writes: a reader never sees a half-written file, an interrupted write leaves the old one.

Files get the permissions of any file the user creates (0666 minus the umask), so that on shared storage the
group can read checkpoints, results and phrase copies (a bare temporary file would stay owner-only, 0600).
``check_output_folder`` tells before any work whether an output folder can be made at all.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from utils.errors import UserError

if TYPE_CHECKING:
    import torch

FILE_MODE = 0o666  # what open() asks for; the umask removes the bits the user does not want
TEMP_SUFFIX = ".tmp"  # temporary files are .<name>.<random>.tmp beside their target
TEMP_TOKEN_BYTES = 4  # random bytes in a temporary file's name (8 hex digits)


class OutputFolderError(UserError, NotADirectoryError):
    """An output folder that cannot be made: a file stands where it or a folder above it should be."""


def check_output_folder(folder: str | os.PathLike, option: str) -> None:
    """An OutputFolderError naming ``option`` when ``folder`` or a folder above it is a file: checked before any
    work, so that the command ends with one line instead of a NotADirectoryError once the work is done."""
    path = Path(folder).absolute()
    for part in (path, *path.parents):
        if part.is_dir():
            return
        if part.exists():
            raise OutputFolderError(f"{option}: {part} is a file, not a folder; choose another folder")


def _new_temporary(folder: Path, name: str) -> Path:
    """An empty file ``.<name>.<random>.tmp`` in ``folder``, created with FILE_MODE so that the kernel applies the
    umask (the process-wide umask is never changed, so other threads are unaffected)."""
    while True:
        tmp = folder / f".{name}.{secrets.token_hex(TEMP_TOKEN_BYTES)}{TEMP_SUFFIX}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
            return tmp
        except FileExistsError:
            continue


def _atomic_write(path: str | os.PathLike, write: Callable[[str], None],
                  keep_previous_as: str | os.PathLike | None = None) -> None:
    """Write through a temporary file in the same folder, then rename it over ``path``.

    ``keep_previous_as``: the file being replaced is renamed to this name first (a fallback copy).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(_new_temporary(path.parent, path.name))
    mode = os.stat(tmp).st_mode & FILE_MODE  # FILE_MODE minus the umask, as the kernel applied it
    try:
        write(tmp)
        os.chmod(tmp, mode)  # a writer may have replaced the file with an owner-only one (safetensors does)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        if keep_previous_as is not None and path.exists():
            os.replace(path, keep_previous_as)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that writes killed half-way (SIGKILL, power loss) left in ``folder``."""
    stale = sorted(Path(folder).glob(f".*{TEMP_SUFFIX}"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    _atomic_write(path, write)


def atomic_torch_save(obj: Any, path: str | os.PathLike, keep_previous_as: str | os.PathLike | None = None) -> None:
    import torch  # here, not at import: the tools' --help does not wait for torch (seconds)

    _atomic_write(path, lambda tmp: torch.save(obj, tmp), keep_previous_as)


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Write ``tensors`` (contiguous, no shared storage) as a safetensors file."""
    from safetensors.torch import save_file  # here, not at import, as torch above

    _atomic_write(path, lambda tmp: save_file(tensors, tmp))
