"""Tests of SuperResMoELib.simulation: simulated low-resolution acquisitions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from SuperResMoELib.simulation.acquisition import degrade_and_restore, simulate_acquisition
from SuperResMoELib.simulation.clinical_grids import random_clinical_grid
from SuperResMoELib.simulation.kspace import kspace_truncate
from SuperResMoELib.simulation.lowres import simulate_low_resolution
from SuperResMoELib.simulation.noise import bias_field, bias_field_map, rician_noise
from SuperResMoELib.simulation.profiles import acquire_slices, profile_kernel, slice_profile_blur
from SuperResMoELib.core.errors import InputError
from SuperResMoELib.core.geometry import scaled_grid
from SuperResMoELib.core.volume import Grid, Volume

from conftest import make_matrix


# ------------------------------------------------------------------ helpers
def _matrix(kind: str) -> np.ndarray:
    """``axis``: anisotropic, axis aligned; ``oblique``: rotated; ``flipped``:
    negative determinant (the shared test geometries)."""
    return make_matrix(kind)


KINDS = ("axis", "oblique", "flipped")


def _index_grids(shape):
    """Float64 index arrays ``(k, j, i)`` of a KJI shape."""
    return np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")


def _volume(arr, kind: str = "axis") -> Volume:
    return Volume(np.asarray(arr, dtype=np.float32), _matrix(kind), name="t")


def _ras_of_voxels(grid: Grid) -> np.ndarray:
    """``(K, J, I, 3)`` RAS positions of all voxel centres."""
    k, j, i = _index_grids(grid.shape)
    return grid.index_to_ras(np.stack([i, j, k], axis=-1))


def _moment_fwhm(profile_1d: np.ndarray) -> float:
    """FWHM (voxels) of a Gaussian with the profile's second central moment."""
    x = np.arange(profile_1d.size, dtype=np.float64)
    w = profile_1d / profile_1d.sum()
    mu = (w * x).sum()
    return float(np.sqrt((w * (x - mu) ** 2).sum()) * 2 * math.sqrt(2 * math.log(2)))


