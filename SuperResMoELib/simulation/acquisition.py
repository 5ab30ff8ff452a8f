"""Simulated acquisitions on arbitrary (possibly oblique) LR grids, and their interpolation back to HR.

The HR volume is blurred with a slice profile along every LR axis coarser than
the HR data, sampled at the LR voxel centres and optionally made noisy.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from SuperResMoELib.core.errors import InputError
from SuperResMoELib.core.geometry import resample, resample_array
from SuperResMoELib.core.volume import Grid, Volume
from SuperResMoELib.simulation._checks import _check_non_negative, _check_rng, _check_volume, _float32
from SuperResMoELib.simulation.noise import rician_noise
from SuperResMoELib.simulation.profiles import SAMPLING_INTERPOLATION, _blur_array, _check_profile
from SuperResMoELib.simulation.tolerances import COVER_TOLERANCE, RELATIVE_TOLERANCE

#: Interpolation used to bring the HR image onto the intermediate (rotated)
#: grid of an oblique acquisition in :func:`simulate_acquisition`.
INTERMEDIATE_INTERPOLATION: str = "linear"

#: Margin (in units of the LR spacing) added on each side of the intermediate
#: grid of an oblique acquisition, so the profile sees real data at the edges.
INTERMEDIATE_MARGIN: float = 2.0


def _aligned_axes(hr: Grid, lr: Grid) -> list[int] | None:
    """For each lr IJK axis, the parallel hr IJK axis; None if not all parallel."""
    cos = np.abs(hr.direction.T @ lr.direction)  # [hr axis, lr axis]
    match = [int(np.argmax(cos[:, a])) for a in range(3)]
    if len(set(match)) != 3 or np.any(cos[match, range(3)] < 1.0 - RELATIVE_TOLERANCE):
        return None
    return match


def _intermediate_grid(lr: Grid, hr: Grid, blur: np.ndarray) -> Grid:
    """A grid aligned with ``lr`` at (at most) the finest HR spacing, covering
    ``lr``'s extent plus :data:`INTERMEDIATE_MARGIN` LR voxels on blurred axes."""
    p = lr.spacing
    h = np.minimum(p, float(hr.spacing.min()))
    margin = np.where(blur, INTERMEDIATE_MARGIN * p, 0.0)
    n_lr = np.array(lr.size_ijk, dtype=np.float64)
    n = np.maximum(1, np.ceil((n_lr * p + 2 * margin) / h - COVER_TOLERANCE)).astype(int)
    # intermediate index u -> lr continuous index -0.5 + (-margin + (u + 0.5) h) / p
    to_lr = np.eye(4)
    to_lr[:3, :3] = np.diag(h / p)
    to_lr[:3, 3] = -0.5 + (-margin + 0.5 * h) / p
    return Grid((int(n[2]), int(n[1]), int(n[0])), lr.ijk_to_ras @ to_lr)


def _profile_widths(lr_grid: Grid, thickness_mm: float | Sequence[float] | None) -> np.ndarray:
    """IJK slice-profile widths: the LR spacing, or the given thickness."""
    if thickness_mm is None:
        return lr_grid.spacing
    t = np.asarray(thickness_mm, dtype=np.float64).ravel()
    if t.size == 1:
        widths = lr_grid.spacing.copy()
        widths[2] = float(t[0])
    elif t.size == 3:
        widths = t.copy()
    else:
        raise InputError(f"slice thickness must be one number (k) or three (i, j, k) in mm, got {thickness_mm!r}")
    if not np.all(np.isfinite(widths)) or np.any(widths <= 0):
        raise InputError(f"slice thickness must be positive, got {thickness_mm!r}")
    return widths


