"""The out-of-generator T1 head and its four LR scans (see :mod:`training.outgen`).

HR: 1 mm, the ``t1`` head of :mod:`.head`.  Signal of an inversion-recovery
gradient echo from the tissue fractions, ``PD |1 - 2 exp(-TI/T1) +
exp(-TR/T1)|`` (TI 1000, TR 2300 ms) with the fraction-weighted relaxation
*rate* and PD of :data:`TISSUE_T1`, times ``1 + 0.04 n`` (``n`` a smooth
unit random texture, 3 mm), times a tilted quadratic bias field
(``exp`` of up to ±0.18), scaled so white matter is near 1000.

LR scans (:data:`SCANS`): along each axis of spacing ``s > 1`` mm, a
trapezoid slice profile of FWHM ``s`` and one sample per slice at its centre
(:mod:`.acquisition`); then Gaussian noise of 1.5 % of white matter.  Each scan's HR is the head on the 1 mm grid its
slices cover.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from SuperResMoELib.core.geometry import scaled_grid
from SuperResMoELib.core.volume import Volume

from .acquisition import crop_whole, sample_slices, trapezoid
from .head import head_fractions

#: Tissue values of this set's T1 model (3 T, ms; PD relative to CSF).
TISSUE_T1: dict[str, dict[str, float]] = {
    "gm": {"PD": 0.82, "T1": 1330.0},
    "wm": {"PD": 0.69, "T1": 830.0},
    "csf": {"PD": 1.00, "T1": 4300.0},
}
TI_MS, TR_MS = 1000.0, 2300.0
TEXTURE, TEXTURE_MM = 0.04, 3.0
BIAS_MAX = 0.18
NOISE_FRACTION = 0.015
#: The four LR scans: name -> spacing (i, j, k) mm.
SCANS: dict[str, tuple[float, float, float]] = {
    "1x1x5 mm": (1.0, 1.0, 5.0), "1x4x1 mm": (1.0, 4.0, 1.0), "2x2x2 mm": (2.0, 2.0, 2.0), "1x1x3 mm": (1.0, 1.0, 3.0),
}
SEED = 20261201


def _signal(t1: float, pd: float, ti_ms: float = TI_MS, tr_ms: float = TR_MS) -> float:
    return pd * abs(1.0 - 2.0 * math.exp(-ti_ms / t1) + math.exp(-tr_ms / t1))


@dataclass(frozen=True)
class T1Set:
    """One T1 head of this set: its pose (:data:`~.head.HEADS`), tissue values,
    inversion timing, bias strength and texture seed."""

    head: str
    tissue: dict[str, dict[str, float]]
    ti_ms: float
    tr_ms: float
    bias_max: float
    seed: int


#: ``test``: the head every table reports; ``validation``: model selection only
#: (REMIx ``library.validation: "outgen"``), never reported as a test — another
#: pose, other tissue values and timing, a weaker bias, its own texture.
T1_SETS: dict[str, T1Set] = {
    "test": T1Set("t1", TISSUE_T1, TI_MS, TR_MS, BIAS_MAX, 1),
    "validation": T1Set("t1_validation", {"gm": {"PD": 0.80, "T1": 1420.0}, "wm": {"PD": 0.71, "T1": 880.0},
                                          "csf": {"PD": 1.00, "T1": 4100.0}}, 950.0, 2200.0, 0.12, 7),
}


@functools.lru_cache(maxsize=3)
def t1_head(block_mm: float | None = None, which: str = "test") -> Volume:
    """The HR T1 head of :data:`T1_SETS` ``[which]`` (float32, 1 mm, white
    matter near 1000); only its central ``block_mm`` cube when given (a small
    case: the texture and bias are laid out over the block)."""
    from scipy import ndimage

    ts = T1_SETS[which]
    fr, grid = head_fractions(ts.head, 1.0, block_mm)
    total = sum(fr.values())
    inside = total > 1e-3
    w = {t: np.divide(fr[t], total, out=np.zeros_like(fr[t]), where=inside) for t in fr}
    rate = sum(w[t] / ts.tissue[t]["T1"] for t in w)
    pd = sum(w[t] * ts.tissue[t]["PD"] for t in w)
    t1 = np.divide(1.0, rate, out=np.full_like(rate, 1e9), where=rate > 0)
    s = pd * np.abs(1.0 - 2.0 * np.exp(-ts.ti_ms / t1) + np.exp(-ts.tr_ms / t1)) * np.clip(total, 0.0, 1.0)
    rng = np.random.default_rng([SEED, ts.seed])
    tex = ndimage.gaussian_filter(rng.standard_normal(grid.shape), TEXTURE_MM)
    tex /= tex.std()
    k, j, i = (np.linspace(-1.0, 1.0, n) for n in grid.shape)
    kk, jj, ii = np.meshgrid(k, j, i, indexing="ij")
    u = 0.8 * ii + 0.5 * jj - 0.3 * kk
    v = -0.4 * ii + 0.7 * jj + 0.6 * kk
    bias = np.exp(ts.bias_max * (0.6 * u**2 - 0.5 * v + 0.3 * u * v) / 1.4)
    wm = ts.tissue["wm"]
    arr = s * (1.0 + TEXTURE * tex) * bias * (1000.0 / _signal(wm["T1"], wm["PD"], ts.ti_ms, ts.tr_ms))
    name = "outgen_t1" if which == "test" else f"outgen_t1_{which}"
    return Volume(np.clip(arr, 0.0, None).astype(np.float32), grid.ijk_to_ras, name=name)


def acquire(hr: Volume, spacing_ijk: tuple[float, float, float], rng: np.random.Generator,
            noise_sigma: float) -> tuple[Volume, Volume]:
    """``(lr, hr cropped to the LR slices)`` of one scan: the trapezoid slice
    profile (:mod:`.acquisition`), Gaussian noise ``noise_sigma``."""
    factors = tuple(int(round(s)) for s in spacing_ijk[::-1])  # KJI
    hr_arr = crop_whole(np.asarray(hr.array), factors)  # type: ignore[arg-type]
    lr = sample_slices(hr_arr, factors, trapezoid)  # type: ignore[arg-type]
    lr = lr + rng.normal(0.0, noise_sigma, lr.shape)
    hr_c = Volume(hr_arr, hr.ijk_to_ras, name=hr.name)
    grid = scaled_grid(hr_c.grid, tuple(1.0 / s for s in spacing_ijk))
    return Volume(lr.astype(np.float32), grid.ijk_to_ras, name=f"{hr.name}_lr"), hr_c


def scans(head: Volume | None = None) -> dict[str, tuple[Volume, Volume]]:
    """The four ``(lr, hr)`` scans of :data:`SCANS` (seeded noise, fixed data)."""
    hr = t1_head() if head is None else head
    wm_level = 1000.0
    out = {}
    for n, (name, sp) in enumerate(SCANS.items()):
        out[name] = acquire(hr, sp, np.random.default_rng([SEED, 2, n]), NOISE_FRACTION * wm_level)
    return out