# ------------------------------------------------------------ kspace_truncate
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_kspace_truncate_keeps_low_removes_high(axis):
    shape = (16, 20, 24)  # k, j, i: different sizes catch axis mix-ups
    n = shape[2 - axis]
    idx = _index_grids(shape)[2 - axis]
    low = np.cos(2 * np.pi * 3 * idx / n)  # 3 cycles: below cutoff n/4
    high = np.sin(2 * np.pi * (n // 2 - 2) * idx / n)  # above cutoff
    factors = [1.0, 1.0, 1.0]
    factors[axis] = 2.0
    vol = _volume(low + high)
    before = np.array(vol.array)
    out = kspace_truncate(vol, factors)
    assert out.array.dtype == np.float32
    assert out.grid.same_as(vol.grid)
    np.testing.assert_allclose(out.array, low, atol=1e-4)
    np.testing.assert_array_equal(vol.array, before)


@pytest.mark.parametrize("factor, last_kept", [(2.0, 6), (3.0, 4), (4.0, 3)])
def test_kspace_truncate_cutoff_is_central_fraction(factor, last_kept):
    n = 24
    k, j, i = _index_grids((4, 5, n))
    kept = np.cos(2 * np.pi * last_kept * i / n)
    dropped = np.cos(2 * np.pi * (last_kept + 1) * i / n)
    np.testing.assert_allclose(kspace_truncate(_volume(kept), (factor, 1, 1)).array, kept, atol=1e-4)
    np.testing.assert_allclose(kspace_truncate(_volume(dropped), (factor, 1, 1)).array, 0, atol=1e-4)


def test_kspace_truncate_high_frequency_other_axis_untouched():
    shape = (16, 16, 16)
    k, j, i = _index_grids(shape)
    sig = np.sin(2 * np.pi * 6 * i / 16) + np.sin(2 * np.pi * 6 * k / 16)
    out = kspace_truncate(_volume(sig), (1.0, 1.0, 4.0))  # only k truncated
    np.testing.assert_allclose(out.array, np.sin(2 * np.pi * 6 * i / 16), atol=1e-4)


def test_kspace_truncate_factor_one_is_identity_and_4d():
    rng = np.random.default_rng(1)
    arr = rng.normal(size=(2, 8, 9, 10)).astype(np.float32)
    vol = Volume(arr, _matrix("flipped"))
    out = kspace_truncate(vol, 1)
    np.testing.assert_array_equal(out.array, arr)
    assert out.array.shape == arr.shape
    per_frame = kspace_truncate(vol, (2, 3, 1.5))
    for n in range(2):
        np.testing.assert_allclose(
            per_frame.array[n], kspace_truncate(vol.frame(n), (2, 3, 1.5)).array, atol=1e-5
        )
    with pytest.raises(InputError, match=">= 1"):
        kspace_truncate(vol, 0.5)
    with pytest.raises(InputError):
        kspace_truncate(vol, (1, 2))


# --------------------------------------------------------- slice_profile_blur
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_gaussian_blur_delta_fwhm_and_axis(axis):
    shape = (40, 41, 42)
    arr = np.zeros(shape, np.float32)
    arr[20, 20, 21] = 1.0
    vol = _volume(arr, "axis")  # spacing (1, 1.5, 2)
    spacing = vol.spacing[axis]
    thickness = 6.0
    out = slice_profile_blur(vol, axis, thickness, "gaussian").array
    assert out.shape == shape and out.dtype == np.float32
    assert out.sum() == pytest.approx(1.0, abs=1e-5)
    centre = [20, 20, 21]
    line_index = list(centre)
    line_index[2 - axis] = slice(None)
    line = out[tuple(line_index)]
    assert line.sum() == pytest.approx(1.0, abs=1e-5)  # all mass on the one line
    assert _moment_fwhm(line) * spacing == pytest.approx(thickness, rel=0.02)
    # nothing moved along the other array axes
    for other in range(3):
        if other != 2 - axis:
            moved = np.delete(out, centre[other], axis=other)
            assert np.abs(moved).max() == 0.0


def test_boxcar_blur_width_and_fractional_ends():
    arr = np.zeros((30, 5, 6), np.float32)
    arr[15, 2, 3] = 1.0
    vol = _volume(arr, "axis")  # k spacing 2 mm
    out = slice_profile_blur(vol, 2, 5.0, "boxcar").array  # 2.5 voxels
    line = out[:, 2, 3]
    np.testing.assert_allclose(line[13:18], [0, 0.3, 0.4, 0.3, 0], atol=1e-6)
    assert line.sum() / line.max() * 2.0 == pytest.approx(5.0, rel=1e-5)  # width in mm
    # integer width: exact box
    np.testing.assert_allclose(profile_kernel(3.0, "boxcar"), [1 / 3] * 3)
    np.testing.assert_allclose(profile_kernel(2.0, "boxcar"), [0.25, 0.5, 0.25])


def test_blur_axis0_vs_axis2_act_on_different_array_axes():
    k, j, i = _index_grids((10, 11, 12))
    ramp_i = _volume(np.sin(i))  # varies along i only
    # blurring along k leaves an image constant along k unchanged
    np.testing.assert_allclose(slice_profile_blur(ramp_i, 2, 8.0).array, ramp_i.array, atol=1e-6)
    assert np.abs(slice_profile_blur(ramp_i, 0, 4.0).array - ramp_i.array).max() > 0.1


def test_blur_constant_stays_constant_and_errors():
    vol = _volume(np.full((6, 7, 8), 3.5), "oblique")
    out = slice_profile_blur(vol, 1, 7.0, "boxcar")
    np.testing.assert_allclose(out.array, 3.5, rtol=1e-6)
    assert out.grid.same_as(vol.grid)
    with pytest.raises(InputError, match="profile"):
        slice_profile_blur(vol, 0, 2.0, "triangle")
    with pytest.raises(InputError, match="axis"):
        slice_profile_blur(vol, 3, 2.0)
    with pytest.raises(InputError, match="axis"):
        slice_profile_blur(vol, -1, 2.0)
    with pytest.raises(InputError, match="positive"):
        slice_profile_blur(vol, 0, 0.0)


# ------------------------------------------------------------ acquire_slices
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("axis", [0, 2])
def test_acquire_slices_geometry(kind, axis):
    shape = (13, 14, 15)
    vol = _volume(np.zeros(shape), kind)
    s = vol.spacing[axis]
    thickness, gap = 2.7 * s, 0.6 * s
    out = acquire_slices(vol, axis, thickness, gap)
    d = thickness + gap
    n_expected = max(1, math.floor(vol.grid.size_ijk[axis] * s / d))
    assert out.grid.size_ijk[axis] == n_expected
    for other in range(3):
        if other != axis:
            assert out.grid.size_ijk[other] == vol.grid.size_ijk[other]
    np.testing.assert_allclose(out.spacing[axis], d, rtol=1e-9)
    np.testing.assert_allclose(np.delete(out.spacing, axis), np.delete(vol.spacing, axis))
    np.testing.assert_allclose(out.direction, vol.direction, atol=1e-12)
    # first slice's outer edge = input's first edge (world space)
    edge_in = vol.grid.index_to_ras(np.array([-0.5, -0.5, -0.5]))
    edge_out = out.grid.index_to_ras(np.array([-0.5, -0.5, -0.5]))
    np.testing.assert_allclose(edge_out, edge_in, atol=1e-9)


def test_acquire_slices_constant_and_ramp_sampling():
    shape = (40, 6, 7)
    k, j, i = _index_grids(shape)
    const = _volume(np.full(shape, 2.0) + np.sin(j) + np.cos(i), "flipped")
    out = acquire_slices(const, 2, 7.0, 1.0, "gaussian")
    # constant along k: every slice equals the input's slice
    np.testing.assert_allclose(out.array, np.broadcast_to(const.array[:1], out.array.shape), atol=1e-5)
    # a linear ramp along k is sampled at the slice centres' RAS positions
    ramp = _volume(10.0 + 0.5 * k, "flipped")
    out = acquire_slices(ramp, 2, 9.0, 3.0, "boxcar")
    centres = _ras_of_voxels(out.grid)
    expected_k = ramp.grid.ras_to_index(centres)[..., 2]
    inner = slice(1, -1)  # edge slices see extended edges under the kernel
    np.testing.assert_allclose(out.array[inner], (10.0 + 0.5 * expected_k)[inner], atol=1e-4)
    assert out.array.shape == (int(40 * 3.0 // 12.0), 6, 7)


def test_acquire_slices_4d_and_errors():
    arr = np.stack([np.full((10, 4, 5), 1.0), np.full((10, 4, 5), 4.0)])
    vol = Volume(arr.astype(np.float32), _matrix("axis"))
    out = acquire_slices(vol, 1, 2.0)  # j spacing 1: 4 * 1 / 2 = 2 slices
    assert out.array.shape == (2, 10, 2, 5)
    np.testing.assert_allclose(out.array[1], 4.0, rtol=1e-6)
    big = acquire_slices(vol, 0, 100.0)  # thicker than the volume: one slice
    assert big.array.shape == (2, 10, 4, 1)
    with pytest.raises(InputError):
        acquire_slices(vol, 0, -1.0)
    with pytest.raises(InputError, match="gap"):
        acquire_slices(vol, 0, 2.0, -2.0)


# -------------------------------------------------------------- rician_noise
def test_rician_noise_statistics_and_seed():
    sigma = 2.0
    zeros = _volume(np.zeros((20, 30, 40)))
    out = rician_noise(zeros, sigma, np.random.default_rng(0))
    assert out.array.dtype == np.float32 and out.array.min() >= 0
    assert out.array.mean() == pytest.approx(sigma * math.sqrt(math.pi / 2), rel=0.02)
    big = _volume(np.full((20, 30, 40), 50.0))
    out_big = rician_noise(big, sigma, np.random.default_rng(1))
    assert out_big.array.mean() == pytest.approx(math.sqrt(50.0**2 + sigma**2), rel=2e-3)
    assert out_big.array.std() == pytest.approx(sigma, rel=0.05)
    a = rician_noise(zeros, sigma, np.random.default_rng(7)).array
    b = rician_noise(zeros, sigma, np.random.default_rng(7)).array
    c = rician_noise(zeros, sigma, np.random.default_rng(8)).array
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert out.grid.same_as(zeros.grid)
    with pytest.raises(InputError, match="sigma"):
        rician_noise(zeros, 0.0, np.random.default_rng(0))
    with pytest.raises(InputError, match="Generator"):
        rician_noise(zeros, 1.0, 42)  # type: ignore[arg-type]


# ---------------------------------------------------------------- bias_field
@pytest.mark.parametrize("kind", KINDS)
def test_bias_field_range_smooth_reproducible(kind):
    vol = _volume(np.full((16, 20, 24), 10.0), kind)
    strength = 0.4
    out = bias_field(vol, strength, np.random.default_rng(3), smoothness_mm=15.0)
    assert out.grid.same_as(vol.grid)
    ratio = out.array / vol.array
    log_r = np.log(ratio.astype(np.float64))
    assert log_r.min() >= -strength - 1e-5 and log_r.max() <= strength + 1e-5
    assert np.abs(log_r).max() == pytest.approx(strength, rel=1e-4)  # max|f| = strength
    assert abs(log_r.mean()) < 1e-5  # f is zero-mean
    # smooth: the log-field changes by at most ~ its full range (2 strength)
    # per 1/3 of the smoothness length (white noise would jump every voxel)
    for ax in range(3):
        slope = np.abs(np.diff(log_r, axis=2 - ax)).max() / vol.spacing[ax]  # per mm
        assert slope < 3 * 2 * strength / 15.0
    field = bias_field_map(vol.grid, strength, np.random.default_rng(3), 15.0)
    assert field.shape == vol.grid.shape and field.dtype == np.float32
    np.testing.assert_allclose(ratio, field, rtol=1e-6)
    other = bias_field_map(vol.grid, strength, np.random.default_rng(4), 15.0)
    assert np.abs(other - field).max() > 1e-3


def test_bias_field_strength_zero_and_4d_and_errors():
    arr = np.random.default_rng(0).uniform(1, 2, (2, 6, 7, 8)).astype(np.float32)
    vol = Volume(arr, _matrix("flipped"))
    np.testing.assert_array_equal(bias_field(vol, 0.0, np.random.default_rng(0)).array, arr)
    out = bias_field(vol, 0.2, np.random.default_rng(0), 20.0).array
    np.testing.assert_allclose(out[0] / arr[0], out[1] / arr[1], rtol=1e-5)  # same field
    with pytest.raises(InputError):
        bias_field(vol, -0.1, np.random.default_rng(0))
    with pytest.raises(InputError):
        bias_field(vol, 0.1, np.random.default_rng(0), smoothness_mm=0.0)


# ------------------------------------------------------- random_clinical_grid
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("orientation", ["axial", "coronal", "sagittal", "oblique", "random"])
def test_random_clinical_grid_properties(kind, orientation):
    grid = Grid((20, 24, 28), _matrix(kind))
    lr, info = random_clinical_grid(grid, 4.5, np.random.default_rng(5), orientation)
    assert lr.voxel_volume == pytest.approx(4.5, rel=1e-6)
    assert info["voxel_volume_mm3"] == pytest.approx(4.5, rel=1e-6)
    sp = lr.spacing
    np.testing.assert_allclose(sp, [info["in_plane_mm"], info["in_plane_mm"], info["thickness_mm"]])
    assert info["thickness_mm"] >= info["in_plane_mm"]
    assert 0.8 <= info["in_plane_mm"] <= 1.3
    assert info["orientation"] in ("axial", "coronal", "sagittal", "oblique")
    if orientation != "random":
        assert info["orientation"] == orientation
    np.testing.assert_allclose(lr.direction.T @ lr.direction, np.eye(3), atol=1e-9)
    through = {"axial": 2, "coronal": 1, "sagittal": 0}
    if info["orientation"] == "oblique":
        assert 0.0 <= info["tilt_deg"] <= 15.0
        base_k = np.eye(3)[through[info["base_orientation"]]]
        angle = math.degrees(math.acos(min(1.0, abs(lr.direction[:, 2] @ base_k))))
        assert angle <= info["tilt_deg"] + 1e-6
    else:
        assert info["tilt_deg"] == 0.0
        np.testing.assert_allclose(lr.direction[:, 2], np.eye(3)[through[info["orientation"]]], atol=1e-12)
    # covers the input's bounding box (its 8 corners lie inside the LR extent)
    b = grid.bounds()
    box = np.array([[x, y, z] for x in b[0] for y in b[1] for z in b[2]])
    idx = lr.ras_to_index(box)
    n = np.array(lr.size_ijk)
    assert np.all(idx >= -0.5 - 1e-6) and np.all(idx <= n - 0.5 + 1e-6)
    # but not by more than one voxel per axis
    assert np.all(n * sp <= (idx.max(0) - idx.min(0)) * sp + sp + 1e-6)


def test_random_clinical_grid_axial_k_along_s_and_reproducible():
    grid = Grid((30, 30, 30), _matrix("axis"))
    lr, info = random_clinical_grid(grid, 6.0, np.random.default_rng(11), "axial")
    np.testing.assert_allclose(lr.direction[:, 2], [0, 0, 1], atol=1e-12)
    assert lr.shape[0] == math.ceil(60.0 / info["thickness_mm"] - 1e-9)
    lr2, info2 = random_clinical_grid(grid, 6.0, np.random.default_rng(11), "axial")
    assert lr.same_as(lr2, atol=0) and info == info2
    cor, _ = random_clinical_grid(grid, 6.0, np.random.default_rng(11), "coronal")
    sag, _ = random_clinical_grid(grid, 6.0, np.random.default_rng(11), "sagittal")
    np.testing.assert_allclose(np.abs(cor.direction[:, 2]), [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(np.abs(sag.direction[:, 2]), [1, 0, 0], atol=1e-12)
    assert not lr.same_as(cor) and not cor.same_as(sag)
    seen = {random_clinical_grid(grid, 6.0, np.random.default_rng(s))[1]["orientation"] for s in range(40)}
    assert seen == {"axial", "coronal", "sagittal", "oblique"}


def test_random_clinical_grid_clamps_small_voxel_volume_and_errors():
    grid = Grid((10, 10, 10), np.eye(4))
    lr, info = random_clinical_grid(grid, 0.5, np.random.default_rng(0), "axial")
    assert info["thickness_mm"] == pytest.approx(info["in_plane_mm"])
    assert info["in_plane_mm"] == pytest.approx(0.5 ** (1 / 3))
    assert lr.voxel_volume == pytest.approx(0.5, rel=1e-6)
    rng = np.random.default_rng(0)
    with pytest.raises(InputError, match="orientation"):
        random_clinical_grid(grid, 2.0, rng, "diagonal")
    with pytest.raises(InputError):
        random_clinical_grid(grid, 0.0, rng)
    with pytest.raises(InputError):
        random_clinical_grid(grid, 2.0, rng, in_plane_range_mm=(1.5, 1.0))


# ------------------------------------------ simulate_acquisition and restore
def _hr_volume(kind: str, n: int = 24):
    """Isotropic 1 mm HR grid with the orientation of ``kind``."""
    m = _matrix(kind)
    m[:3, :3] = m[:3, :3] / np.linalg.norm(m[:3, :3], axis=0)
    return Grid((n, n, n), m)


@pytest.mark.parametrize("kind", ["axis", "flipped"])
@pytest.mark.parametrize("orientation", ["axial", "oblique"])
def test_simulate_acquisition_constant_and_grid(kind, orientation):
    hr_grid = _hr_volume(kind)
    vol = Volume.on_grid(np.full(hr_grid.shape, 7.0, np.float32), hr_grid)
    lr_grid, _ = random_clinical_grid(hr_grid, 4.0, np.random.default_rng(2), orientation)
    before = np.array(vol.array)
    lr, back = degrade_and_restore(vol, lr_grid, "boxcar")
    assert lr.grid.same_as(lr_grid) and lr.array.dtype == np.float32
    assert back.grid.same_as(vol.grid)
    np.testing.assert_allclose(lr.array, 7.0, rtol=1e-5)
    np.testing.assert_allclose(back.array, 7.0, rtol=1e-5)
    np.testing.assert_array_equal(vol.array, before)


def _smooth_and_stripes(grid: Grid, through: np.ndarray):
    ras = _ras_of_voxels(grid)
    centre = grid.bounds().mean(axis=1)
    r = ras - centre
    smooth = 100.0 + 20.0 * np.sin(r[..., 0] / 9.0) * np.cos(r[..., 1] / 11.0) + 0.3 * r[..., 2]
    stripes = 50.0 * np.sin(2 * np.pi * (r @ through) / 2.5)  # 2.5 mm period
    return smooth, stripes


@pytest.mark.parametrize("kind", ["axis", "flipped"])
def test_simulate_acquisition_smooth_survives_stripes_vanish(kind):
    hr_grid = _hr_volume(kind, 28)
    lr_grid, info = random_clinical_grid(hr_grid, 5.0, np.random.default_rng(4), "oblique")
    through = lr_grid.direction[:, 2]
    smooth, stripes = _smooth_and_stripes(hr_grid, through)
    vol_s = Volume.on_grid(smooth.astype(np.float32), hr_grid)
    vol_t = Volume.on_grid(stripes.astype(np.float32), hr_grid)
    lr_s, back_s = degrade_and_restore(vol_s, lr_grid)
    lr_t, back_t = degrade_and_restore(vol_t, lr_grid, interpolation="linear")
    # compare the smooth image with its exact values at the LR centres (interior)
    lr_ras = _ras_of_voxels(lr_grid)
    inside_idx = hr_grid.ras_to_index(lr_ras)
    inside = np.all((inside_idx > 6) & (inside_idx < 28 - 7), axis=-1)
    assert inside.sum() > 50
    r = lr_ras - hr_grid.bounds().mean(axis=1)
    truth = 100.0 + 20.0 * np.sin(r[..., 0] / 9.0) * np.cos(r[..., 1] / 11.0) + 0.3 * r[..., 2]
    assert np.abs(lr_s.array - truth)[inside].max() < 1.5  # smooth: small error
    assert np.abs(lr_t.array[inside]).max() < 0.1 * 50.0  # stripes: strongly attenuated
    assert back_t.grid.same_as(hr_grid)
    core = (slice(6, -6),) * 3
    assert np.abs(back_s.array - smooth)[core].max() < 2.0
    assert np.abs(back_t.array[core]).std() < 0.1 * np.abs(stripes[core]).std()


def test_simulate_acquisition_aligned_blurs_only_thick_axis():
    hr_grid = Grid((32, 12, 12), np.diag([1.0, 1.0, 1.0, 1.0]))
    k, j, i = _index_grids(hr_grid.shape)
    in_plane = 30.0 * np.sin(2 * np.pi * i / 4.0)  # 4 mm period in-plane (i)
    through = 30.0 * np.sin(2 * np.pi * k / 4.0)  # 4 mm period through-plane (k)
    lr_grid = scaled_grid(hr_grid, (1, 1, 0.25))  # 4 mm slices, 1 mm in-plane
    lr_ip = simulate_acquisition(Volume.on_grid(in_plane.astype(np.float32), hr_grid), lr_grid)
    lr_tp = simulate_acquisition(Volume.on_grid(through.astype(np.float32), hr_grid), lr_grid)
    np.testing.assert_allclose(lr_ip.array, in_plane[: lr_grid.shape[0]], atol=1e-4)
    assert np.abs(lr_tp.array[1:-1]).max() < 0.05 * 30.0


def test_simulate_acquisition_aligned_permuted_axes():
    """A coronal LR grid over an axial HR grid: the LR k axis is HR j (A)."""
    hr_grid = Grid((12, 32, 10), np.diag([1.0, 1.0, 1.0, 1.0]))
    k, j, i = _index_grids(hr_grid.shape)
    along_s = 30.0 * np.sin(2 * np.pi * k / 4.0)  # in-plane for coronal
    along_a = 30.0 * np.sin(2 * np.pi * j / 4.0)  # through-plane for coronal
    m = np.eye(4)
    m[:3, :3] = np.array([[1.0, 0, 0], [0, 0, 4.0], [0, 1.0, 0]])  # i=R j=S k=A(4 mm)
    m[:3, 3] = [0.0, 1.5, 0.0]  # first LR slice covers HR j = 0..3
    lr_grid = Grid((8, 12, 10), m)
    lr_s = simulate_acquisition(Volume.on_grid(along_s.astype(np.float32), hr_grid), lr_grid)
    lr_a = simulate_acquisition(Volume.on_grid(along_a.astype(np.float32), hr_grid), lr_grid)
    # lr array [k=A, j=S, i=R]; the S stripes survive untouched
    expected = np.broadcast_to(along_s[:, 0, :][None], lr_grid.shape)
    np.testing.assert_allclose(lr_s.array, expected, atol=1e-4)
    assert np.abs(lr_a.array[1:-1]).max() < 0.05 * 30.0


def test_simulate_acquisition_noise_and_errors():
    hr_grid = _hr_volume("axis", 12)
    vol = Volume.on_grid(np.full(hr_grid.shape, 5.0, np.float32), hr_grid)
    lr_grid = scaled_grid(hr_grid, 0.5)
    a = simulate_acquisition(vol, lr_grid, noise_sigma=1.0, rng=np.random.default_rng(0))
    b = simulate_acquisition(vol, lr_grid, noise_sigma=1.0, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(a.array, b.array)
    assert a.array.std() > 0.3
    with pytest.raises(InputError, match="profile"):
        simulate_acquisition(vol, lr_grid, profile="sinc")
    with pytest.raises(InputError, match="sigma"):
        simulate_acquisition(vol, lr_grid, noise_sigma=-1.0)
    with pytest.raises(InputError, match="interpolation"):
        degrade_and_restore(vol, lr_grid, interpolation="quintic")


# ------------------------------------------------------ simulate_low_resolution
@pytest.mark.parametrize("kind", KINDS)
def test_simulate_low_resolution_boxcar_block_mean_and_crop(kind):
    rng = np.random.default_rng(0)
    arr = rng.normal(size=(13, 10, 11)).astype(np.float32)  # k, j, i
    vol = Volume(arr, _matrix(kind))
    before = arr.copy()
    lr, hr = simulate_low_resolution(vol, (2, 5, 3), "boxcar")  # (i, j, k)
    assert hr.array.shape == (12, 10, 10)
    np.testing.assert_array_equal(hr.array, arr[:12, :10, :10])
    np.testing.assert_array_equal(hr.ijk_to_ras, vol.ijk_to_ras)  # cropped at the high end
    expected = arr[:12, :10, :10].reshape(4, 3, 2, 5, 5, 2).mean(axis=(1, 3, 5))
    np.testing.assert_allclose(lr.array, expected, atol=1e-6)
    assert scaled_grid(lr.grid, (2, 5, 3)).same_as(hr.grid)
    np.testing.assert_allclose(lr.grid.corners(), hr.grid.corners(), atol=1e-9)
    np.testing.assert_array_equal(vol.array, before)


@pytest.mark.parametrize("method", ["boxcar", "gaussian", "kspace"])
def test_simulate_low_resolution_methods_smooth_signal(method):
    shape = (16, 16, 16)
    k, j, i = _index_grids(shape)
    vol = Volume(
        (5.0 + np.cos(2 * np.pi * k / 16) + 0.5 * np.sin(2 * np.pi * i / 16)).astype(np.float32),
        _matrix("oblique"),
    )
    lr, hr = simulate_low_resolution(vol, 2, method)
    assert lr.array.shape == (8, 8, 8)
    assert scaled_grid(lr.grid, 2).same_as(hr.grid)
    # LR voxel m has its centre at HR index 2m + 0.5
    kc = 2 * np.arange(8) + 0.5
    expected_k = np.cos(2 * np.pi * kc / 16)
    profile = lr.array[:, 3, 0] - lr.array[:, 3, 0].mean()
    # low-pass filters attenuate a little but keep shape and phase
    corr = np.corrcoef(profile, expected_k)[0, 1]
    assert corr > 0.99
    assert np.abs(lr.array.mean() - 5.0) < 0.05


def test_simulate_low_resolution_4d_noise_and_errors():
    arr = np.ones((2, 6, 6, 6), np.float32)
    arr[1] *= 3
    vol = Volume(arr, _matrix("flipped"))
    lr, hr = simulate_low_resolution(vol, (3, 2, 1), "gaussian")
    assert lr.array.shape == (2, 6, 3, 2) and hr.array.shape == (2, 6, 6, 6)
    np.testing.assert_allclose(lr.array[1], 3.0, rtol=1e-5)
    noisy, _ = simulate_low_resolution(vol, 2, "kspace", noise_sigma=0.5, rng=np.random.default_rng(0))
    assert noisy.array.std() > 0.1
    with pytest.raises(InputError, match="integer"):
        simulate_low_resolution(vol, 1.5)
    with pytest.raises(InputError, match="integer"):
        simulate_low_resolution(vol, (2, 2, 0))
    with pytest.raises(InputError, match="smaller"):
        simulate_low_resolution(vol, (7, 1, 1))
    with pytest.raises(InputError, match="method"):
        simulate_low_resolution(vol, 2, "bicubic")


# ------------------------------------------------------------- slice gaps
def test_random_clinical_grid_gap_keeps_spacing_and_thins_slices():
    hr_grid = _hr_volume("axis")
    g0, i0 = random_clinical_grid(hr_grid, 5.0, np.random.default_rng(3), "axial")
    g1, i1 = random_clinical_grid(hr_grid, 5.0, np.random.default_rng(3), "axial", gap_fraction=0.25)
    assert g0.same_as(g1) and i1["voxel_volume_mm3"] == pytest.approx(5.0)
    assert i0["gap_mm"] == 0.0 and i0["slice_thickness_mm"] == i0["thickness_mm"]
    assert i1["gap_mm"] == pytest.approx(0.25 * i1["thickness_mm"])
    assert i1["slice_thickness_mm"] == pytest.approx(0.75 * i1["thickness_mm"])
    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(InputError, match="gap fraction"):
            random_clinical_grid(hr_grid, 5.0, np.random.default_rng(3), "axial", gap_fraction=bad)


@pytest.mark.parametrize("orientation", ["axial", "oblique"])
def test_simulate_acquisition_thinner_slices_blur_less(orientation):
    hr_grid = _hr_volume("axis", 32)
    lr_grid, info = random_clinical_grid(hr_grid, 4.0, np.random.default_rng(1), orientation, max_tilt_deg=5.0,
                                         in_plane_range_mm=(1.0, 1.0))
    _, stripes = _smooth_and_stripes(hr_grid, lr_grid.direction[:, 2])  # 2.5 mm period through-plane
    vol = Volume.on_grid(stripes.astype(np.float32), hr_grid)
    full = simulate_acquisition(vol, lr_grid)
    np.testing.assert_array_equal(full.array, simulate_acquisition(vol, lr_grid, thickness_mm=4.0).array)
    thin = simulate_acquisition(vol, lr_grid, thickness_mm=2.0)
    core = (slice(2, -2),) * 3
    assert np.abs(thin.array[core]).mean() > 1.5 * np.abs(full.array[core]).mean()
    for bad in (0.0, -1.0, (1.0, 2.0), float("inf")):
        with pytest.raises(InputError, match="thickness"):
            simulate_acquisition(vol, lr_grid, thickness_mm=bad)
