"""T1 "subjects" (warped, biased, contrast-jittered template) and simulated LR/HR T1 pairs."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np

from SuperResMoELib.core.errors import InputError
from SuperResMoELib.core.intensity import robust_max
from SuperResMoELib.core.volume import Volume
from SuperResMoELib.sample_data.cache import cached_arrays
from SuperResMoELib.sample_data.fields import WARP_MAX_MM, _CoarseSampler, _warp_field
from SuperResMoELib.sample_data.seeds import _check_index, _rng
from SuperResMoELib.sample_data.t1_variation import _bias_log_field, _contrast_jitter
from SuperResMoELib.sample_data.template import _template_arrays
from SuperResMoELib.sample_data.warp import _warp_region
from SuperResMoELib.simulation.lowres import simulate_low_resolution
from SuperResMoELib.simulation.noise import rician_noise

#: Number of T1 "subjects" in the standard set (0 = the template itself).
T1_SUBJECTS: int = 5
#: The T1 subject held out for evaluation (subjects 0..3 train).
T1_HELD_OUT: int = 4


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
    """The T1 array of subject ``subject >= 1``: ``(189, 233, 197)`` float32 KJI on the template grid."""
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
    gamma, gain = _contrast_jitter(seed, subject)
    warped = (gain * np.power(warped, gamma) * gain_region).astype(np.float32)
    out = np.zeros(shape, dtype=np.float32)
    out[start[0] : start[0] + region[0], start[1] : start[1] + region[1], start[2] : start[2] + region[2]] = warped
    return out


def t1_subject(subject: int, seed: int = 0) -> Volume:
    """A T1 "subject" on the template grid (float32, template intensity scale).

    Subject 0 is the template itself (whatever ``seed``).  Subject ``s >= 1``
    is the template pulled back through a smooth diffeomorphic warp
    (:func:`~.fields._warp_field`: max velocity :data:`~.fields.WARP_MAX_MM`
    mm, smoothness :data:`~.fields.WARP_SMOOTHNESS_MM` mm; cubic
    interpolation), raised to a power ``gamma`` and scaled by a ``gain``
    (global contrast jitter, see :data:`~.t1_variation.CONTRAST_JITTER`) and
    multiplied by a smooth bias field (``|log gain| <=``
    :data:`~.t1_variation.BIAS_STRENGTH`).  Shape ``(189, 233, 197)`` (KJI),
    1 mm, the template's IJK->RAS.  Deterministic from ``(seed, subject)``;
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
    # a cache hit does not even load the template (the grid is stored too)
    arrays, status, _ = cached_arrays(
        "t1", subject, seed, ("t1",),
        lambda: {"t1": _generate_t1_subject(subject, seed), "ijk_to_ras": _template_arrays()["affine"]},
    )
    seconds = time.perf_counter() - t0
    return Volume(arrays["t1"], arrays["ijk_to_ras"], name=f"t1_subject{subject}",
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
    :func:`~SuperResMoELib.simulation.lowres.simulate_low_resolution` with integer
    factors ``lr_spacing / 1 mm`` (IJK order; ``method`` = ``"gaussian"``,
    ``"boxcar"`` or ``"kspace"``), then Rician noise of sigma
    ``noise_sigma_fraction * robust max(HR)`` (the
    :data:`~SuperResMoELib.core.intensity.ROBUST_MAX_PERCENTILE` of the HR
    brain voxels, :func:`~SuperResMoELib.core.intensity.robust_max`; 0 = no noise).

    Returns:
        ``(lr, hr)``: ``hr`` is the HR cropped to whole LR voxels, so
        ``scaled_grid(lr.grid, factors).same_as(hr.grid)``.

    Raises:
        InputError: a spacing that is not a whole multiple (>= 1) of 1 mm, a
        negative noise fraction, bad subject / seed / method.
    """
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
    sigma = fraction * robust_max(hr_c.array)
    if sigma > 0:
        lr = rician_noise(lr, sigma, rng)
    info = {"subject": int(subject), "seed": int(seed), "factors": f, "method": method,
            "noise_sigma": sigma, "lr_spacing_mm": tuple(float(x) for x in spacing)}
    lr = Volume(lr.array, lr.ijk_to_ras, name=f"t1_subject{subject}_lr", meta={"sample_data": info})
    hr_c = Volume(hr_c.array, hr_c.ijk_to_ras, name=f"t1_subject{subject}_hr", meta=dict(hr.meta))
    return lr, hr_c
