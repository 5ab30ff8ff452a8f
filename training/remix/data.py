"""REMIx training pairs: one patch library per expert bin.

For each training T1 subject (the embedded sample subjects, or the user's own
HR scans: a folder or a BIDS dataset, :mod:`training.hr_source`) and bin, ``crops`` cubes of ``crop``³ voxels are
cut around random brain voxels of the HR image (1 mm template grid); each
cube goes through its own drawn acquisition (:mod:`.degradation`) and back,
and the central ``patch``³ of the input (cubic back-interpolation) and of the
HR cube form a pair.  The margin ``(crop - patch) / 2`` keeps the cube's edges
(where the slice profile sees extended values) out of the pair.

Intensities: both images are divided by the subject's robust maximum
(:func:`SuperResMoELib.core.intensity.robust_max`, as at inference) and multiplied
by one random factor in ``1 ± intensity_jitter``, so the network learns to be
indifferent to the few-percent error of estimating that maximum on a blurred
input.

Content variation (beyond the paper; off by default, the shipped libraries
are unchanged): with probability ``hr_blur_probability`` a cube is first
blurred by a Gaussian of sigma uniform in ``hr_blur_mm`` (mm), and its
contrast is changed by ``x -> scale (x / scale)^gamma`` with ``gamma``
uniform in ``contrast_gamma``; both the target and the acquisition start from
that cube, so the network also sees anatomy smoother than the template's and
other tissue contrasts (a T1 made from tissue maps is smoother than the
template: ``scripts/outgen_diagnostics.py smoothness``).  These draws come
from their own random stream.  Columns (a memory-mapped :mod:`training.library` in the user cache,
built one subject at a time): ``lr``, ``hr`` ``(N, 1, p, p, p)`` float16,
``subject`` ``(N,)``, ``voxel_volume`` ``(N,)`` mm³, ``orientation`` ``(N,)``
(index into :data:`ORIENTATION_CODES`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from SuperResMoELib.core.intensity import robust_max
from SuperResMoELib.io.paths import user_cache_dir
from SuperResMoELib.evaluation.segmentation import brain_mask
from SuperResMoELib.core.geometry import sub_volume
from SuperResMoELib.core.volume import Volume

from ..cache import cache_key, without_later_defaults
from ..hr_source import each_usable_subject, source_key
from ..library import Column, Library, LibraryWriter, cached_library
from .degradation import DegradationConfig, degrade, draw_acquisition

LIBRARY_VERSION = "v1"
#: Salt of the seed of a bin library's draws (crops, acquisitions, jitter).
LIBRARY_SALT = 0x4E
ORIENTATION_CODES: tuple[str, ...] = ("axial", "coronal", "sagittal", "oblique")


@dataclass(frozen=True)
class RemixLibraryConfig:
    """Which pairs a bin's library holds (see the module docstring); built
    from the training config by :func:`training.remix.train.library_config`."""

    subjects: tuple[int, ...]
    crops: int
    crop: int
    patch: int
    degradation: DegradationConfig
    intensity_jitter: float
    seed: int
    data_seed: int
    #: ``"sample"``, a folder of HR T1 volumes or a BIDS dataset (:mod:`training.hr_source`).
    source: str = "sample"
    hr_blur_mm: tuple[float, float] = (0.0, 0.0)
    hr_blur_probability: float = 0.0
    contrast_gamma: tuple[float, float] = (1.0, 1.0)

    def __post_init__(self) -> None:
        if self.patch > self.crop:
            raise ValueError(f"patch ({self.patch}) must not exceed the crop ({self.crop})")

    def key(self, bin_mm3: int) -> str:
        d = {**without_later_defaults(asdict(self), _LATER_FIELDS), "bin": int(bin_mm3), "version": LIBRARY_VERSION}
        if self.source != "sample":  # the scans, their sizes and times are part of the key
            d["source"], d["files"] = str(Path(self.source).resolve()), source_key(self.source)
        else:
            d.pop("source")  # the sample libraries keep their cache names
        return cache_key(d)


#: Fields added after the first libraries were cached, with their defaults.
_LATER_FIELDS: dict[str, Any] = {"hr_blur_mm": (0.0, 0.0), "hr_blur_probability": 0.0, "contrast_gamma": (1.0, 1.0),
                                 "degradation.isotropic_probability": 0.0}


def vary_content(block: Volume, scale: float, sigma_mm: float, gamma: float) -> Volume:
    """``block`` blurred by a Gaussian of ``sigma_mm`` (0: not blurred) and
    remapped ``x -> scale (max(x, 0) / scale)^gamma`` (module docstring)."""
    from scipy import ndimage

    arr = np.asarray(block.array, np.float32)
    if sigma_mm > 0:
        arr = ndimage.gaussian_filter(arr, sigma_mm / np.asarray(block.spacing[::-1]), mode="nearest")
    if gamma != 1.0:
        arr = scale * np.power(np.clip(arr, 0.0, None) / scale, gamma)
    return block.with_array(arr.astype(np.float32))


def crop(volume: Volume, start_kji: Sequence[int], size: int) -> Volume:
    """The ``size``³ block of ``volume`` starting at array index ``start_kji``."""
    return sub_volume(volume, start_kji, [int(v) + size for v in start_kji])


def _crop_starts(mask: np.ndarray, size: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, 3)`` crop starts (KJI) whose centres are random brain voxels,
    clamped so the crop lies inside the volume."""
    brain = np.argwhere(mask)
    centres = brain[rng.integers(0, len(brain), size=n)]
    hi = np.asarray(mask.shape) - size
    return np.clip(centres - size // 2, 0, hi)


def library_columns(cfg: RemixLibraryConfig) -> dict[str, Column]:
    """The columns of a bin's library (see the module docstring)."""
    p = (1, cfg.patch, cfg.patch, cfg.patch)
    return {"lr": Column(p, "float16"), "hr": Column(p, "float16"), "subject": Column((), "int16"),
            "voxel_volume": Column((), "float32"), "orientation": Column((), "int8")}


def build_bin_library(cfg: RemixLibraryConfig, bin_mm3: int, writer: LibraryWriter, progress=None) -> dict[str, Any]:
    """Write the pairs of one bin into ``writer`` (deterministic from the
    config and the bin), one subject in memory at a time; returns what the
    library's ``meta.json`` records (subjects used and skipped)."""
    rng = np.random.default_rng([cfg.seed, LIBRARY_SALT, int(bin_mm3)])
    varied = cfg.hr_blur_probability > 0 or tuple(cfg.contrast_gamma) != (1.0, 1.0)
    content_rng = np.random.default_rng([cfg.seed, LIBRARY_SALT, int(bin_mm3), 1]) if varied else None
    total = len(cfg.subjects) * cfg.crops
    skipped: list[str] = []
    used = []
    for n_s, (s, hr) in enumerate(each_usable_subject(cfg.source, cfg.subjects, cfg.data_seed, skipped)):
        used.append(s)

        def report(n_c: int, s: int = s, n_s: int = n_s) -> None:
            if progress is not None:
                progress("library", (n_s * cfg.crops + n_c + 1) / total,
                         f"bin {bin_mm3} mm^3: subject {s}, crop {n_c + 1}/{cfg.crops}")

        _append_pairs(writer, hr, s, cfg.crops, cfg, bin_mm3, rng, content_rng, cfg.intensity_jitter, report)
    return {"used_subjects": used, "skipped_subjects": len(skipped), "skipped": skipped}


def _append_pairs(writer: LibraryWriter, hr: Volume, subject: int, crops: int, cfg: RemixLibraryConfig,
                  bin_mm3: int, rng: np.random.Generator, content_rng: np.random.Generator | None,
                  jitter: float, report) -> None:
    """``crops`` pairs of one HR subject into ``writer`` (module docstring);
    ``report(n)`` after pair ``n``."""
    m = (cfg.crop - cfg.patch) // 2
    sl = (slice(m, m + cfg.patch),) * 3
    arr = np.asarray(hr.array)
    scale = robust_max(arr)
    starts = _crop_starts(brain_mask(arr), cfg.crop, crops, rng)
    for n_c, start in enumerate(starts):
        block = crop(hr, tuple(start), cfg.crop)
        if content_rng is not None:
            blur = content_rng.uniform() < cfg.hr_blur_probability
            sigma = float(content_rng.uniform(*cfg.hr_blur_mm))
            block = vary_content(block, scale, sigma if blur else 0.0,
                                 float(content_rng.uniform(*cfg.contrast_gamma)))
        lr_grid, info = draw_acquisition(block.grid, bin_mm3, cfg.degradation, rng)
        _, back = degrade(block, lr_grid, info, cfg.degradation, rng, noise_scale=scale)
        c = float(rng.uniform(1.0 - jitter, 1.0 + jitter)) / scale
        writer.append(lr=(np.asarray(back.array)[sl] * c)[None], hr=(np.asarray(block.array)[sl] * c)[None],
                      subject=subject, voxel_volume=info["voxel_volume_mm3"],
                      orientation=ORIENTATION_CODES.index(info["orientation"]))
        report(n_c)


#: Salt of the seed of a validation library's draws.
VALIDATION_SALT = 0x56


def validation_key(cfg: RemixLibraryConfig, bin_mm3: int, crops: int) -> str:
    """The cache key of :func:`validation_library`: what its pairs depend on."""
    return cache_key({"degradation": asdict(cfg.degradation), "crop": cfg.crop, "patch": cfg.patch, "seed": cfg.seed,
                      "crops": int(crops), "bin": int(bin_mm3), "version": LIBRARY_VERSION, "head": "t1_validation"})


def validation_library(cfg: RemixLibraryConfig, bin_mm3: int, crops: int, progress=None) -> Library:
    """``crops`` pairs of ``bin_mm3`` from the out-of-generator T1 *validation*
    head (:data:`training.outgen.t1.T1_SETS` ``["validation"]``: not a sample
    subject, never a reported test), through the same drawn acquisitions as
    training, without content variation or intensity jitter: model selection
    outside the generator (``library.validation: "outgen"``)."""
    from ..outgen.t1 import t1_head

    def build(writer: LibraryWriter) -> dict[str, Any]:
        rng = np.random.default_rng([cfg.seed, VALIDATION_SALT, int(bin_mm3)])

        def report(n_c: int) -> None:
            if progress is not None:
                progress("library", (n_c + 1) / crops, f"validation bin {bin_mm3} mm^3: crop {n_c + 1}/{crops}")

        _append_pairs(writer, t1_head(None, "validation"), 0, crops, cfg, bin_mm3, rng, None, 0.0, report)
        return {"head": "outgen t1_validation"}

    name = f"validation_bin{bin_mm3}_{validation_key(cfg, bin_mm3, crops)}"
    path = user_cache_dir(create=True) / "training" / "remix" / name
    return cached_library(path, library_columns(cfg), crops, build, f"REMIx {bin_mm3} mm^3 validation library")


def bin_library(cfg: RemixLibraryConfig, bin_mm3: int, progress=None) -> Library:
    """The library of ``bin_mm3`` (memory-mapped), from the user cache or built (and cached) now."""
    path = user_cache_dir(create=True) / "training" / "remix" / f"library_bin{bin_mm3}_{cfg.key(bin_mm3)}"
    return cached_library(path, library_columns(cfg), len(cfg.subjects) * cfg.crops,
                          lambda w: build_bin_library(cfg, bin_mm3, w, progress), f"REMIx {bin_mm3} mm^3 library")
