"""Embedded sample data, built offline from the MNI152 template that ships with nilearn.

No scan can be downloaded, so every demo, test and bundled checkpoint is built
from four images inside the ``nilearn`` wheel: the MNI152 2009 T1 template
(skull-stripped, rescaled by nilearn to ``[0, 1]``), its GM and WM probability
maps and its brain mask (197 x 233 x 189 voxels of 1 mm, RAS axis-aligned).

Two kinds of data are derived from them:

* **T1 pairs** (REMIx, MoEDiff-SR): :func:`t1_subject` turns the template into
  distinct "subjects" (smooth diffeomorphic warp + smooth multiplicative bias +
  small global contrast jitter); :func:`t1_pair` degrades one into an LR
  volume with :func:`~SuperResMoELib.degrade.simulate_low_resolution` plus
  Rician noise.
* **MUDI-like qMRI** (SS-MoE): :func:`mudi_subject` maps warped tissue
  fractions to PD, T1, T2*, ADC (and FA / principal direction in WM) with the
  literature values of :data:`TISSUE_PARAMETERS`, at 2.5 mm; its
  :meth:`MudiSubject.signal` evaluates the diffusion-relaxometry signal for
  rows of the 1344-row :func:`mudi_acquisition_table` (Super MUDI marginals),
  :meth:`MudiSubject.hr` adds Rician noise, :meth:`MudiSubject.lr` block-averages
  to the two Super MUDI tasks (2.5 x 2.5 x 5 mm and 5 mm isotropic).

Randomness: every random quantity comes from its own
``numpy.random.SeedSequence([seed, subject, stream, ...])`` (see
:data:`RANDOM_STREAMS`), so results are identical from run to run (bit for
bit on one machine; BLAS differences between machines may change last bits),
and one quantity (e.g. the noise of one MUDI row) does not
depend on which others were asked for.

Caching: warped T1 subjects and MUDI parameter maps are stored as ``.npz`` in
``cache_dir() / "sample_data" / SAMPLE_DATA_VERSION``; the file name carries a
hash of every generation constant, the seed and the subject, so a change of a
constant never returns stale data.  A failed or unwritable cache only costs
time (a warning is logged), never correctness.  The first generation of each
item is logged (logger ``superresmoe.sample_data``) with its duration.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from SuperResMoELib.io.atomic import atomic_path
from SuperResMoELib.io.paths import user_cache_dir
from SuperResMoELib.core.errors import InputError, SuperResMoEError
from SuperResMoELib.core.geometry import scaled_grid
from SuperResMoELib.core.intensity import robust_max
from SuperResMoELib.core.tasks import SR_TASKS
from SuperResMoELib.core.volume import AcquisitionTable, Grid, Volume

logger = logging.getLogger("superresmoe.sample_data")

# ===================================================================== constants
#: Bump when anything about generation changes in a way the constants below
#: do not capture (it names the cache folder and enters every cache key).
SAMPLE_DATA_VERSION: str = "v1"

#: Number of T1 "subjects" in the standard set (0 = the template itself).
T1_SUBJECTS: int = 5
#: The T1 subject held out for evaluation (subjects 0..3 train).
T1_HELD_OUT: int = 4

#: Number of MUDI-like subjects in the standard set; 0..3 train, 4 held out.
MUDI_SUBJECTS: int = 5
MUDI_HELD_OUT: int = 4

# --- subject warps and intensity perturbations (template index space = mm) ---
#: Spacing (mm) of the coarse lattice on which warps and bias fields live.
FIELD_CONTROL_SPACING_MM: float = 4.0
#: Gaussian smoothing (sigma, mm) of the random stationary velocity field.
WARP_SMOOTHNESS_MM: float = 20.0
#: Largest velocity magnitude (mm); the displacement after integration is of
#: the same size (a few mm).
WARP_MAX_MM: float = 4.0
#: Scaling-and-squaring steps integrating the velocity field into a
#: diffeomorphic displacement (exp of the field).
WARP_SQUARING_STEPS: int = 6
#: Gaussian smoothing (sigma, mm) of the log bias field of T1 subjects.
BIAS_SMOOTHNESS_MM: float = 40.0
#: Largest ``|log gain|`` of the T1 bias field (0.1 = about +-10 %).
BIAS_STRENGTH: float = 0.10
#: T1 subjects: intensity -> gain * intensity ** gamma with gamma uniform in
#: ``1 +- CONTRAST_JITTER`` and gain uniform in ``1 +- GAIN_JITTER``.
CONTRAST_JITTER: float = 0.08
GAIN_JITTER: float = 0.05

#: Percentile of the positive voxels used as the "robust max" of an image.
ROBUST_MAX_PERCENTILE: float = 99.5

# --- MUDI-like acquisition protocol ---
#: Repetition time (ms), constant over the protocol.
MUDI_TR_MS: float = 7500.0
#: b-values (s/mm^2); 0 is the non-diffusion-weighted shell.
MUDI_B_VALUES: tuple[float, ...] = (0.0, 500.0, 1000.0, 2000.0, 3000.0)
#: Echo times (ms).
MUDI_TE_MS: tuple[float, ...] = (80.0, 105.0, 130.0)
#: The 28 inversion times (ms): evenly spaced from 20 to 7322.7 ms (one
#: decimal), as the slice-interleaved ZEBRA inversion recovery produces.
MUDI_TI_MS: tuple[float, ...] = tuple(float(x) for x in np.round(np.linspace(20.0, 7322.7, 28), 1))
#: Number of distinct unit gradient directions of the diffusion-weighted rows.
MUDI_N_DIRECTIONS: int = 105
#: Rows per (TI, TE) block: 1 b=0 row + 15 diffusion-weighted rows.
MUDI_ROWS_PER_BLOCK: int = 16

# --- MUDI-like subjects ---
#: Isotropic HR voxel size (mm), as Super MUDI.
MUDI_SPACING_MM: float = 2.5
#: Margin (mm) around the template's brain bounding box on every side.
MUDI_MARGIN_MM: int = 5
#: Signal = MUDI_SIGNAL_SCALE * PD * (relaxation and diffusion factors):
#: puts b=0, long-TI, TE=80 ms white matter at about 620 and CSF at about 2800,
#: the raw scanner-unit range of Super MUDI.
MUDI_SIGNAL_SCALE: float = 4000.0
#: Rician noise sigma as a fraction of the reference white-matter signal
#: (b=0, longest TI, shortest TE, literature WM values): sigma ~ 12.
MUDI_NOISE_FRACTION: float = 0.02
#: Per-subject multiplicative jitter (standard deviation, clipped at 2 SD) of
#: every tissue parameter.
MUDI_PARAM_JITTER: float = 0.03
#: A 2.5 mm voxel is "brain" (signal and noise) when its tissue fraction
#: (GM + WM + CSF) reaches this; elsewhere everything is exactly 0, as in the
#: brain-masked Super MUDI data ("non-background" patches are then well defined).
MUDI_MASK_THRESHOLD: float = 0.5
#: Structure-tensor scales (in 2.5 mm voxels) for the WM principal direction.
MUDI_GRADIENT_SIGMA: float = 1.0
MUDI_TENSOR_SIGMA: float = 2.0
#: Super MUDI tasks -> integer block-average factors (i, j, k).
MUDI_TASKS: dict[str, tuple[int, int, int]] = {n: t.factors for n, t in SR_TASKS.items()}

#: Tissue parameters at 3 T. PD is relative (CSF = 1), T1 / T2* in ms, ADC
#: (mean diffusivity) in mm^2/s, FA of a coherent WM voxel.
TISSUE_PARAMETERS: dict[str, dict[str, float]] = {
    "gm": {"PD": 0.80, "T1": 1400.0, "T2s": 66.0, "ADC": 0.80e-3, "FA": 0.0},
    "wm": {"PD": 0.70, "T1": 900.0, "T2s": 53.0, "ADC": 0.70e-3, "FA": 0.45},
    "csf": {"PD": 1.00, "T1": 4000.0, "T2s": 500.0, "ADC": 3.00e-3, "FA": 0.0},
}

#: Where :data:`TISSUE_PARAMETERS` come from (representative values, rounded).
TISSUE_PARAMETER_NOTES: str = """\
T1 at 3 T: Wansapura et al., JMRI 9:531 (1999): GM 1331 ms, WM 832 ms; Stanisz et al.,
  MRM 54:507 (2005): GM 1820 ms, WM 1084 ms; Lu et al., JMRI 22:13 (2005): CSF ~4000 ms
  (4100-4300). Chosen: GM 1400, WM 900, CSF 4000 ms.
