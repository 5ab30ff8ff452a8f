"""Super-resolution grids and resampling, checked in world (RAS) space."""

from __future__ import annotations

import numpy as np
import pytest

from SuperResMoELib.core import geometry
from SuperResMoELib.core.errors import InputError
from SuperResMoELib.core.volume import Grid, Volume

from conftest import make_matrix, rotation


def blob(grid: Grid, center_ras: np.ndarray, sigma_mm: float = 4.0) -> np.ndarray:
    """``(K, J, I)`` Gaussian blob centred at a RAS point."""
    k, j, i = np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij")
    ras = grid.index_to_ras(np.stack([i, j, k], axis=-1))
    d2 = np.sum((ras - center_ras) ** 2, axis=-1)
    return np.exp(-d2 / (2 * sigma_mm**2)).astype(np.float32)


def centroid_ras(vol: Volume) -> np.ndarray:
    k, j, i = np.meshgrid(*[np.arange(n) for n in vol.spatial_shape], indexing="ij")
    ras = vol.grid.index_to_ras(np.stack([i, j, k], axis=-1))
    w = np.asarray(vol.array, np.float64)
    return (ras * w[..., None]).sum(axis=(0, 1, 2)) / w.sum()


@pytest.mark.parametrize("factors", [(1, 1, 2), (2, 2, 2), (3, 1, 1.5)])
def test_scaled_grid_keeps_extent(geom: str, factors) -> None:
    g = Grid((10, 12, 14), make_matrix(geom))
    h = geometry.scaled_grid(g, factors)
    np.testing.assert_allclose(h.corners(), g.corners(), atol=1e-9)
    np.testing.assert_allclose(h.bounds(), g.bounds(), atol=1e-9)
    np.testing.assert_allclose(h.spacing, g.spacing / np.asarray(factors, float), rtol=1e-12)
    np.testing.assert_allclose(h.direction, g.direction, atol=1e-12)
    assert h.size_ijk == tuple(int(round(n * f)) for n, f in zip(g.size_ijk, factors))


def test_origin_shift_formula() -> None:
    """Origin moves by -(s-1)/(2s) old voxels along each axis, through the direction."""
    m = make_matrix("oblique")
    g = Grid((8, 8, 8), m)
    s = np.array([2.0, 1.0, 4.0])
    h = geometry.scaled_grid(g, s)
    shift_idx = -(s - 1) / (2 * s)
    np.testing.assert_allclose(h.origin, g.index_to_ras(shift_idx), atol=1e-12)


def test_upsampling_keeps_a_point_feature_in_place(geom: str) -> None:
    g = Grid((20, 22, 24), make_matrix(geom))
    center = g.index_to_ras([11.3, 10.7, 9.6])
    vol = Volume(blob(g, center, sigma_mm=5.0), g.ijk_to_ras)
    for interp in ("cubic", "linear"):
        up = geometry.upsample(vol, (1, 1, 2), interp)
        np.testing.assert_allclose(centroid_ras(up), centroid_ras(vol), atol=0.05)
    assert up.spatial_shape == (40, 22, 24)


def test_cubic_reproduces_smooth_function_values() -> None:
    """Cubic spline on a quadratic in RAS is accurate at the new voxel centres."""
    g = Grid((24, 24, 24), make_matrix("oblique"))
    f = lambda ras: 0.01 * (ras[..., 0] - 10) ** 2 + 0.5 * ras[..., 1] - 0.2 * ras[..., 2]
    k, j, i = np.meshgrid(*[np.arange(n) for n in g.shape], indexing="ij")
    vol = Volume(f(g.index_to_ras(np.stack([i, j, k], -1))).astype(np.float32), g.ijk_to_ras)
    up = geometry.upsample(vol, 2)
    k, j, i = np.meshgrid(*[np.arange(n) for n in up.spatial_shape], indexing="ij")
    expected = f(up.grid.index_to_ras(np.stack([i, j, k], -1)))
    # spline boundary effects decay by ~0.27 per source voxel: compare 8 voxels in
    inner = (slice(16, -16),) * 3
    np.testing.assert_allclose(up.array[inner], expected[inner], atol=2e-3)


