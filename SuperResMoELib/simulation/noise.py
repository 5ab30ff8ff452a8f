"""Noise and intensity inhomogeneity: Rician noise and smooth random multiplicative bias fields."""

from __future__ import annotations

import math

import numpy as np
from scipy.interpolate import make_interp_spline

from SuperResMoELib.core.volume import Grid, Volume
from SuperResMoELib.simulation._checks import (
    _check_non_negative,
    _check_positive,
    _check_rng,
    _check_volume,
    _float32,
)
from SuperResMoELib.simulation.tolerances import COVER_TOLERANCE

#: Minimum number of spline control points per axis of a bias field.
BIAS_MIN_CONTROL_POINTS: int = 4


def rician_noise(volume: Volume, sigma: float, rng: np.random.Generator) -> Volume:
    """Add Rician noise: ``|x + n1 + i n2|`` with ``n1, n2 ~ N(0, sigma^2)`` i.i.d.

    ``sigma`` is in the volume's intensity units.  For zero signal the result
    is Rayleigh distributed (mean ``sigma * sqrt(pi / 2)``); for a large signal
    ``A`` its mean tends to ``sqrt(A^2 + sigma^2)``.  The result is never
    negative.  Deterministic for a given generator state.

    Geometry: same grid.  Shapes: unchanged, float32 (4D: independent noise
    in every frame).

    Raises:
        InputError: non-positive ``sigma`` or ``rng`` not a Generator.
    """
    _check_volume(volume)
    s = _check_positive(sigma, "noise sigma")
    _check_rng(rng)
    arr = _float32(volume)
    real = arr + s * rng.standard_normal(arr.shape, dtype=np.float32)
    imag = s * rng.standard_normal(arr.shape, dtype=np.float32)
    return volume.with_array(np.hypot(real, imag).astype(np.float32))


def _spline_weights(positions: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """``(len(positions), len(knots))`` cubic-spline interpolation matrix."""
    spline = make_interp_spline(knots, np.eye(knots.size), k=3)
    return np.asarray(spline(positions), dtype=np.float64)


def bias_field_map(
    grid: Grid, strength: float, rng: np.random.Generator, smoothness_mm: float = 60.0
) -> np.ndarray:
    """A smooth random multiplicative bias field ``exp(f)`` on ``grid``.

    ``f`` is built from i.i.d. standard normal values on a lattice of control
    points spaced ``smoothness_mm`` apart along the grid's own i, j, k axes
    (centred on the grid, at least :data:`BIAS_MIN_CONTROL_POINTS` per axis,
    so small volumes see a slowly varying part of a larger field), interpolated
    to the voxel centres with cubic splines (separably), made zero-mean and
    scaled so that ``max |f| == strength`` exactly (``f = 0`` for strength 0).

    Returns:
        ``exp(f)`` as a float32 ``(K, J, I)`` array (KJI order), values in
        ``[exp(-strength), exp(strength)]``.

    Raises:
        InputError: negative strength, non-positive smoothness, bad ``rng``.
    """
    strength = _check_non_negative(strength, "bias field strength")
    smooth = _check_positive(smoothness_mm, "bias field smoothness (mm)")
    _check_rng(rng)
    weights = []  # in (i, j, k) order
    for a in range(3):
        n = grid.size_ijk[a]
        s = float(grid.spacing[a])
        extent = n * s
        n_ctrl = max(BIAS_MIN_CONTROL_POINTS, int(math.ceil(extent / smooth - COVER_TOLERANCE)) + 1)
        knots = 0.5 * extent + (np.arange(n_ctrl) - 0.5 * (n_ctrl - 1)) * smooth
        centres = (np.arange(n) + 0.5) * s
        weights.append(_spline_weights(centres, knots))
    coeffs = rng.standard_normal((weights[2].shape[1], weights[1].shape[1], weights[0].shape[1]))
    field = np.einsum("abc,ka->kbc", coeffs, weights[2])
    field = np.einsum("kbc,jb->kjc", field, weights[1])
    field = np.einsum("kjc,ic->kji", field, weights[0])
    field -= field.mean()
    peak = float(np.abs(field).max())
    if strength == 0.0 or peak == 0.0:
        return np.ones(grid.shape, dtype=np.float32)
    return np.exp(field * (strength / peak)).astype(np.float32)


def bias_field(
    volume: Volume, strength: float, rng: np.random.Generator, smoothness_mm: float = 60.0
) -> Volume:
    """Multiply the volume by a smooth random bias field ``exp(f)``, ``max|f| = strength``.

    The field is :func:`bias_field_map` ``(volume.grid, strength, rng,
    smoothness_mm)`` (so the same generator state gives the same field); a 4D
    volume gets the same field in every frame (a coil property).

    Geometry: same grid.  Shapes: unchanged, float32.
    """
    _check_volume(volume)
    field = bias_field_map(volume.grid, strength, rng, smoothness_mm)
    return volume.with_array(_float32(volume) * field)