T2* at 3 T: Peters et al., MRI 25:748 (2007): frontal GM 66 ms, WM 53 ms; CSF T2* is long
  (several hundred ms, limited by field inhomogeneity): 500 ms.
ADC (mean diffusivity): GM ~0.8e-3, WM ~0.7e-3 mm^2/s (e.g. Pierpaoli et al., Radiology
  201:637, 1996); CSF = free water at 37 C, 3.0e-3 mm^2/s.
PD (water content relative to CSF): GM 0.8, WM 0.7, CSF 1.0 (as in the BrainWeb
  phantom, Kwan et al. 1999; water content GM ~0.8, WM ~0.7).
FA of coherent WM at 2.5 mm: 0.45 (typical deep-WM FA 0.4-0.7; partial volume and
  crossing fibres lower it). GM and CSF are isotropic.
Mixing: PD and ADC are fraction-weighted means; relaxation *rates* (1/T1, 1/T2*) are
  fraction-weighted means (fast exchange); weights = tissue fractions renormalised to 1.
"""

#: Independent random streams (third SeedSequence word).
RANDOM_STREAMS: dict[str, int] = {
    "t1_warp": 1,
    "t1_bias": 2,
    "t1_contrast": 3,
    "t1_pair": 4,
    "mudi_warp": 11,
    "mudi_params": 12,
    "mudi_noise": 13,
    "mudi_table": 14,
}

#: Sample data kinds :func:`write_sample_data` knows.
SAMPLE_KINDS: tuple[str, ...] = ("t1", "mudi", "all")


# ===================================================================== helpers
def cache_dir() -> Path:
    """The user cache folder (created on demand): ``$SUPERRESMOE_CACHE`` if set,
    else ``$XDG_CACHE_HOME/superresmoe``, else ``~/.cache/superresmoe``."""
    return user_cache_dir(create=True)


def _check_index(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 0:
        raise InputError(f"{what} must be a non-negative integer, got {value!r}")
    return int(value)


def _rng(seed: int, subject: int, stream: str, *extra: int) -> np.random.Generator:
    words = [int(seed), int(subject), RANDOM_STREAMS[stream], *[int(x) for x in extra]]
    return np.random.default_rng(np.random.SeedSequence(words))


def _robust_max(array: np.ndarray) -> float:
    """:data:`ROBUST_MAX_PERCENTILE` of the positive voxels (0 for an empty image)."""
    return robust_max(array, ROBUST_MAX_PERCENTILE)


def _nilearn_version() -> str:
    """The installed nilearn version (its template files could change with it)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nilearn")
    except PackageNotFoundError:  # pragma: no cover - nilearn is a dependency
        return "unknown"


def _generation_constants() -> dict:
    """Everything that determines generated arrays (enters every cache key)."""
    return {
        "version": SAMPLE_DATA_VERSION,
        "nilearn": _nilearn_version(),
        "field": [FIELD_CONTROL_SPACING_MM, WARP_SMOOTHNESS_MM, WARP_MAX_MM, WARP_SQUARING_STEPS],
        "bias": [BIAS_SMOOTHNESS_MM, BIAS_STRENGTH, CONTRAST_JITTER, GAIN_JITTER],
        "mudi": [
            MUDI_SPACING_MM,
            MUDI_MARGIN_MM,
            MUDI_PARAM_JITTER,
            MUDI_MASK_THRESHOLD,
            MUDI_GRADIENT_SIGMA,
            MUDI_TENSOR_SIGMA,
        ],
        "tissues": TISSUE_PARAMETERS,
        "streams": RANDOM_STREAMS,
    }


def _cache_key(kind: str, subject: int, seed: int) -> str:
    text = json.dumps(
        {"kind": kind, "subject": subject, "seed": seed, **_generation_constants()}, sort_keys=True
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _cache_file(kind: str, subject: int, seed: int) -> tuple[Path | None, str]:
    key = _cache_key(kind, subject, seed)
    try:
        folder = cache_dir() / "sample_data" / SAMPLE_DATA_VERSION
    except OSError as exc:
        logger.warning("sample data cache unavailable (%s); generating without caching", exc)
        return None, key
    return folder / f"{kind}_subject{subject}_seed{seed}_{key}.npz", key


def _load_cached(path: Path | None, key: str) -> dict[str, np.ndarray] | None:
    if path is None or not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        logger.warning("ignoring unreadable sample data cache %s (%s)", path, exc)
        return None
    if str(arrays.pop("cache_key", "")) != key:
        logger.warning("ignoring sample data cache %s: key mismatch", path)
        return None
    return arrays


def _cached_grid_ok(cached: dict[str, np.ndarray], name: str) -> bool:
    """A cache entry holds array ``name`` (3D) and a valid 4x4 ``ijk_to_ras``."""
    m = cached.get("ijk_to_ras")
    a = cached.get(name)
    return (
        a is not None and a.ndim == 3 and m is not None and m.shape == (4, 4)
        and bool(np.all(np.isfinite(m))) and abs(np.linalg.det(m[:3, :3])) > 0
    )


def _save_cached(path: Path | None, key: str, arrays: dict[str, np.ndarray]) -> None:
    if path is None:
        return
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, cache_key=np.array(key), **arrays)
    except OSError as exc:
        logger.warning("could not write sample data cache %s (%s)", path, exc)


