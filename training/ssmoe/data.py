"""Paired LR/HR patch libraries for SS-MoE from MUDI-like subjects.

A library is a fixed, deterministic set of patch pairs: for each chosen
(subject, acquisition row) the HR volume and its LR volume come from a source
(:mod:`.sources`: the embedded sample subjects or a Super MUDI folder), and patch positions are
drawn among those whose HR patch is at least ``min_foreground`` non-zero (the
reference's ">50 % non-background voxels" rule).  LR patch ``[p, p + lr)``
(KJI, LR voxels) pairs with HR patch ``[p * zoom, p * zoom + hr)``: the same
field of view, edges aligned.

Arrays (float32, network units = user units x ``intensity_factor``):
``lr (N, 1, *lr_patch)``, ``hr (N, 1, *hr_patch)``, ``params (N, 6)`` in
physical units (gx gy gz b TI TE), ``subject (N,)``, ``row (N,)``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from SuperResMoELib.nets.srunet import TASKS
from SuperResMoELib.io.paths import user_cache_dir

from ..cache import cache_key, cached_arrays, without_later_defaults
from .sources import open_source

log = logging.getLogger("superresmoe.training")

LIBRARY_VERSION = "v1"
#: Salt of the seed of a library's draws (rows, patch positions).
LIBRARY_SALT = 0x55


@dataclass(frozen=True)
class LibraryConfig:
    """Which pairs a library holds.

    Attributes:
        task: ``"aniso"`` or ``"iso"``.
        subjects: MUDI subject indices to draw from.
        volumes_per_subject: acquisition rows drawn (without replacement) per subject.
        patches_per_volume: patch positions drawn per (subject, row).
        min_foreground: minimum fraction of non-zero voxels in the HR patch.
        intensity_factor: network units = user units x this.
        seed: random seed (rows, positions).
        data_seed: seed of the sample-data generator.
        source: ``"sample"``, ``"mudi:<folder>"`` or ``"outgen-validation"`` (:mod:`.sources`).
        variation: the sample subjects' set (:data:`SuperResMoELib.sample_data.MUDI_VARIATIONS`).
        lr_blur: range ``(low, high)`` of the slice-profile blur: with
            probability ``lr_blur_probability`` a (subject, row) gets its LR
            from the HR blurred along each coarsened axis by a Gaussian of
            sigma uniform in ``[low, high] x factor`` (HR voxels) before the
            block average (a box profile widened by a Gaussian); otherwise
            the plain block average.  ``(0, 0)``: always the block average.
        lr_blur_probability: see ``lr_blur``.
        wide_subjects: sample subjects of the ``wide`` set drawn from as well
            (after ``subjects``; their ``subject`` column is
            :data:`WIDE_SUBJECT_OFFSET` + the index).
    """

    task: str
    subjects: tuple[int, ...]
    volumes_per_subject: int
    patches_per_volume: int
    min_foreground: float = 0.5
    intensity_factor: float = 1e-3
    seed: int = 0
    data_seed: int = 0
    source: str = "sample"
    variation: str = "standard"
    lr_blur: tuple[float, float] = (0.0, 0.0)
    lr_blur_probability: float = 0.0
    wide_subjects: tuple[int, ...] = ()

    def key(self) -> str:
        fields = without_later_defaults(asdict(self), _LATER_FIELDS)
        if self.source.startswith("outgen"):  # its images change with the set's version
            from ..outgen import OUTGEN_VERSION

            fields["outgen_version"] = OUTGEN_VERSION
        return cache_key({**fields, "version": LIBRARY_VERSION}, default=list)


#: Fields added after the first libraries were cached, with their defaults.
_LATER_FIELDS: dict[str, object] = {"variation": "standard", "lr_blur": (0.0, 0.0), "lr_blur_probability": 0.0,
                                    "wide_subjects": ()}
#: The ``subject`` column of a pair from a ``wide_subjects`` subject: this + its index.
WIDE_SUBJECT_OFFSET = 100


@dataclass
class PatchLibrary:
    """Patch pairs (see the module docstring for shapes)."""

    lr: np.ndarray
    hr: np.ndarray
    params: np.ndarray
    subject: np.ndarray
    row: np.ndarray

    def __len__(self) -> int:
        return int(self.lr.shape[0])

    def subset(self, index: np.ndarray) -> "PatchLibrary":
        return PatchLibrary(self.lr[index], self.hr[index], self.params[index], self.subject[index], self.row[index])

    @staticmethod
    def concat(*libs: "PatchLibrary") -> "PatchLibrary":
        """The pairs of ``libs``, one after the other (same task, so same patch shapes)."""
        return PatchLibrary(*(np.concatenate([getattr(lib, f) for lib in libs])
                              for f in ("lr", "hr", "params", "subject", "row")))


def valid_positions(mask: np.ndarray, task: str, min_foreground: float) -> np.ndarray:
    """``(M, 3)`` LR start positions (KJI) whose HR patch has at least
    ``min_foreground`` of its voxels inside ``mask`` (the HR brain mask)."""
    lr_patch, hr_patch, zoom = TASKS[task]
    lr_shape = tuple(n // z for n, z in zip(mask.shape, zoom))
    frac = ndimage.uniform_filter(mask.astype(np.float32), size=hr_patch, mode="constant",
                                  origin=tuple(-(h // 2) for h in hr_patch))
    # frac[x] = mean of mask[x : x + hr_patch] (window starting at x)
    starts = [np.arange(0, n - p + 1) for n, p in zip(lr_shape, lr_patch)]
    kk, jj, ii = np.meshgrid(*starts, indexing="ij")
    pos = np.stack([kk.ravel(), jj.ravel(), ii.ravel()], axis=1)
    hr_start = pos * np.asarray(zoom)
    ok = frac[hr_start[:, 0], hr_start[:, 1], hr_start[:, 2]] >= min_foreground - 1e-6
    return pos[ok]


def extract_pairs(lr: np.ndarray, hr: np.ndarray, positions: np.ndarray, task: str) -> tuple[np.ndarray, np.ndarray]:
    """Cut ``(P, 1, *lr_patch)`` and ``(P, 1, *hr_patch)`` pairs from one LR/HR volume pair."""
    lr_patch, hr_patch, zoom = TASKS[task]
    lo = np.stack([lr[k:k + lr_patch[0], j:j + lr_patch[1], i:i + lr_patch[2]] for k, j, i in positions])
    hi = np.stack([hr[k * zoom[0]:k * zoom[0] + hr_patch[0], j * zoom[1]:j * zoom[1] + hr_patch[1],
                      i * zoom[2]:i * zoom[2] + hr_patch[2]] for k, j, i in positions])
    return lo[:, None], hi[:, None]


def blurred_lr(hr: np.ndarray, task: str, sigma_fraction: float) -> np.ndarray:
    """The LR ``(K', J', I')`` of one HR volume ``(K, J, I)`` (whole blocks):
    blurred along each coarsened axis by a Gaussian of sigma
    ``sigma_fraction x factor`` HR voxels, then block-averaged (``LibraryConfig.lr_blur``)."""
    from SuperResMoELib.simulation.block_mean import block_mean

    _, _, zoom = TASKS[task]
    out = np.asarray(hr, np.float32)
    for axis, f in enumerate(zoom):
        if f > 1 and sigma_fraction > 0:
            out = ndimage.gaussian_filter1d(out, sigma_fraction * f, axis=axis, mode="nearest")
    return block_mean(out, tuple(zoom[::-1]))  # block_mean takes (i, j, k) factors


def _build(cfg: LibraryConfig, progress=None) -> PatchLibrary:
    rng = np.random.default_rng([cfg.seed, LIBRARY_SALT])
    lrs, hrs, params, subj, rows = [], [], [], [], []
    total = (len(cfg.subjects) + len(cfg.wide_subjects)) * cfg.volumes_per_subject
    done = 0
    first = open_source(cfg.source, cfg.data_seed, cfg.variation)
    table = first.table().values
    todo = [(first, s, s) for s in cfg.subjects]
    if cfg.wide_subjects:
        wide = open_source(cfg.source, cfg.data_seed, "wide")
        todo += [(wide, s, WIDE_SUBJECT_OFFSET + s) for s in cfg.wide_subjects]
    for source, s, label in todo:
        positions = valid_positions(source.mask(s), cfg.task, cfg.min_foreground)
        if len(positions) == 0:
            raise RuntimeError(f"subject {s} has no patch with {cfg.min_foreground:.0%} foreground")
        chosen = np.sort(rng.choice(len(table), size=cfg.volumes_per_subject, replace=False))
        for r in chosen:
            lr_vol, hr_c = source.pair(s, [int(r)], cfg.task)
            pick = positions[rng.choice(len(positions), size=cfg.patches_per_volume, replace=False)]
            lr_arr = np.asarray(lr_vol.array[0])
            if cfg.lr_blur_probability > 0:  # its own stream: the standard draws above stay as they were
                blur_rng = np.random.default_rng([cfg.seed, LIBRARY_SALT, 1, int(label), int(r)])
                if blur_rng.uniform() < cfg.lr_blur_probability:
                    lr_arr = blurred_lr(np.asarray(hr_c.array[0]), cfg.task, float(blur_rng.uniform(*cfg.lr_blur)))
            lo, hi = extract_pairs(lr_arr, np.asarray(hr_c.array[0]), pick, cfg.task)
            lrs.append(lo)
            hrs.append(hi)
            params.append(np.repeat(table[int(r)][None], len(pick), axis=0))
            subj.append(np.full(len(pick), label))
            rows.append(np.full(len(pick), int(r)))
            done += 1
            if progress is not None:
                progress("library", done / total, f"subject {label} row {int(r)}")
    f = np.float32(cfg.intensity_factor)
    return PatchLibrary(np.concatenate(lrs) * f, np.concatenate(hrs) * f, np.concatenate(params).astype(np.float32),
                        np.concatenate(subj).astype(np.int16), np.concatenate(rows).astype(np.int16))


def library_path(cfg: LibraryConfig) -> Path:
    return user_cache_dir(create=True) / "training" / "ssmoe" / f"library_{cfg.task}_{cfg.key()}.npz"


def patch_library(cfg: LibraryConfig, progress=None) -> PatchLibrary:
    """The library for ``cfg``, from the cache or built (and cached) now."""
    def build() -> dict[str, np.ndarray]:
        lib = _build(cfg, progress)
        return {"lr": lib.lr, "hr": lib.hr, "params": lib.params, "subject": lib.subject, "row": lib.row}

    z = cached_arrays(library_path(cfg), build, f"{cfg.task} patch library")
    return PatchLibrary(z["lr"], z["hr"], z["params"], z["subject"], z["row"])
