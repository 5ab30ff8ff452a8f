"""Patch libraries on disk as memory-mapped arrays: a dataset larger than
the machine's memory trains without being loaded.

A library is a folder ``<name>/`` holding one ``<column>.npy`` per column
(rows first: ``lr (N, 1, p, p, p)``, ``subject (N,)``, ...) and
``meta.json`` (``rows``, the columns' shapes and dtypes, and what the builder
recorded: the subjects used and skipped).  A builder writes rows one at a
time into preallocated ``.npy`` files of a temporary folder
(:class:`LibraryWriter`), so building needs no more memory than one subject;
the folder is renamed into place when complete, so a killed build leaves no
half library behind (it is rebuilt).  Readers open the columns with
``mmap_mode="r"``: only the rows a batch reads come off the disk
(:class:`RowView`).  Several processes (DDP ranks) may build the same
library at once: the first complete one wins, the others are discarded.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

log = logging.getLogger("superresmoe.training")

#: Bumped when the on-disk layout changes (an older folder is rebuilt).
LIBRARY_FORMAT = 1


@dataclass(frozen=True)
class Column:
    """One column: the shape of a row and its dtype."""

    shape: tuple[int, ...]
    dtype: str


class LibraryWriter:
    """Rows appended into preallocated memory-mapped ``.npy`` files of ``folder``."""

    def __init__(self, folder: Path, capacity: int, columns: Mapping[str, Column]) -> None:
        if capacity < 1:
            raise ValueError(f"a library needs room for at least one row, got {capacity}")
        self.columns = dict(columns)
        self.capacity = int(capacity)
        self.rows = 0
        self._arrays = {name: np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=np.dtype(c.dtype),
                                                        shape=(self.capacity, *c.shape))
                        for name, c in self.columns.items()}

    def append(self, **values: Any) -> None:
        """Write one row (every column, each of its row shape; cast to the column's dtype)."""
        if set(values) != set(self.columns):
            raise ValueError(f"a row needs the columns {sorted(self.columns)}, got {sorted(values)}")
        if self.rows >= self.capacity:
            raise ValueError(f"the library is full ({self.capacity} rows)")
        for name, value in values.items():
            self._arrays[name][self.rows] = value
        self.rows += 1

    def close(self) -> None:
        for a in self._arrays.values():
            a.flush()
        self._arrays.clear()


class RowView:
    """Rows ``index`` of a column, read on demand: ``view[i]``, ``view[a:b]``
    and ``view[array]`` return those rows as an in-memory array."""

    def __init__(self, base: np.ndarray, index: np.ndarray) -> None:
        self.base, self.index = base, np.asarray(index, np.int64)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key: Any) -> np.ndarray:
        rows = self.index[key]
        if np.ndim(rows) == 0:
            return np.asarray(self.base[int(rows)])
        order = np.argsort(rows, kind="stable")  # read the disk in order, return in the asked order
        out = np.asarray(self.base[rows[order]])
        result = np.empty_like(out)
        result[order] = out
        return result

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.index), *self.base.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self.base.dtype

    def astype(self, dtype: Any) -> np.ndarray:
        """Every row, read and converted (the whole subset in memory)."""
        return self[:].astype(dtype)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        rows = self[:]
        return rows if dtype is None else rows.astype(dtype)


@dataclass
class Library:
    """A library opened read-only: ``arrays`` (memory-mapped, ``rows`` long) and ``meta``."""

    path: Path
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]

    def __len__(self) -> int:
        return int(self.meta["rows"])

    def __getitem__(self, column: str) -> np.ndarray:
        """A whole column (memory-mapped)."""
        return self.arrays[column]

    def rows(self, index: np.ndarray) -> dict[str, RowView]:
        """Column views of the rows ``index`` (a training or validation subset)."""
        return {name: RowView(a, index) for name, a in self.arrays.items()}


def open_library(path: Path) -> Library | None:
    """The library at ``path`` (``None``: missing, incomplete or another format)."""
    path = Path(path)
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        if meta.get("format") != LIBRARY_FORMAT:
            return None
        rows = int(meta["rows"])
        arrays = {}
        for name, spec in meta["columns"].items():
            a = np.load(path / f"{name}.npy", mmap_mode="r")
            if a.dtype != np.dtype(spec["dtype"]) or tuple(a.shape[1:]) != tuple(spec["shape"]) or len(a) < rows:
                return None
            arrays[name] = a[:rows]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Library(path, arrays, meta)


def cached_library(path: Path, columns: Mapping[str, Column], capacity: int,
                   build: Callable[[LibraryWriter], dict[str, Any]], what: str) -> Library:
    """The library at ``path``, or ``build(writer)`` run first (it appends the
    rows and returns what ``meta.json`` should record besides them).

    Raises:
        ValueError: the builder wrote no row.
    """
    path = Path(path)
    lib = open_library(path)
    if lib is not None:
        return lib
    if path.exists():
        log.warning("%s at %s is incomplete or of another format: rebuilding", what, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    t0 = time.perf_counter()
    try:
        writer = LibraryWriter(tmp, capacity, columns)
        extra = build(writer)
        writer.close()
        if writer.rows == 0:
            raise ValueError(f"{what}: the builder wrote no row")
        meta = {**extra, "format": LIBRARY_FORMAT, "rows": writer.rows,
                "columns": {n: {"shape": list(c.shape), "dtype": c.dtype} for n, c in columns.items()}}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str), encoding="utf-8")
        if path.exists() and open_library(path) is None:
            shutil.rmtree(path, ignore_errors=True)
        try:
            os.replace(tmp, path)
        except OSError:  # another process finished the same library first
            if open_library(path) is None:
                raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)
    log.info("built %s in %.1f s (%s, %d rows)", what, time.perf_counter() - t0, path, meta["rows"])
    lib = open_library(path)
    if lib is None:
        raise ValueError(f"{what} at {path} could not be read back after building it")
    return lib