# ============================================================ template images
@functools.lru_cache(maxsize=1)
def _template_arrays() -> dict[str, np.ndarray]:
    """The nilearn MNI152 images as read-only KJI float32 arrays (+ ``affine``)."""
    try:
        from nilearn import datasets
    except ImportError as exc:  # pragma: no cover - nilearn is a dependency
        raise SuperResMoEError(
            "the embedded sample data needs nilearn (pip install nilearn)"
        ) from exc
    loaders = {
        "t1": datasets.load_mni152_template,
        "gm": datasets.load_mni152_gm_template,
        "wm": datasets.load_mni152_wm_template,
        "mask": datasets.load_mni152_brain_mask,
    }
    out: dict[str, np.ndarray] = {}
    affine = None
    for name, loader in loaders.items():
        img = loader(resolution=1)
        data = np.asarray(img.get_fdata(dtype=np.float32), dtype=np.float32)
        out[name] = np.ascontiguousarray(data.transpose(2, 1, 0))  # (i,j,k) -> (k,j,i)
        if affine is None:
            affine = np.asarray(img.affine, dtype=np.float64)
        elif not np.allclose(affine, img.affine):  # pragma: no cover - nilearn invariant
            raise SuperResMoEError(f"nilearn MNI152 {name} image is not on the template grid")
    # Tissue fractions: GM + WM <= 1, CSF = brain mask - GM - WM, clipped.
    gm = np.clip(out["gm"], 0.0, 1.0)
    wm = np.clip(out["wm"], 0.0, 1.0)
    total = gm + wm
    over = total > 1.0
    gm[over] /= total[over]
    wm[over] /= total[over]
    out["gm"], out["wm"] = gm, wm
    out["csf"] = np.clip((out["mask"] > 0).astype(np.float32) - gm - wm, 0.0, 1.0)
    out["affine"] = affine  # type: ignore[assignment]
    for a in out.values():
        a.flags.writeable = False
    return out


def mni_template() -> Volume:
    """The MNI152 2009 T1 template (skull-stripped, nilearn's ``[0, 1]`` scale),
    float32, 1 mm, shape ``(189, 233, 197)`` (KJI), the nilearn affine as IJK->RAS."""
    t = _template_arrays()
    return Volume(t["t1"], t["affine"], name="mni152_t1", meta={"source": "nilearn MNI152 2009"})


def tissue_maps() -> dict[str, Volume]:
    """``{"gm", "wm", "csf"}`` tissue fraction maps on the template grid (float32).

    GM and WM are nilearn's MNI152 probability maps (rescaled where they sum
    above 1); CSF = brain mask - GM - WM clipped to ``[0, 1]``, so the three
    sum to at most 1 (to 1 inside the brain mask).
    """
    t = _template_arrays()
    return {name: Volume(t[name], t["affine"], name=f"mni152_{name}") for name in ("gm", "wm", "csf")}


# ======================================================== smooth random fields
def _coarse_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """Coarse lattice (spacing :data:`FIELD_CONTROL_SPACING_MM`) covering a 1 mm grid."""
    return tuple(math.ceil((n - 1) / FIELD_CONTROL_SPACING_MM) + 1 for n in shape)


def _smooth_noise(rng: np.random.Generator, shape: Sequence[int], n: int, sigma_mm: float) -> np.ndarray:
    """``(n, *shape)`` Gaussian-smoothed white noise on the coarse lattice, zero mean."""
    sigma = sigma_mm / FIELD_CONTROL_SPACING_MM
    noise = rng.standard_normal((n, *shape))
    out = np.stack([ndimage.gaussian_filter(c, sigma, mode="reflect") for c in noise])
    return out - out.mean(axis=tuple(range(1, out.ndim)), keepdims=True)


def _warp_field(seed: int, subject: int, stream: str, shape: Sequence[int]) -> np.ndarray:
    """A smooth diffeomorphic displacement on the coarse lattice of a 1 mm grid.

    A stationary velocity field (smoothed noise, largest magnitude
    :data:`WARP_MAX_MM`) is integrated by scaling and squaring
    (:data:`WARP_SQUARING_STEPS`), ``u <- u + u o (id + u)``.

    Returns:
        ``(3, *coarse_shape)`` float64 displacement in mm along the (k, j, i)
        array axes (= voxels of the 1 mm grid).
    """
    coarse = _coarse_shape(shape)
    v = _smooth_noise(_rng(seed, subject, stream), coarse, 3, WARP_SMOOTHNESS_MM)
    peak = float(np.sqrt((v**2).sum(axis=0)).max())
    u = v * (WARP_MAX_MM / peak / 2**WARP_SQUARING_STEPS)
    points = np.indices(coarse, dtype=np.float64)
    for _ in range(WARP_SQUARING_STEPS):
        at = points + u / FIELD_CONTROL_SPACING_MM
        u = u + np.stack([ndimage.map_coordinates(c, at, order=1, mode="nearest") for c in u])
    return u


def _bias_log_field(seed: int, subject: int, shape: Sequence[int]) -> np.ndarray:
    """``(*coarse_shape)`` smooth log gain, largest magnitude :data:`BIAS_STRENGTH`."""
    f = _smooth_noise(_rng(seed, subject, "t1_bias"), _coarse_shape(shape), 1, BIAS_SMOOTHNESS_MM)[0]
    return f * (BIAS_STRENGTH / float(np.abs(f).max()))


def _linear_weights(start: int, n: int, n_coarse: int) -> np.ndarray:
    """``(n, n_coarse)`` linear-interpolation weights from the coarse lattice to
    1 mm indices ``start .. start + n - 1`` (clamped at the lattice ends)."""
    c = np.clip((start + np.arange(n, dtype=np.float64)) / FIELD_CONTROL_SPACING_MM, 0.0, n_coarse - 1)
    i0 = np.minimum(np.floor(c).astype(np.int64), max(n_coarse - 2, 0))
    frac = c - i0
    w = np.zeros((n, n_coarse))
    rows = np.arange(n)
    w[rows, i0] = 1.0 - frac
    if n_coarse > 1:
        w[rows, i0 + 1] += frac
    return w


class _CoarseSampler:
    """Trilinear evaluation of a coarse field ``(C, *coarse)`` on slabs of a 1 mm
    box region, done separably: the field is interpolated along j and i once
    for the whole region, then each slab only mixes two coarse k planes."""

    def __init__(self, field: np.ndarray, start: Sequence[int], shape: Sequence[int]):
        coarse = field.shape[1:]
        wk, wj, wi = (_linear_weights(int(s), int(n), int(c)) for s, n, c in zip(start, shape, coarse))
        f = np.asarray(field, dtype=np.float64)
        f = np.einsum("ckji,Ii->ckjI", f, wi, optimize=True)
        self.partial = np.ascontiguousarray(np.einsum("ckjI,Jj->ckJI", f, wj, optimize=True))
        self.wk = wk

    def __call__(self, k0: int, k1: int) -> np.ndarray:
        """``(C, k1 - k0, J, I)`` values on region slab ``k0:k1``."""
        c, _, n_j, n_i = self.partial.shape
        out = np.zeros((c, k1 - k0, n_j, n_i))
        for n, w in enumerate(self.wk[k0:k1]):
            for k in np.flatnonzero(w):
                out[:, n] += w[k] * self.partial[:, k]
        return out


