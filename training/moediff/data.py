"""MoEDiff-SR training slices: 2D tiles of HR subjects (the embedded sample
subjects, or the user's own HR T1 folder or BIDS dataset:
:mod:`training.hr_source`) and their
3T-like degradation (:mod:`.degradation`), cached on disk.

For each training subject, ``crops_per_subject`` cubes of ``crop`` voxels
are cut around random brain voxels; each goes through its own drawn
degradation, and ``slices_per_crop`` 2D tiles of ``tile x tile`` pixels are
taken from it, each along a random axis (the slice axis at inference is any of
the three), at a random position away from the cube's faces by ``margin``
(where the profile blur saw extended edges).  Intensities are divided by the
subject's robust maximum (as at inference) and multiplied by one random factor
in ``1 +- intensity_jitter`` per cube.

Columns (a memory-mapped :mod:`training.library` in the user cache, built one
subject at a time; float16 images): ``lr``, ``hr`` ``(N, 1, t, t)``; ``extras`` ``(N, 3, t, t)``
= the log bias correction and the two in-plane components (in the tile's row,
column order) of the warp correction, in mm; ``axis`` ``(N,)`` (array axis
0/1/2 = k/j/i the tile is perpendicular to); ``thick`` ``(N,)`` (1 for a
thick-slice case); ``subject`` ``(N,)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from SuperResMoELib.core.geometry import sub_volume
from SuperResMoELib.core.intensity import robust_max
from SuperResMoELib.evaluation.segmentation import brain_mask
from SuperResMoELib.io.paths import user_cache_dir

from ..cache import cache_key
from ..hr_source import each_usable_subject, source_key
from ..library import Column, Library, LibraryWriter, cached_library
from .degradation import MoEDiffDegradation, degrade_block, draw_case

LIBRARY_VERSION = "v1"
#: Salt of the library's draws.
LIBRARY_SALT = 0x3D


def tile_margin(tile: int) -> int:
    """Voxels kept free at a cube's faces around ``tile``-pixel tiles: an eighth of the tile, at least 4."""
    return max(4, int(tile) // 8)


@dataclass(frozen=True)
class SliceLibraryConfig:
    """Which tiles a library holds (see the module docstring)."""

    subjects: tuple[int, ...]
    crops_per_subject: int
    slices_per_crop: int
    crop: int
    tile: int
    degradation: MoEDiffDegradation
    intensity_jitter: float
    seed: int
    data_seed: int
    #: ``"sample"`` (the embedded T1 subjects) or a folder of the user's own HR T1 volumes.
    source: str = "sample"

    def __post_init__(self) -> None:
        if self.tile + 2 * self.margin > self.crop:
            raise ValueError(f"a {self.tile}-pixel tile with margin {self.margin} needs a crop of at least "
                             f"{self.tile + 2 * self.margin}, got {self.crop}")

    @property
    def margin(self) -> int:
        return tile_margin(self.tile)

    def key(self) -> str:
        d = {**asdict(self), "version": LIBRARY_VERSION}
        if self.source != "sample":  # the scans, their sizes and times are part of the key
            d["files"] = source_key(self.source)
            d["source"] = str(Path(self.source).resolve())
        return cache_key(d)


def _crop_starts(mask: np.ndarray, size: int, n: int, rng: np.random.Generator) -> np.ndarray:
    brain = np.argwhere(mask)
    centres = brain[rng.integers(0, len(brain), size=n)]
    return np.clip(centres - size // 2, 0, np.asarray(mask.shape) - size)


def _tile(arr: np.ndarray, axis: int, index: int, r0: int, c0: int, t: int) -> np.ndarray:
    """The ``t x t`` tile at ``(r0, c0)`` of slice ``index`` along array ``axis`` of ``arr (..., K, J, I)``."""
    s = np.take(arr, index, axis=arr.ndim - 3 + axis)
    return s[..., r0:r0 + t, c0:c0 + t]


def library_columns(cfg: SliceLibraryConfig) -> dict[str, Column]:
    """The columns of the slice library (see the module docstring)."""
    t = cfg.tile
    return {"lr": Column((1, t, t), "float16"), "hr": Column((1, t, t), "float16"),
            "extras": Column((3, t, t), "float16"), "axis": Column((), "int8"), "thick": Column((), "int8"),
            "subject": Column((), "int16")}


def build_library(cfg: SliceLibraryConfig, writer: LibraryWriter, progress=None) -> dict[str, Any]:
    """Write the tiles of ``cfg`` into ``writer`` (deterministic from the
    config), one subject in memory at a time; returns what the library's
    ``meta.json`` records (subjects used and skipped)."""
    rng = np.random.default_rng([cfg.seed, LIBRARY_SALT])
    t, m = cfg.tile, cfg.margin
    total = len(cfg.subjects) * cfg.crops_per_subject
    skipped: list[str] = []
    used = []
    for n_s, (s, hr_vol) in enumerate(each_usable_subject(cfg.source, cfg.subjects, cfg.data_seed, skipped)):
        used.append(s)
        arr = np.asarray(hr_vol.array, np.float32)
        scale = robust_max(arr)
        starts = _crop_starts(brain_mask(arr), cfg.crop, cfg.crops_per_subject, rng)
        for n_c, start in enumerate(starts):
            block = sub_volume(hr_vol, tuple(start), [int(v) + cfg.crop for v in start])
            case = draw_case(cfg.degradation, rng)
            deg = degrade_block(block, hr_vol.grid, case, cfg.degradation, rng, scale)
            c = float(rng.uniform(1.0 - cfg.intensity_jitter, 1.0 + cfg.intensity_jitter)) / scale
            hr = np.asarray(block.array, np.float32) * c
            lr = deg["lr"] * c
            for _ in range(cfg.slices_per_crop):
                axis = int(rng.integers(0, 3))
                index = int(rng.integers(m, cfg.crop - m))
                r0, c0 = (int(v) for v in rng.integers(m, cfg.crop - m - t + 1, size=2))
                in_plane = [a for a in range(3) if a != axis]  # array axes of the tile's rows, columns
                writer.append(lr=_tile(lr, axis, index, r0, c0, t)[None], hr=_tile(hr, axis, index, r0, c0, t)[None],
                              extras=np.stack([_tile(deg["log_bias"], axis, index, r0, c0, t)]
                                              + [_tile(deg["warp"][a], axis, index, r0, c0, t) for a in in_plane]),
                              axis=axis, thick=int(case["kind"] == "thick"), subject=s)
            if progress is not None:
                done = n_s * cfg.crops_per_subject + n_c + 1
                progress("library", done / total, f"subject {s}, crop {n_c + 1}/{cfg.crops_per_subject}")
    return {"used_subjects": used, "skipped_subjects": len(skipped), "skipped": skipped}


def slice_library(cfg: SliceLibraryConfig, progress=None) -> Library:
    """The library of ``cfg`` (memory-mapped), from the user cache or built (and cached) now."""
    path = user_cache_dir(create=True) / "training" / "moediff" / f"slices_{cfg.key()}"
    return cached_library(path, library_columns(cfg), len(cfg.subjects) * cfg.crops_per_subject * cfg.slices_per_crop,
                          lambda w: build_library(cfg, w, progress), "MoEDiff-SR slice library")