def simulate_acquisition(
    volume: Volume,
    lr_grid: Grid,
    profile: str = "gaussian",
    noise_sigma: float = 0.0,
    rng: np.random.Generator | None = None,
    thickness_mm: float | Sequence[float] | None = None,
) -> Volume:
    """Simulate acquiring the HR ``volume`` on the (possibly oblique) ``lr_grid``.

    Every ``lr_grid`` axis whose profile width exceeds the HR spacing along it
    gets a slice profile (``profile``) of that width (FWHM for Gaussian, width
    for boxcar); the width is the LR spacing unless ``thickness_mm`` (one
    number for the k axis, or ``(i, j, k)``) says otherwise, e.g. thinner
    slices with a gap.  The blurred image is sampled at the LR voxel centres
    with linear interpolation; then, if ``noise_sigma > 0``, Rician noise is
    added (:func:`rician_noise`).

    * If each LR axis is parallel to an HR axis, the blur is applied directly
      on the HR grid along the matching HR axes.
    * Otherwise (oblique), the HR image is first resampled (linear) onto an
      intermediate grid aligned with ``lr_grid`` at the finest HR spacing
      (covering ``lr_grid`` plus a margin), blurred along its axes there, and
      then sampled on ``lr_grid``.

    Outside the HR volume the edge values are extended.

    Geometry: the output is on ``lr_grid``.  Shapes: ``lr_grid.shape``
    (with the frame axis kept for 4D), float32.

    Args:
        rng: needed for noise; ``None`` uses a fresh unseeded
            ``np.random.default_rng()`` (not reproducible).

    Raises:
        InputError: unknown profile, negative noise sigma, non-positive
        thickness.
    """
    _check_volume(volume)
    if not isinstance(lr_grid, Grid):
        raise InputError(f"lr_grid must be a Grid, got {type(lr_grid).__name__}")
    _check_profile(profile)
    sigma = _check_non_negative(noise_sigma, "noise sigma")
    if sigma > 0:
        rng = np.random.default_rng() if rng is None else _check_rng(rng)
    hr = volume.grid
    p = _profile_widths(lr_grid, thickness_mm)
    match = _aligned_axes(hr, lr_grid)
    if match is not None:
        arr = _float32(volume)
        for a in range(3):
            b = match[a]
            if p[a] > hr.spacing[b] * (1.0 + RELATIVE_TOLERANCE):
                arr = _blur_array(arr, b, p[a] / hr.spacing[b], profile)
        out = resample_array(arr, hr, lr_grid, SAMPLING_INTERPOLATION)
    else:
        h = np.minimum(lr_grid.spacing, float(hr.spacing.min()))
        blur = p > h * (1.0 + RELATIVE_TOLERANCE)
        mid = _intermediate_grid(lr_grid, hr, blur)
        arr = resample_array(volume.array, hr, mid, INTERMEDIATE_INTERPOLATION)
        for a in range(3):
            if blur[a]:
                arr = _blur_array(arr, a, p[a] / mid.spacing[a], profile)
        out = resample_array(arr, mid, lr_grid, SAMPLING_INTERPOLATION)
    lr = volume.with_array(out, lr_grid.ijk_to_ras)
    if sigma > 0:
        lr = rician_noise(lr, sigma, rng)  # type: ignore[arg-type]
    return lr


def degrade_and_restore(
    volume: Volume,
    lr_grid: Grid,
    profile: str = "gaussian",
    noise_sigma: float = 0.0,
    rng: np.random.Generator | None = None,
    interpolation: str = "cubic",
) -> tuple[Volume, Volume]:
    """Simulate an LR acquisition and interpolate it back onto the HR grid.

    Returns:
        ``(lr, back)``: ``lr`` = :func:`simulate_acquisition` on ``lr_grid``;
        ``back`` = ``lr`` resampled (``interpolation``: nearest / linear /
        cubic, edges extended) onto ``volume.grid`` — same grid and shape as
        the input (REMIx's training input).  Both float32.
    """
    lr = simulate_acquisition(volume, lr_grid, profile, noise_sigma, rng)
    back = resample(lr, volume.grid, interpolation)
    return lr, back