def _region_points(start: Sequence[int], shape: Sequence[int], k0: int, k1: int) -> np.ndarray:
    """``(3, k1-k0, J, I)`` 1 mm index coordinates (k, j, i) of slab ``k0:k1`` of a region."""
    pts = np.indices((k1 - k0, shape[1], shape[2]), dtype=np.float64)
    pts[0] += start[0] + k0
    pts[1] += start[1]
    pts[2] += start[2]
    return pts


#: Region slabs processed at once when warping (bounds temporary memory).
_SLAB: int = 16


def _warp_region(
    images: Sequence[np.ndarray],
    orders: Sequence[int],
    displacement: np.ndarray,
    start: Sequence[int],
    shape: Sequence[int],
    extra: Callable[[int, int], None] | None = None,
) -> list[np.ndarray]:
    """Pull-back warp ``out(x) = image(x + u(x))`` of 1 mm images over a box region.

    Args:
        images: KJI arrays on the template grid.
        orders: spline order per image (3: cubic B-spline with prefilter; 1: linear).
        displacement: coarse field from :func:`_warp_field`.
        start: first voxel (k, j, i) of the region in template indices (may be
            negative / beyond the template: edges are extended).
        shape: region shape (K, J, I).
        extra: optional ``extra(k0, k1)`` hook, called per slab.

    Returns:
        float32 arrays of ``shape``.
    """
    coeffs = [
        ndimage.spline_filter(img, order=3, mode="nearest") if o == 3 else np.asarray(img, np.float32)
        for img, o in zip(images, orders)
    ]
    sampler = _CoarseSampler(displacement, start, shape)
    outs = [np.empty(tuple(shape), dtype=np.float32) for _ in images]
    for k0 in range(0, shape[0], _SLAB):
        k1 = min(shape[0], k0 + _SLAB)
        src = _region_points(start, shape, k0, k1) + sampler(k0, k1)
        for c, o, out in zip(coeffs, orders, outs):
            ndimage.map_coordinates(c, src, output=out[k0:k1], order=o, mode="nearest", prefilter=False)
        if extra is not None:
            extra(k0, k1)
    return outs


# ================================================================= T1 subjects
def _t1_region() -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Bounding box of the template's non-zero voxels, dilated by the warp."""
    t1 = _template_arrays()["t1"]
    pad = math.ceil(WARP_MAX_MM) + 2
    lo, hi = [], []
    for axis, n in enumerate(t1.shape):
        other = tuple(a for a in range(3) if a != axis)
        nz = np.nonzero(t1.any(axis=other))[0]
        lo.append(max(0, int(nz[0]) - pad))
        hi.append(min(n, int(nz[-1]) + 1 + pad))
    return tuple(lo), tuple(h - l for l, h in zip(lo, hi))  # type: ignore[return-value]


def _generate_t1_subject(subject: int, seed: int) -> np.ndarray:
    t = _template_arrays()
    shape = t["t1"].shape
    start, region = _t1_region()
    u = _warp_field(seed, subject, "t1_warp", shape)
    log_bias = _bias_log_field(seed, subject, shape)
    gain_region = np.empty(region, dtype=np.float32)
    bias_sampler = _CoarseSampler(log_bias[None], start, region)

    def bias(k0: int, k1: int) -> None:
        gain_region[k0:k1] = np.exp(bias_sampler(k0, k1)[0])

    (warped,) = _warp_region([t["t1"]], [3], u, start, region, extra=bias)
    np.clip(warped, 0.0, None, out=warped)
    rng = _rng(seed, subject, "t1_contrast")
    gamma = 1.0 + CONTRAST_JITTER * float(rng.uniform(-1.0, 1.0))
    gain = 1.0 + GAIN_JITTER * float(rng.uniform(-1.0, 1.0))
    warped = (gain * np.power(warped, gamma) * gain_region).astype(np.float32)
    out = np.zeros(shape, dtype=np.float32)
    out[start[0] : start[0] + region[0], start[1] : start[1] + region[1], start[2] : start[2] + region[2]] = warped
    return out


def t1_subject(subject: int, seed: int = 0) -> Volume:
    """A T1 "subject" on the template grid (float32, template intensity scale).

    Subject 0 is the template itself (whatever ``seed``).  Subject ``s >= 1``
    is the template pulled back through a smooth diffeomorphic warp
    (:func:`_warp_field`: max velocity :data:`WARP_MAX_MM` mm, smoothness
    :data:`WARP_SMOOTHNESS_MM` mm; cubic interpolation), raised to a power
    ``gamma`` and scaled by a ``gain`` (global contrast jitter, see
    :data:`CONTRAST_JITTER`) and multiplied by a smooth bias field
    (``|log gain| <= BIAS_STRENGTH``).  Deterministic from ``(seed, subject)``;
    cached on disk.  ``meta["sample_data"]`` records the seed, subject,
    generation seconds and whether the cache was hit.
    """
    subject = _check_index(subject, "T1 subject")
    seed = _check_index(seed, "seed")
    if subject == 0:
        t = _template_arrays()
        return Volume(t["t1"], t["affine"], name="t1_subject0",
                      meta={"sample_data": {"subject": 0, "seed": seed, "seconds": 0.0, "cache": "template"}})
    t0 = time.perf_counter()
    path, key = _cache_file("t1", subject, seed)
    cached = _load_cached(path, key)
    if cached is not None and _cached_grid_ok(cached, "t1"):
        # a cache hit does not even load the template (the grid is stored too)
        arr, affine, status = cached["t1"], cached["ijk_to_ras"], "hit"
        logger.debug("T1 subject %d (seed %d) loaded from %s", subject, seed, path)
    else:
        arr, affine, status = _generate_t1_subject(subject, seed), _template_arrays()["affine"], "miss"
        _save_cached(path, key, {"t1": arr, "ijk_to_ras": affine})
    seconds = time.perf_counter() - t0
    if status == "miss":
        logger.info("generated T1 subject %d (seed %d) in %.2f s (cache: %s)", subject, seed, seconds, path)
    return Volume(arr, affine, name=f"t1_subject{subject}",
                  meta={"sample_data": {"subject": subject, "seed": seed, "seconds": seconds, "cache": status}})


