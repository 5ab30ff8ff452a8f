"""Atomic file output: write to a temporary file next to the target, then rename.

A reader (or a crash) never sees a half-written output: either the old file is
still there or the complete new one is.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


def split_suffix(path: Path) -> tuple[str, str]:
    """``("name", ".nii.gz")`` for ``name.nii.gz``; handles double suffixes."""
    name = path.name
    for double in (".nii.gz", ".tar.gz"):
        if name.lower().endswith(double):
            return name[: -len(double)], name[-len(double):]
    return path.stem, path.suffix


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder with the target's suffix;
    on success it replaces ``path`` atomically, on error it is removed.

    Example::

        with atomic_path("out.nii.gz") as tmp:
            nib.save(img, tmp)
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    stem, suffix = split_suffix(target)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{suffix}", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    mode = 0o666 & ~_umask()
    os.chmod(tmp, mode)  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield tmp
        os.chmod(tmp, mode)  # again: some writers (safetensors) recreate the file
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))
