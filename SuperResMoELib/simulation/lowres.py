"""Low-resolution volumes by integer factors (boxcar, Gaussian or k-space), for SR evaluation."""

from __future__ import annotations


import numpy as np

from SuperResMoELib.core.errors import InputError
from SuperResMoELib.core.geometry import resample_array, scaled_grid
from SuperResMoELib.core.volume import Volume
from SuperResMoELib.simulation._checks import _check_non_negative, _check_rng, _check_volume, _factors3, _float32
from SuperResMoELib.simulation.block_mean import block_mean, crop_to_blocks
from SuperResMoELib.simulation.kspace import kspace_truncate
from SuperResMoELib.simulation.noise import rician_noise
from SuperResMoELib.simulation.profiles import SAMPLING_INTERPOLATION, _blur_array
from SuperResMoELib.core.types import Factors

#: Methods accepted by :func:`simulate_low_resolution`.
LR_METHODS: tuple[str, ...] = ("boxcar", "gaussian", "kspace")

#: Tolerance on integer scale factors in :func:`simulate_low_resolution`.
INTEGER_FACTOR_TOLERANCE: float = 1e-9


def _integer_factors(factors: Factors) -> np.ndarray:
    f = _factors3(factors, "downsampling factors")
    r = np.round(f)
    if np.any(np.abs(f - r) > INTEGER_FACTOR_TOLERANCE) or np.any(r < 1):
        raise InputError(
            f"downsampling factors must be integers >= 1 (i, j, k), got {list(f)}"
        )
    return r.astype(int)


def simulate_low_resolution(
    volume: Volume,
    factors: Factors,
    method: str = "boxcar",
    noise_sigma: float = 0.0,
    rng: np.random.Generator | None = None,
) -> tuple[Volume, Volume]:
    """Make an LR volume from an HR one by integer factors, for SR evaluation.

    The HR volume is first cropped at the high-index end of each axis so each
    IJK size is a multiple of the integer factor along it (origin and matrix
    unchanged).  The LR grid is :func:`~SuperResMoELib.core.geometry.scaled_grid`
    ``(cropped.grid, 1 / f)``: spacing ``f * s``, same physical extent, LR
    voxel ``m`` covering HR voxels ``m f .. m f + f - 1``.  Methods:

    * ``"boxcar"``: the exact mean of each block of ``f_i x f_j x f_k`` voxels
      (:func:`~SuperResMoELib.simulation.block_mean.block_mean`).
    * ``"gaussian"``: Gaussian profile of FWHM = LR spacing along each axis
      with ``f > 1``, then linear sampling at the LR centres.
    * ``"kspace"``: :func:`kspace_truncate` by ``f``, then linear sampling at
      the LR centres.

    Then optional Rician noise (``noise_sigma > 0``; ``rng=None`` uses a fresh
    unseeded generator).

    Returns:
        ``(lr, hr_cropped)``, both float32, with
        ``scaled_grid(lr.grid, f).same_as(hr_cropped.grid)``.  Shapes:
        ``hr_cropped`` ``(K', J', I')`` with ``K' = f_k * (K // f_k)`` etc.,
        ``lr`` ``(K' / f_k, J' / f_j, I' / f_i)`` (4D frames kept).

    Raises:
        InputError: non-integer or < 1 factors, a size smaller than its
        factor, unknown method, negative noise sigma.
    """
    _check_volume(volume)
    f = _integer_factors(factors)
    if method not in LR_METHODS:
        raise InputError(f"unknown downsampling method {method!r}; choose one of {list(LR_METHODS)}")
    sigma = _check_non_negative(noise_sigma, "noise sigma")
    if sigma > 0:
        rng = np.random.default_rng() if rng is None else _check_rng(rng)
    size = np.array(volume.grid.size_ijk)
    if np.any(size < f):
        raise InputError(
            f"volume size (i, j, k) = {tuple(int(x) for x in size)} is smaller than the "
            f"downsampling factors {tuple(int(x) for x in f)}"
        )
    blocks = tuple(int(x) for x in f)
    arr = crop_to_blocks(_float32(volume), blocks)
    hr = volume.with_array(np.ascontiguousarray(arr))
    lr_grid = scaled_grid(hr.grid, 1.0 / f)
    if method == "boxcar":
        out = block_mean(arr, blocks)
    elif method == "gaussian":
        blurred = arr
        for a in range(3):
            if f[a] > 1:
                blurred = _blur_array(blurred, a, float(f[a]), "gaussian")
        out = resample_array(blurred, hr.grid, lr_grid, SAMPLING_INTERPOLATION)
    else:
        low = kspace_truncate(hr, f.astype(np.float64))
        out = resample_array(low.array, hr.grid, lr_grid, SAMPLING_INTERPOLATION)
    lr = hr.with_array(out, lr_grid.ijk_to_ras)
    if sigma > 0:
        lr = rician_noise(lr, sigma, rng)  # type: ignore[arg-type]
    return lr, hr