def t1_pair(
    subject: int = 0,
    lr_spacing: Sequence[float] = (1.0, 1.0, 4.0),
    seed: int = 0,
    method: str = "gaussian",
    noise_sigma_fraction: float = 0.01,
) -> tuple[Volume, Volume]:
    """An (LR, HR) T1 pair for SR training and evaluation.

    HR = :func:`t1_subject` ``(subject, seed)``; LR =
    :func:`~SuperResMoELib.degrade.simulate_low_resolution` with integer
    factors ``lr_spacing / 1 mm`` (IJK order; ``method`` = ``"gaussian"``,
    ``"boxcar"`` or ``"kspace"``), then Rician noise of sigma
    ``noise_sigma_fraction * robust max(HR)`` (the
    :data:`ROBUST_MAX_PERCENTILE` of the HR brain voxels; 0 = no noise).

    Returns:
        ``(lr, hr)``: ``hr`` is the HR cropped to whole LR voxels, so
        ``scaled_grid(lr.grid, factors).same_as(hr.grid)``.

    Raises:
        InputError: a spacing that is not a whole multiple (>= 1) of 1 mm, a
        negative noise fraction, bad subject / seed / method.
    """
    from SuperResMoELib.simulation.degrade import rician_noise, simulate_low_resolution

    hr = t1_subject(subject, seed)
    spacing = np.asarray(lr_spacing, dtype=np.float64).ravel()
    if spacing.size == 1:
        spacing = np.repeat(spacing, 3)
    if spacing.size != 3 or not np.all(np.isfinite(spacing)):
        raise InputError(f"LR spacing must be one or three numbers (i, j, k) in mm, got {lr_spacing!r}")
    ratio = spacing / hr.spacing
    factors = np.round(ratio)
    if np.any(factors < 1) or np.any(np.abs(ratio - factors) > 1e-6):
        raise InputError(
            f"LR spacing must be whole multiples of the 1 mm template spacing, got {list(spacing)}"
        )
    fraction = float(noise_sigma_fraction)
    if not math.isfinite(fraction) or fraction < 0:
        raise InputError(f"noise_sigma_fraction must be >= 0, got {noise_sigma_fraction!r}")
    rng = _rng(int(seed), int(subject), "t1_pair")
    f = tuple(int(x) for x in factors)
    lr, hr_c = simulate_low_resolution(hr, f, method=method, noise_sigma=0.0, rng=rng)
    sigma = fraction * _robust_max(hr_c.array)
    if sigma > 0:
        lr = rician_noise(lr, sigma, rng)
    info = {"subject": int(subject), "seed": int(seed), "factors": f, "method": method,
            "noise_sigma": sigma, "lr_spacing_mm": tuple(float(x) for x in spacing)}
    lr = Volume(lr.array, lr.ijk_to_ras, name=f"t1_subject{subject}_lr", meta={"sample_data": info})
    hr_c = Volume(hr_c.array, hr_c.ijk_to_ras, name=f"t1_subject{subject}_hr", meta=dict(hr.meta))
    return lr, hr_c


# ============================================================ MUDI protocol
def _unit_directions(n: int) -> np.ndarray:
    """``(n, 3)`` near-uniform unit vectors on a hemisphere (Fibonacci lattice)."""
    golden = math.pi * (3.0 - math.sqrt(5.0))
    idx = np.arange(n, dtype=np.float64)
    z = 1.0 - (idx + 0.5) / n  # (0, 1]: upper hemisphere (directions are antipodal)
    r = np.sqrt(1.0 - z * z)
    phi = golden * idx
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def mudi_acquisition_table(seed: int = 0) -> AcquisitionTable:
    """A 1344-row diffusion-relaxometry protocol with the Super MUDI marginals.

    Construction (deterministic from ``seed``):

    * 84 blocks, one per (TE, TI) pair, TE outer (:data:`MUDI_TE_MS`), TI inner
      (:data:`MUDI_TI_MS`, 28 values evenly spaced 20 .. 7322.7 ms);
      TR = :data:`MUDI_TR_MS` throughout (not a column).
    * Each block has :data:`MUDI_ROWS_PER_BLOCK` = 16 rows: first one b = 0 row
      with gradient direction ``(0, 0, 0)``, then 15 diffusion-weighted rows.
    * The diffusion-weighted rows are numbered globally ``c = 0 .. 1259``:
      row ``c`` has b = ``(500, 1000, 2000, 3000)[c % 4]`` and direction
      ``D[c % 105]`` of a set ``D`` of :data:`MUDI_N_DIRECTIONS` unit vectors
      (a Fibonacci hemisphere lattice under a seed-dependent random rotation).
      Since gcd(4, 105) = 1, every (shell, direction) pair occurs exactly
      3 times, each shell 315 times.

    Marginals: b = 0: 84 rows, each other shell 315; each TE 448 rows; each
    TI 48 rows.  Directions are in the RAS frame of the image (the MUDI
    sample grids are axis-aligned, so also the i, j, k axes).
    """
    seed = _check_index(seed, "seed")
    directions = _unit_directions(MUDI_N_DIRECTIONS) @ _random_rotation(_rng(seed, 0, "mudi_table")).T
    shells = [b for b in MUDI_B_VALUES if b > 0]
    rows = []
    c = 0
    for te in MUDI_TE_MS:
        for ti in MUDI_TI_MS:
            rows.append([0.0, 0.0, 0.0, 0.0, ti, te])
            for _ in range(MUDI_ROWS_PER_BLOCK - 1):
                g = directions[c % MUDI_N_DIRECTIONS]
                rows.append([g[0], g[1], g[2], shells[c % len(shells)], ti, te])
                c += 1
    return AcquisitionTable(np.array(rows, dtype=np.float64))


def _reference_wm_signal() -> float:
    """Noise-free b=0 signal of pure literature WM at the longest TI and shortest TE."""
    wm = TISSUE_PARAMETERS["wm"]
    ti, te = max(MUDI_TI_MS), min(MUDI_TE_MS)
    t1 = abs(1.0 - 2.0 * math.exp(-ti / wm["T1"]) + math.exp(-MUDI_TR_MS / wm["T1"]))
    return MUDI_SIGNAL_SCALE * wm["PD"] * t1 * math.exp(-te / wm["T2s"])


#: Rician noise sigma of every MUDI-like subject (scanner units).
MUDI_NOISE_SIGMA: float = MUDI_NOISE_FRACTION * _reference_wm_signal()


def signal_equation(
    pd: np.ndarray, t1: np.ndarray, t2s: np.ndarray, adc: np.ndarray, b: float, ti: float, te: float,
    tr: float = MUDI_TR_MS, scale: float = MUDI_SIGNAL_SCALE,
) -> np.ndarray:
    """``scale * PD * |1 - 2 exp(-TI/T1) + exp(-TR/T1)| * exp(-TE/T2*) * exp(-b ADC)``.

    Elementwise (float64); ``adc`` is the apparent diffusivity along the
    gradient.  Voxels with ``PD <= 0`` give 0 (no division by a zero T1).
    """
    pd, t1, t2s, adc = (np.asarray(x, dtype=np.float64) for x in (pd, t1, t2s, adc))
    ok = pd > 0
    r1 = np.divide(1.0, t1, out=np.zeros_like(t1), where=ok)
    r2 = np.divide(1.0, t2s, out=np.zeros_like(t2s), where=ok)
    s = scale * pd * np.abs(1.0 - 2.0 * np.exp(-ti * r1) + np.exp(-tr * r1)) * np.exp(-te * r2) * np.exp(-b * adc)
    return np.where(ok, s, 0.0)


