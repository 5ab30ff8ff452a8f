"""Gradient-nonlinearity distortion: a smooth geometric warp of the image.

The gradient coils' fields are not perfectly linear away from the magnet's
isocentre, so a scan is a slightly warped picture of the anatomy; the
displacement grows with the distance from the centre (vendors describe it by
spherical harmonics of low order).  Here the displacement along each array
axis is a random polynomial of degree up to 3 in the normalised world
position ``u = (x - centre) / radius`` (``|u| <= 1`` inside the field of
view): ``d_a(u) = sum_m c_{a,m} u^m`` over the monomials of degree 2 and 3
(a degree-1 term would only rescale the image, which a scanner calibrates
away), scaled so that the largest displacement component over a lattice of
:data:`FOV_LATTICE` ``^3`` points spanning the field of view (its corners
included) is exactly ``max_mm``.

Conventions: displacements are in mm along the grid's array axes
``(k, j, i)``; :func:`warp_array` samples the input at ``x + d(x)`` (a pull
back), cubic, edge values extended.
"""

from __future__ import annotations

from itertools import combinations_with_replacement

import numpy as np
from scipy import ndimage

from SuperResMoELib.core.volume import Grid
from SuperResMoELib.simulation._checks import _check_non_negative, _check_rng

#: The monomial exponents ``(e_x, e_y, e_z)`` of the displacement polynomial (degrees 2 and 3).
MONOMIALS: tuple[tuple[int, int, int], ...] = tuple(
    tuple(int(sum(1 for a in combo if a == axis)) for axis in range(3))  # type: ignore[misc]
    for degree in (2, 3) for combo in combinations_with_replacement(range(3), degree)
)
#: Points per axis of the field-of-view lattice on which the displacement is normalised.
FOV_LATTICE: int = 9


def _terms(u: np.ndarray) -> np.ndarray:
    """``(M, ...)`` monomials of normalised positions ``u (3, ...)``."""
    return np.stack([u[0] ** ex * u[1] ** ey * u[2] ** ez for ex, ey, ez in MONOMIALS])


def _world_centres(grid: Grid) -> np.ndarray:
    """``(3, K, J, I)`` RAS positions of the voxel centres."""
    k, j, i = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in grid.shape), indexing="ij")
    ijk = np.stack([i, j, k, np.ones_like(i)])
    return np.einsum("ab,bkji->akji", grid.ijk_to_ras, ijk)[:3]


def nonlinearity_displacement(grid: Grid, max_mm: float, rng: np.random.Generator,
                              fov: Grid | None = None) -> np.ndarray:
    """A random gradient-nonlinearity displacement on ``grid`` (module docstring).

    Args:
        grid: where the displacement is evaluated (e.g. a crop).
        max_mm: bound on each component's magnitude inside the field of view.
        rng: draws the coefficients.
        fov: the field of view whose centre and half-diagonal normalise the
            positions (default ``grid`` itself; pass the whole scan's grid when
            ``grid`` is a crop of it, so crops see one scanner's field).

    Returns:
        ``(3, K, J, I)`` float32 displacement in mm along the array axes (k, j, i).
    """
    max_mm = _check_non_negative(max_mm, "gradient-nonlinearity maximum (mm)")
    _check_rng(rng)
    ref = fov if fov is not None else grid
    corners = ref.corners()
    centre = corners.mean(axis=0)
    radius = float(np.max(np.linalg.norm(corners - centre, axis=1)))
    coeffs = rng.standard_normal((3, len(MONOMIALS)))
    t = np.linspace(0.0, 1.0, FOV_LATTICE)
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    lattice = np.stack(np.meshgrid(*(lo[a] + t * (hi[a] - lo[a]) for a in range(3)), indexing="ij"))
    peak = float(np.abs(np.einsum("am,m...->a...", coeffs, _terms((lattice - centre.reshape(3, 1, 1, 1)) / radius))).max())
    coeffs *= max_mm / max(peak, 1e-12)
    u = (_world_centres(grid) - centre.reshape(3, 1, 1, 1)) / radius  # (3, K, J, I), RAS order
    ras = np.einsum("am,mkji->akji", coeffs, _terms(u))  # displacement in RAS mm
    # RAS mm -> array-axis (k, j, i) mm: through the direction matrix (columns = i, j, k axes)
    ijk = np.einsum("ba,bkji->akji", grid.direction, ras)
    return ijk[::-1].astype(np.float32)


def warp_array(array: np.ndarray, displacement_mm: np.ndarray, spacing_kji: np.ndarray) -> np.ndarray:
    """``array`` sampled at ``x + d(x)`` (cubic, edges extended).

    Args:
        array: ``(K, J, I)``.
        displacement_mm: ``(3, K, J, I)`` along the array axes, in mm.
        spacing_kji: voxel spacing along the array axes (mm).

    Returns:
        float32 ``(K, J, I)``.
    """
    if displacement_mm.shape != (3,) + array.shape:
        raise ValueError(f"displacement must be (3,) + {array.shape}, got {displacement_mm.shape}")
    grid = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in array.shape), indexing="ij")
    coords = [g + displacement_mm[a] / float(spacing_kji[a]) for a, g in enumerate(grid)]
    return ndimage.map_coordinates(np.asarray(array, np.float32), coords, order=3, mode="nearest").astype(np.float32)