def test_resample_between_differently_oriented_grids() -> None:
    """Blob resampled onto a rotated, flipped grid stays at its RAS position."""
    src = Grid((30, 48, 48), make_matrix("axis"))
    center = src.index_to_ras([23.7, 24.2, 14.6])
    vol = Volume(blob(src, center, 3.0), src.ijk_to_ras)
    m = np.eye(4)
    m[:3, :3] = rotation([1, 1, 0], 35) @ np.diag([-1.0, 1.0, 1.5])
    tgt0 = Grid((1, 1, 1), m)
    # place target so its centre is the blob's centre
    m[:3, 3] = center - tgt0.index_to_ras([15, 15, 10]) + m[:3, 3]
    tgt = Grid((21, 31, 31), m)
    out = geometry.resample(vol, tgt, "linear")
    np.testing.assert_allclose(centroid_ras(out), center, atol=0.1)


def test_same_grid_is_identity() -> None:
    g = Grid((5, 6, 7), make_matrix("flipped"))
    arr = np.random.default_rng(1).normal(size=g.shape).astype(np.float32)
    for interp in ("cubic", "linear", "nearest"):
        out = geometry.resample_array(arr, g, g, interp)
        np.testing.assert_allclose(out, arr, atol=1e-5)


def test_4d_resampled_per_frame() -> None:
    g = Grid((6, 6, 6), make_matrix("axis"))
    arr = np.stack([np.full(g.shape, v, np.float32) for v in (1.0, 5.0)])
    out = geometry.upsample(Volume(arr, g.ijk_to_ras), (2, 2, 1))
    assert out.array.shape == (2, 6, 12, 12)
    np.testing.assert_allclose(out.array[1], 5.0, atol=1e-5)


def test_isotropic_grid() -> None:
    g = Grid((10, 20, 20), np.diag([1.0, 1.0, 5.0, 1.0]))
    iso = geometry.isotropic_grid(g, 1.0)
    assert iso.shape == (50, 20, 20)
    np.testing.assert_allclose(iso.corners(), g.corners())


def test_bad_factors_and_interpolation() -> None:
    g = Grid((4, 4, 4), np.eye(4))
    with pytest.raises(InputError, match="positive"):
        geometry.scaled_grid(g, (1, 0, 2))
    with pytest.raises(InputError, match="unknown interpolation"):
        geometry.resample_array(np.zeros(g.shape), g, g, "sinc")


@pytest.mark.parametrize("factors", [(1.0, 1.0, 4.0), (2.0, 2.0, 2.0), (1.5, 0.7, 3.3), (0.5, 1.0, 1.0)])
def test_separable_cubic_equals_scipy_affine_transform(factors) -> None:
    """Axis-aligned grids take the one-axis-at-a-time cubic path; it gives
    scipy's 3D order-3 ``nearest`` values (edges included) to float32 rounding."""
    from scipy import ndimage

    from SuperResMoELib.core.geometry import _kji_affine, index_map

    rng = np.random.default_rng(0)
    src = Grid((9, 11, 7), make_matrix("axis"))
    arr = rng.normal(size=src.shape).astype(np.float32) * 50
    tgt = geometry.scaled_grid(src, factors)
    lin, off = _kji_affine(index_map(src, tgt))
    assert lin.ndim == 1  # the separable path runs
    ref = ndimage.affine_transform(arr, lin, offset=off, output_shape=tgt.shape, order=3, mode="nearest",
                                   output=np.float32)
    out = geometry.resample_array(arr, src, tgt, "cubic")
    assert out.shape == tgt.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=0, atol=2e-5 * float(np.abs(arr).max()))
    # a flipped axis (negative scale) and a shift too
    m = make_matrix("axis")
    m[:3, 0] *= -1
    shifted = Grid(tgt.shape, m @ np.array([[1, 0, 0, 0.3], [0, 1, 0, -0.2], [0, 0, 1, 0.1], [0, 0, 0, 1.0]]))
    lin, off = _kji_affine(index_map(src, shifted))
    if lin.ndim == 1:
        ref = ndimage.affine_transform(arr, lin, offset=off, output_shape=shifted.shape, order=3, mode="nearest",
                                       output=np.float32)
        np.testing.assert_allclose(geometry.resample_array(arr, src, shifted, "cubic"), ref, rtol=0,
                                   atol=2e-5 * float(np.abs(arr).max()))