# ============================================================ MUDI subjects
@functools.lru_cache(maxsize=1)
def _mudi_layout() -> tuple[Grid, tuple[int, int, int], tuple[int, int, int]]:
    """The shared 2.5 mm HR grid and its 1 mm source region (start, shape; KJI).

    The box covers the template brain mask's bounding box plus
    :data:`MUDI_MARGIN_MM` on every side, rounded up to an even number of
    2.5 mm voxels per axis (so both Super MUDI tasks divide it) and centred.
    Its edges lie on 1 mm voxel edges, so 2 x 2 x 2 of its voxels are exactly
    5 x 5 x 5 template voxels.
    """
    t = _template_arrays()
    spacing = np.linalg.norm(t["affine"][:3, :3], axis=0)
    if not np.allclose(spacing, 1.0):  # pragma: no cover - nilearn invariant
        raise SuperResMoEError(f"expected a 1 mm template, got spacing {spacing}")
    mask = t["mask"] > 0
    factor = MUDI_SPACING_MM  # 1 mm voxels per HR voxel
    start, n_out = [], []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        nz = np.nonzero(mask.any(axis=other))[0]
        length = int(nz[-1]) - int(nz[0]) + 1 + 2 * MUDI_MARGIN_MM
        n = math.ceil(length / factor)
        n += n % 2
        extra = round(n * factor) - length
        start.append(int(nz[0]) - MUDI_MARGIN_MM - extra // 2)
        n_out.append(n)
    m = np.eye(4)
    m[:3, :3] = np.diag([factor] * 3)
    # HR voxel m centre = 1 mm index start - 0.5 + factor * (m + 0.5)  (i, j, k order)
    m[:3, 3] = np.array(start[::-1], dtype=np.float64) - 0.5 + 0.5 * factor
    grid = Grid(tuple(n_out), t["affine"] @ m)  # type: ignore[arg-type]
    region = tuple(round(n * factor) for n in n_out)
    return grid, tuple(start), region  # type: ignore[return-value]


def _box_weights(n_out: int, factor: float) -> np.ndarray:
    """``(n_out, n_in)`` area-average weights from 1-unit cells to ``factor``-unit cells."""
    n_in = round(n_out * factor)
    edges = np.arange(n_out + 1, dtype=np.float64) * factor
    cells = np.arange(n_in + 1, dtype=np.float64)
    lo = np.maximum(edges[:-1, None], cells[None, :-1])
    hi = np.minimum(edges[1:, None], cells[None, 1:])
    return np.clip(hi - lo, 0.0, None) / factor


def _area_average(array: np.ndarray, out_shape: Sequence[int], factor: float) -> np.ndarray:
    """Exact area (volume) average of a KJI array onto cells ``factor`` times larger."""
    out = np.asarray(array, dtype=np.float64)
    for axis, n in enumerate(out_shape):
        w = _box_weights(n, factor)
        out = np.moveaxis(np.tensordot(w, out, axes=(1, axis)), 0, axis)
    return out


def _principal_directions(wm: np.ndarray, grid: Grid, mask: np.ndarray) -> np.ndarray:
    """Unit WM fibre direction per voxel, ``(3, K, J, I)`` RAS (x, y, z) components.

    Heuristic: the direction along which the WM fraction varies least, i.e.
    the eigenvector of the smallest eigenvalue of the structure tensor
    (gradients at :data:`MUDI_GRADIENT_SIGMA`, tensor smoothed at
    :data:`MUDI_TENSOR_SIGMA` voxels).  Sign fixed so the largest component is
    positive.  Zero outside ``mask``.
    """
    sp = grid.spacing
    g_kji = [
        ndimage.gaussian_filter(wm, MUDI_GRADIENT_SIGMA, order=o, mode="nearest")
        for o in ((1, 0, 0), (0, 1, 0), (0, 0, 1))
    ]
    g = [g_kji[2] / sp[0], g_kji[1] / sp[1], g_kji[0] / sp[2]]  # physical d/di, d/dj, d/dk
    tensor = np.empty((int(mask.sum()), 3, 3))
    for a in range(3):
        for b in range(a, 3):
            t = ndimage.gaussian_filter(g[a] * g[b], MUDI_TENSOR_SIGMA, mode="nearest")[mask]
            tensor[:, a, b] = tensor[:, b, a] = t
    _, vecs = np.linalg.eigh(tensor)
    v = vecs[:, :, 0] @ grid.direction.T  # IJK-aligned physical -> RAS
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    big = np.argmax(np.abs(v), axis=1)
    v *= np.sign(v[np.arange(v.shape[0]), big])[:, None]
    out = np.zeros((3,) + mask.shape, dtype=np.float32)
    out[:, mask] = v.T
    return out


def _generate_mudi_maps(index: int, seed: int) -> dict[str, np.ndarray]:
    t = _template_arrays()
    grid, start, region = _mudi_layout()
    u = _warp_field(seed, index, "mudi_warp", t["t1"].shape)
    fine = _warp_region([t["gm"], t["wm"], t["csf"]], [1, 1, 1], u, start, region)
    frac = np.stack([np.clip(_area_average(f, grid.shape, MUDI_SPACING_MM), 0.0, 1.0) for f in fine])
    total = frac.sum(axis=0)
    mask = total >= MUDI_MASK_THRESHOLD
    w = np.divide(frac, total, out=np.zeros_like(frac), where=total > 0)  # renormalised fractions
    rng = _rng(seed, index, "mudi_params")
    names = ("gm", "wm", "csf")
    params = {
        tissue: {
            p: v * (1.0 + MUDI_PARAM_JITTER * float(np.clip(rng.standard_normal(), -2.0, 2.0)))
            for p, v in TISSUE_PARAMETERS[tissue].items()
        }
        for tissue in names
    }
    pd = sum(frac[n] * params[t_]["PD"] for n, t_ in enumerate(names))
    r1 = sum(w[n] / params[t_]["T1"] for n, t_ in enumerate(names))
    r2 = sum(w[n] / params[t_]["T2s"] for n, t_ in enumerate(names))
    adc = sum(w[n] * params[t_]["ADC"] for n, t_ in enumerate(names))
    fa = np.clip(sum(w[n] * params[t_]["FA"] for n, t_ in enumerate(names)), 0.0, 0.95)
    maps = {
        "PD": np.where(mask, pd, 0.0),
        "T1": np.where(mask, np.divide(1.0, r1, out=np.zeros_like(r1), where=r1 > 0), 0.0),
        "T2s": np.where(mask, np.divide(1.0, r2, out=np.zeros_like(r2), where=r2 > 0), 0.0),
        "ADC": np.where(mask, adc, 0.0),
        "FA": np.where(mask, fa, 0.0),
    }
    out = {k: v.astype(np.float32) for k, v in maps.items()}
    out["V1"] = _principal_directions(w[1], grid, mask)
    return out


@dataclass(eq=False)
class MudiSubject:
    """A MUDI-like diffusion-relaxometry subject (maps + protocol + noise level).

    Attributes:
        index: subject number (0..:data:`MUDI_SUBJECTS` - 1 in the standard set).
        maps: KJI float32 maps on ``grid``, 0 outside the brain mask:
            ``"PD"`` (relative, CSF ~ 1), ``"T1"`` and ``"T2s"`` (ms),
            ``"ADC"`` (mean diffusivity, mm^2/s), ``"FA"`` (0..1), and
            ``"V1"`` ``(3, K, J, I)``: unit WM fibre direction (RAS x, y, z).
        grid: the 2.5 mm isotropic HR grid (brain box + margin, even sizes).
        table: the acquisition table (:func:`mudi_acquisition_table`).
        noise_sigma: Rician noise sigma of :meth:`hr` (scanner units).
        seed: the generation seed (noise streams are keyed by it).
        meta: generation info (seconds, cache hit or miss, cache file).
    """

    index: int
    maps: dict[str, np.ndarray]
    grid: Grid
    table: AcquisitionTable
    noise_sigma: float
    seed: int
    meta: dict = field(default_factory=dict)

    # ------------------------------------------------------------ geometry
    @property
    def mask(self) -> np.ndarray:
        """Boolean brain mask ``(K, J, I)``: where signal and noise live."""
        return self.maps["PD"] > 0

    def _rows(self, rows: Sequence[int] | slice | None) -> np.ndarray:
        n = len(self.table)
        if rows is None:
            return np.arange(n)
        if isinstance(rows, slice):
            return np.arange(n)[rows]
        idx = np.asarray(rows).ravel()
        if idx.size and (not np.issubdtype(idx.dtype, np.integer) or idx.min() < -n or idx.max() >= n):
            raise InputError(f"MUDI rows must be integers in 0..{n - 1}, got {list(idx[:8])}")
        return idx.astype(np.int64) % n if idx.size else idx.astype(np.int64)

    @functools.cached_property
    def _voxels(self) -> dict[str, np.ndarray]:
        """Per brain voxel: PD, rates, MD, anisotropy a, fibre direction."""
        m = self.mask
        fa = self.maps["FA"][m].astype(np.float64)
        return {
            "pd": self.maps["PD"][m].astype(np.float64),
            "t1": self.maps["T1"][m].astype(np.float64),
            "t2s": self.maps["T2s"][m].astype(np.float64),
            "md": self.maps["ADC"][m].astype(np.float64),
            # cylindrical tensor: l_par = MD (1 + 2a), l_perp = MD (1 - a); FA = sqrt(3) a / sqrt(1 + 2 a^2)
            "a": fa / np.sqrt(3.0 - 2.0 * fa**2),
            "v": self.maps["V1"][:, m].astype(np.float64),
        }

    def diffusivity(self, gradient: Sequence[float]) -> np.ndarray:
        """Apparent diffusivity ``(K, J, I)`` along unit ``gradient`` (RAS):
        ``MD [(1 - a) + 3 a (g . v)^2]`` (the ADC map when ``g`` is 0)."""
        out = np.zeros(self.grid.shape, dtype=np.float64)
        out[self.mask] = self._diffusivity(np.asarray(gradient, dtype=np.float64))
        return out

    def _diffusivity(self, g: np.ndarray) -> np.ndarray:
        vox = self._voxels
        norm = float(np.linalg.norm(g))
        if norm == 0.0:
            return vox["md"]
        cos2 = ((g / norm) @ vox["v"]) ** 2
        return vox["md"] * ((1.0 - vox["a"]) + 3.0 * vox["a"] * cos2)

    # ------------------------------------------------------------- signals
    def _masked_signal(self, idx: np.ndarray) -> np.ndarray:
        """``(len(idx), n_brain_voxels)`` float32 noise-free signal in the mask.

        The relaxation factor is computed once per distinct (TI, TE) among the
        requested rows; each row then only costs its diffusion factor.
        """
        vox = self._voxels
        out = np.empty((idx.size, vox["pd"].size), dtype=np.float32)
        cols = self.table.values
        relax: dict[tuple[float, float], np.ndarray] = {}
        zero = np.zeros_like(vox["md"])
        for n, r in enumerate(idx):
            gx, gy, gz, b, ti, te = cols[r]
            key = (float(ti), float(te))
            if key not in relax:
                relax[key] = signal_equation(vox["pd"], vox["t1"], vox["t2s"], zero, 0.0, ti, te)
            if b == 0.0:
                out[n] = relax[key]
            else:
                out[n] = relax[key] * np.exp(-b * self._diffusivity(np.array([gx, gy, gz])))
        return out

    def _scatter(self, values: np.ndarray) -> np.ndarray:
        out = np.zeros((values.shape[0], int(np.prod(self.grid.shape))), dtype=np.float32)
        flat = np.flatnonzero(self.mask)
        for n in range(values.shape[0]):
            out[n, flat] = values[n]
        return out.reshape((values.shape[0],) + self.grid.shape)

    def signal(self, rows: Sequence[int] | slice | None = None) -> np.ndarray:
        """Noise-free signal ``(n_rows, K, J, I)`` float32 for the given table rows.

        ``S = MUDI_SIGNAL_SCALE * PD * |1 - 2 exp(-TI/T1) + exp(-TR/T1)| *
        exp(-TE/T2*) * exp(-b D(g))`` (:func:`signal_equation`) with ``D(g)``
        the apparent diffusivity along the row's gradient (:meth:`diffusivity`);
        0 outside the mask.  Only the requested rows are computed.
        """
        return self._scatter(self._masked_signal(self._rows(rows)))

    def _noisy(self, idx: np.ndarray) -> np.ndarray:
        values = self._masked_signal(idx)
        sigma = np.float32(self.noise_sigma)
        for n, r in enumerate(idx):
            rng = _rng(self.seed, self.index, "mudi_noise", int(r))
            noise = rng.standard_normal((2, values.shape[1]), dtype=np.float32)
            noise *= sigma
            values[n] = np.hypot(values[n] + noise[0], noise[1])
        return self._scatter(values)

    def hr(self, rows: Sequence[int] | slice | None = None) -> Volume:
        """The noisy 2.5 mm HR data: a 4D volume ``(n_rows, K, J, I)`` float32.

        Rician noise (sigma :attr:`noise_sigma`) inside the brain mask, exactly 0
        outside; the noise of row ``r`` comes from its own stream keyed by
        ``(seed, index, r)``, so it does not depend on the other rows asked for.
        The acquisition table rows are attached.
        """
        idx = self._rows(rows)
        return Volume(self._noisy(idx), self.grid.ijk_to_ras, self.table.rows(idx), name=f"mudi{self.index}_hr")

    def lr(self, rows: Sequence[int] | slice | None = None, task: str = "aniso") -> tuple[Volume, Volume]:
        """``(lr, hr)`` for a Super MUDI task: the block average (boxcar) of :meth:`hr`.

        ``"aniso"``: 2.5 x 2.5 x 5 mm (factor 2 along k); ``"iso"``: 5 mm
        (factor 2 along i, j, k).  ``hr`` is the HR cropped to whole LR blocks
        (the grid sizes are even, so nothing is cropped) and
        ``scaled_grid(lr.grid, factors).same_as(hr.grid)``.
        """
        return mudi_downsample(self.hr(rows), task)


def mudi_downsample(hr: Volume, task: str = "aniso") -> tuple[Volume, Volume]:
    """Block-average a (3D or 4D) HR volume for a Super MUDI ``task``
    (:data:`MUDI_TASKS`); returns ``(lr, hr_cropped)``, tables kept."""
    if task not in MUDI_TASKS:
        raise InputError(f"unknown MUDI task {task!r}; choose one of {sorted(MUDI_TASKS)}")
    fi, fj, fk = MUDI_TASKS[task]
    k, j, i = hr.spatial_shape
    kk, jj, ii = (k // fk) * fk, (j // fj) * fj, (i // fi) * fi
    arr = np.asarray(hr.array, dtype=np.float32)[..., :kk, :jj, :ii]
    lead = arr.shape[:-3]
    blocks = arr.reshape(lead + (kk // fk, fk, jj // fj, fj, ii // fi, fi))
    d = len(lead)
    low = blocks.mean(axis=(d + 1, d + 3, d + 5), dtype=np.float64).astype(np.float32)
    hr_c = hr.with_array(np.ascontiguousarray(arr))
    grid = scaled_grid(hr_c.grid, (1.0 / fi, 1.0 / fj, 1.0 / fk))
    name = hr.name.removesuffix("_hr")
    lr = hr_c.with_array(low, grid.ijk_to_ras, name=f"{name}_lr_{task}")
    return lr, hr_c


def mudi_subject(index: int, seed: int = 0) -> MudiSubject:
    """A MUDI-like subject: tissue maps -> parameter maps at 2.5 mm (cached).

    Construction: the template GM / WM / CSF fractions are pulled back through
    a per-subject smooth diffeomorphic warp (as :func:`t1_subject`, its own
    random stream; every subject, 0 included, is warped), area-averaged
    exactly onto the shared 2.5 mm grid (:func:`_mudi_layout`), and mixed
    with the per-subject jittered (:data:`MUDI_PARAM_JITTER`) literature values
    of :data:`TISSUE_PARAMETERS`: ``PD = sum f_t PD_t``; ``1/T1``, ``1/T2*``,
    ``ADC`` and ``FA`` = means weighted by the renormalised fractions.  WM
    fibre directions come from the structure tensor of the WM fraction.
    Outside the mask (tissue fraction < :data:`MUDI_MASK_THRESHOLD`) all maps
    are 0.  Noise sigma = :data:`MUDI_NOISE_SIGMA` for every subject.
    """
    index = _check_index(index, "MUDI subject")
    seed = _check_index(seed, "seed")
    t0 = time.perf_counter()
    path, key = _cache_file("mudi", index, seed)
    cached = _load_cached(path, key)
    names = ("PD", "T1", "T2s", "ADC", "FA", "V1")
    if cached is not None and all(n in cached for n in names) and _cached_grid_ok(cached, "PD"):
        maps, status = {n: cached[n] for n in names}, "hit"
        grid = Grid(cached["PD"].shape, cached["ijk_to_ras"])
        logger.debug("MUDI subject %d (seed %d) loaded from %s", index, seed, path)
    else:
        maps, status = _generate_mudi_maps(index, seed), "miss"
        grid = _mudi_layout()[0]
        _save_cached(path, key, {**maps, "ijk_to_ras": grid.ijk_to_ras})
    for a in maps.values():
        a.flags.writeable = False
    table = mudi_acquisition_table(seed)
    seconds = time.perf_counter() - t0
    if status == "miss":
        logger.info("generated MUDI subject %d (seed %d) in %.2f s (cache: %s)", index, seed, seconds, path)
    meta = {"seconds": seconds, "cache": status, "cache_file": str(path) if path else None}
    return MudiSubject(index, maps, grid, table, MUDI_NOISE_SIGMA, seed, meta)


# ================================================================== writing
def write_sample_data(
    out_dir: str | os.PathLike,
    kind: str = "all",
    seed: int = 0,
    subject: int | None = None,
    mudi_rows: int | None = 64,
    progress: Callable[[str, float, str], None] | None = None,
) -> dict:
    """Write sample data as NIfTI files into ``out_dir``.

    * ``"t1"``: ``t1_hr.nii.gz`` and ``t1_lr.nii.gz`` (:func:`t1_pair` with
      its defaults: 1 x 1 x 4 mm, Gaussian profile, 1 % Rician noise) of
      ``subject`` (default :data:`T1_HELD_OUT`).
    * ``"mudi"``: ``mudi_hr.nii.gz`` (4D, the first ``mudi_rows`` rows, all if
      None), ``mudi_lr_aniso.nii.gz``, ``mudi_lr_iso.nii.gz`` (block averages
      of it) and ``parameters_new.txt`` (one ``gx gy gz b TI TE`` row per frame)
      of ``subject`` (default :data:`MUDI_HELD_OUT`).
    * ``"all"``: both.

    Returns:
        ``{"files": [str paths], "seconds": wall time, "kind": kind,
        "seed": seed, "subject": {"t1": s, "mudi": s}}``.
    """
    from SuperResMoELib.io.formats import write_acquisition_table, write_volume

    if kind not in SAMPLE_KINDS:
        raise InputError(f"unknown sample data kind {kind!r}; choose one of {list(SAMPLE_KINDS)}")
    seed = _check_index(seed, "seed")
    if subject is not None:
        subject = _check_index(subject, "subject")
    if mudi_rows is not None:
        mudi_rows = _check_index(mudi_rows, "mudi_rows")
        if mudi_rows < 1:
            raise InputError("mudi_rows must be at least 1 (or None for all rows)")
    report = progress or (lambda stage, fraction, message="": None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    files: list[str] = []
    subjects: dict[str, int] = {}

    def write(volume: Volume, name: str) -> None:
        path = out / name
        write_volume(volume, path, table=False)
        files.append(str(path))

    if kind in ("t1", "all"):
        s = T1_HELD_OUT if subject is None else subject
        subjects["t1"] = s
        report("sample_data", 0.0, f"T1 subject {s}")
        lr, hr = t1_pair(s, seed=seed)
        report("sample_data", 0.3 if kind == "all" else 0.6, "writing T1 pair")
        write(hr, "t1_hr.nii.gz")
        write(lr, "t1_lr.nii.gz")
    if kind in ("mudi", "all"):
        base = 0.5 if kind == "all" else 0.0
        s = MUDI_HELD_OUT if subject is None else subject
        subjects["mudi"] = s
        report("sample_data", base, f"MUDI subject {s}")
        mudi = mudi_subject(s, seed)
        rows = slice(None) if mudi_rows is None else np.arange(min(mudi_rows, len(mudi.table)))
        hr = mudi.hr(rows)
        report("sample_data", base + 0.5 * (1.0 - base), "writing MUDI volumes")
        write(hr, "mudi_hr.nii.gz")
        for task in ("aniso", "iso"):
            lr, _ = mudi_downsample(hr, task)
            write(lr, f"mudi_lr_{task}.nii.gz")
        params = out / "parameters_new.txt"
        write_acquisition_table(hr.acquisition, params)  # type: ignore[arg-type]
        files.append(str(params))
    seconds = time.perf_counter() - t0
    report("sample_data", 1.0, f"wrote {len(files)} files in {seconds:.1f} s")
    logger.info("wrote %d sample data files (%s) to %s in %.2f s", len(files), kind, out, seconds)
    return {"files": files, "seconds": seconds, "kind": kind, "seed": seed, "subject": subjects}
