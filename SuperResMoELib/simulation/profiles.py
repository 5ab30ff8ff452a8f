"""Slice profiles: 1D profile kernels, blur along one axis, slice grids and 2D multi-slice acquisitions.

Axis arguments are IJK (``0`` = i, the last array axis; ``2`` = k, the first
spatial array axis); arrays are KJI ``(K, J, I)`` or NKJI ``(N, K, J, I)``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from SuperResMoELib.core.errors import InputError
from SuperResMoELib.core.geometry import resample
from SuperResMoELib.core.volume import Grid, Volume
from SuperResMoELib.simulation._checks import _array_axis, _check_axis, _check_positive, _check_volume, _float32
from SuperResMoELib.simulation.tolerances import COVER_TOLERANCE

#: Slice profiles accepted by :func:`slice_profile_blur` and friends.
PROFILES: tuple[str, ...] = ("gaussian", "boxcar")

#: FWHM = this factor * sigma for a Gaussian (2 sqrt(2 ln 2)).
FWHM_PER_SIGMA: float = 2.0 * math.sqrt(2.0 * math.log(2.0))

#: Gaussian slice profiles are truncated at this many sigmas.
GAUSSIAN_TRUNCATE: float = 4.0

#: Boundary handling of the profile convolution (scipy.ndimage mode):
#: "nearest" extends the edge voxels, so constant images stay constant.
BLUR_MODE: str = "nearest"

#: Interpolation used when sampling a blurred image at slice / LR centres.
SAMPLING_INTERPOLATION: str = "linear"


def _check_profile(profile: str) -> str:
    """``profile`` if it is one of :data:`PROFILES`; ``InputError`` otherwise."""
    if profile not in PROFILES:
        raise InputError(f"unknown slice profile {profile!r}; choose one of {list(PROFILES)}")
    return profile


def profile_kernel(width_voxels: float, profile: str = "gaussian") -> np.ndarray:
    """The normalised 1D kernel (odd length, centred) of a slice profile.

    * ``"gaussian"``: samples of a Gaussian with FWHM ``width_voxels`` at integer
      offsets, truncated at :data:`GAUSSIAN_TRUNCATE` sigmas.
    * ``"boxcar"``: the exact box ``[-w/2, w/2]`` integrated over each voxel
      cell ``[m - 1/2, m + 1/2]``: interior weights ``1/w``, fractional end
      weights, so ``sum / max == w`` for ``w >= 1``.

    Returns:
        float64 weights summing to 1.
    """
    w = _check_positive(width_voxels, "profile width")
    _check_profile(profile)
    if profile == "gaussian":
        sigma = w / FWHM_PER_SIGMA
        radius = max(1, int(math.ceil(GAUSSIAN_TRUNCATE * sigma)))
        x = np.arange(-radius, radius + 1, dtype=np.float64)
        kernel = np.exp(-0.5 * (x / sigma) ** 2)
    else:
        half = 0.5 * w
        radius = max(0, int(math.ceil(half + 0.5)) - 1)
        x = np.arange(-radius, radius + 1, dtype=np.float64)
        kernel = np.clip(np.minimum(x + 0.5, half) - np.maximum(x - 0.5, -half), 0.0, None)
    return kernel / kernel.sum()


def _blur_array(array: np.ndarray, axis: int, width_voxels: float, profile: str) -> np.ndarray:
    """Convolve a KJI / NKJI float32 array along IJK ``axis``."""
    kernel = profile_kernel(width_voxels, profile)
    if kernel.size == 1:
        return np.array(array, dtype=np.float32, copy=True)
    return ndimage.convolve1d(
        np.asarray(array, dtype=np.float32), kernel, axis=_array_axis(array.ndim, axis), mode=BLUR_MODE
    )


def slice_profile_blur(
    volume: Volume, axis: int, thickness_mm: float, profile: str = "gaussian"
) -> Volume:
    """Blur along one axis with a slice profile of a given physical thickness.

    The thickness is converted to voxels with the volume's spacing along IJK
    ``axis`` (``thickness_mm / spacing[axis]``), then a 1D convolution along
    that axis only is applied (see :func:`profile_kernel`): ``"gaussian"``
    has FWHM = thickness, ``"boxcar"`` is an exact box of width = thickness
    with fractional end weights.  Kernels sum to 1 (intensity sums are kept);
    edges are extended (:data:`BLUR_MODE`), so a constant image stays constant.

    Geometry: same grid.  Shapes: unchanged (``(K, J, I)`` or ``(N, K, J, I)``),
    float32.  ``axis=0`` (i) acts on the last array axis, ``axis=2`` (k) on the
    first spatial array axis.

    Raises:
        InputError: ``axis`` not in 0..2, non-positive thickness, unknown profile.
    """
    _check_volume(volume)
    axis = _check_axis(axis)
    thickness = _check_positive(thickness_mm, "slice thickness (mm)")
    _check_profile(profile)
    width = thickness / float(volume.spacing[axis])
    return volume.with_array(_blur_array(_float32(volume), axis, width, profile))


def slice_grid(grid: Grid, axis: int, spacing_mm: float) -> Grid:
    """The grid of slices ``spacing_mm`` apart along IJK ``axis`` of ``grid``.

    The first slice's outer edge equals the first edge of ``grid``; the number
    of slices is ``max(1, floor(extent / spacing_mm))`` with ``extent = n *
    spacing[axis]``; other axes and the direction are unchanged.
    """
    axis = _check_axis(axis)
    d = _check_positive(spacing_mm, "slice spacing (mm)")
    s = float(grid.spacing[axis])
    n_old = grid.size_ijk[axis]
    n_new = max(1, int(math.floor(n_old * s / d + COVER_TOLERANCE)))
    ratio = d / s
    # new index m -> old continuous index -0.5 + (m + 0.5) * ratio
    new_to_old = np.eye(4)
    new_to_old[axis, axis] = ratio
    new_to_old[axis, 3] = -0.5 + 0.5 * ratio
    size = list(grid.size_ijk)
    size[axis] = n_new
    return Grid((size[2], size[1], size[0]), grid.ijk_to_ras @ new_to_old)


def acquire_slices(
    volume: Volume,
    axis: int,
    thickness_mm: float,
    gap_mm: float = 0.0,
    profile: str = "gaussian",
) -> Volume:
    """Simulate a 2D multi-slice acquisition along one axis.

    :func:`slice_profile_blur` with ``thickness_mm`` along IJK ``axis``, then
    sampling (linear interpolation) at slice centres ``thickness + gap`` mm
    apart.  A negative ``gap_mm`` (overlapping slices) is allowed as long as
    ``thickness + gap > 0``.

    Geometry: a NEW grid (:func:`slice_grid`): spacing along ``axis`` =
    ``thickness + gap``, the first slice's outer edge at the input's first
    edge, ``max(1, floor(extent / (thickness + gap)))`` slices, other axes and
    the direction unchanged.  Shapes: the ``axis`` size changes (array axis
    ``-1 - axis``), 4D frames are kept; float32.

    Raises:
        InputError: bad axis, thickness, gap or profile.
    """
    _check_volume(volume)
    axis = _check_axis(axis)
    thickness = _check_positive(thickness_mm, "slice thickness (mm)")
    try:
        gap = float(gap_mm)
    except (TypeError, ValueError):
        raise InputError(f"slice gap must be a number, got {gap_mm!r}") from None
    if not math.isfinite(gap) or thickness + gap <= 0:
        raise InputError(
            f"slice thickness + gap must be positive, got {thickness} + {gap_mm!r} mm"
        )
    _check_profile(profile)
    blurred = slice_profile_blur(volume, axis, thickness, profile)
    target = slice_grid(volume.grid, axis, thickness + gap)
    return resample(blurred, target, SAMPLING_INTERPOLATION)
