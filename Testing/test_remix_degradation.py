"""REMIx training acquisitions: the drawn grids and their native variant
(thick slices on the HR grid's own in-plane voxels)."""

from __future__ import annotations

import numpy as np
import pytest

from SuperResMoELib.core.geometry import index_map
from SuperResMoELib.core.volume import Grid, Volume
from training.remix.degradation import DegradationConfig, degrade, describe, draw_acquisition, native_slice_grid

#: An LPS-flipped 1 mm grid (a NIfTI-like MNI crop) of 40x48x56 voxels (KJI).
HR_GRID = Grid((40, 48, 56), np.array([[-1.0, 0, 0, 90], [0, 1.0, 0, -120], [0, 0, 1.0, -70], [0, 0, 0, 1]]))


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("phase", [0.0, 0.37, 0.99])
def test_native_slice_grid_keeps_in_plane_voxels_and_covers_the_extent(axis, phase) -> None:
    g = native_slice_grid(HR_GRID, axis, 4.4, phase)
    m = index_map(HR_GRID, g)  # new (i, j, k, 1) -> old continuous index
    a0, a1 = (a for a in range(3) if a != axis)
    # in-plane: new i, j are the old axes a0, a1 with the same voxel centres
    assert m[a0, 0] == 1 and m[a1, 1] == 1 and m[a0, 3] == 0 and m[a1, 3] == 0
    assert (g.size_ijk[0], g.size_ijk[1]) == (HR_GRID.size_ijk[a0], HR_GRID.size_ijk[a1])
    np.testing.assert_allclose(g.spacing, [1.0, 1.0, 4.4])
    # slices: spacing 4.4 old voxels along ``axis``, covering [-0.5, n - 0.5]
    f, first = m[axis, 2], m[axis, 3]
    assert f == pytest.approx(4.4)
    last = first + f * (g.size_ijk[2] - 1)
    n = HR_GRID.size_ijk[axis]
    assert first - f / 2 <= -0.5 + 1e-9 and last + f / 2 >= n - 0.5 - 1e-9
    assert first - f / 2 > -0.5 - f  # no slice wholly outside


def test_native_slice_grid_errors() -> None:
    with pytest.raises(ValueError, match="phase"):
        native_slice_grid(HR_GRID, 0, 3.0, 1.0)
    with pytest.raises(ValueError, match="thickness"):
        native_slice_grid(HR_GRID, 3, 3.0, 0.5)


def test_native_acquisitions_leave_in_plane_voxels_uninterpolated() -> None:
    cfg = DegradationConfig(native_probability=1.0, gap_probability=0.0, noise_fraction=(0.0, 0.0))
    rng = np.random.default_rng(5)
    kji = np.indices(HR_GRID.shape, dtype=np.float64)
    seen = set()
    for b in (2, 3, 5, 7):
        for _ in range(4):
            lr_grid, info = draw_acquisition(HR_GRID, b, cfg, rng)
            assert info["native"] and describe(info).startswith("native ")
            lo, hi = cfg.voxel_volume_range(b)
            assert lo <= info["voxel_volume_mm3"] < hi and np.prod(lr_grid.spacing) == pytest.approx(
                info["voxel_volume_mm3"])
            # the HR axis across the slices: constant images along it come back exactly
            thick = int(np.argmax(np.abs(HR_GRID.direction.T @ lr_grid.direction[:, 2])))
            seen.add(thick)
            pattern = np.sin(0.7 * np.delete(kji, 2 - thick, axis=0).sum(0)) + 2.0  # varies in-plane only
            _, back = degrade(Volume(pattern.astype(np.float32), HR_GRID.ijk_to_ras), lr_grid, info, cfg, rng)
            np.testing.assert_allclose(np.asarray(back.array), pattern, atol=2e-4)
    assert len(seen) >= 2  # several orientations drawn


def test_native_probability_zero_draws_only_resampled_grids_and_small_voxels_fall_back() -> None:
    rng = np.random.default_rng(0)
    infos = [draw_acquisition(HR_GRID, b, DegradationConfig(), rng)[1] for b in range(1, 8) for _ in range(5)]
    assert not any(i["native"] for i in infos)
    # bin 1 voxels no larger than the HR voxel have no thick axis: a resampled grid is drawn instead
    cfg = DegradationConfig(native_probability=1.0)
    infos = [draw_acquisition(HR_GRID, 1, cfg, rng)[1] for _ in range(30)]
    assert all(i["native"] is (i["voxel_volume_mm3"] > 1.0) for i in infos)
    assert {i["native"] for i in infos} == {True, False}


def test_isotropic_acquisitions_have_cubic_voxels_of_the_bins_volume() -> None:
    """``isotropic_probability`` = 1: every draw has equal edges ``v^(1/3)``
    (a 2x2x2 mm-like blur for the large bins); 0 keeps the shipped draws."""
    cfg = DegradationConfig(isotropic_probability=1.0, native_probability=0.5)
    rng = np.random.default_rng(3)
    for b in (1, 4, 7):
        lr_grid, info = draw_acquisition(HR_GRID, b, cfg, rng)
        assert info["isotropic"] and not info["native"] and describe(info).startswith("isotropic ")
        np.testing.assert_allclose(lr_grid.spacing, [info["voxel_volume_mm3"] ** (1 / 3)] * 3, rtol=1e-9)
        lo, hi = cfg.voxel_volume_range(b)
        assert lo <= info["voxel_volume_mm3"] < hi
    off = DegradationConfig()
    a = draw_acquisition(HR_GRID, 5, off, np.random.default_rng(9))
    b = draw_acquisition(HR_GRID, 5, DegradationConfig(isotropic_probability=0.0), np.random.default_rng(9))
    assert not a[1]["isotropic"] and a[0].same_as(b[0])


def test_content_variation_blurs_and_remaps_and_keeps_old_library_keys() -> None:
    """REMIx's cube variation: a blur lowers the high frequencies, gamma remaps
    the contrast around the scale; defaults leave the library keys as they were."""
    from training.remix.data import RemixLibraryConfig, vary_content

    rng = np.random.default_rng(1)
    block = Volume(rng.uniform(0.2, 1.0, (20, 20, 20)).astype(np.float32), HR_GRID.ijk_to_ras)
    same = vary_content(block, 1.0, 0.0, 1.0)
    np.testing.assert_array_equal(np.asarray(same.array), np.asarray(block.array))
    soft = np.asarray(vary_content(block, 1.0, 0.8, 1.0).array)
    assert np.abs(np.diff(soft, axis=2)).mean() < 0.5 * np.abs(np.diff(np.asarray(block.array), axis=2)).mean()
    bright = np.asarray(vary_content(block, 1.0, 0.0, 0.8).array)
    assert np.all(bright >= np.asarray(block.array) - 1e-6)  # gamma < 1 lifts values below the scale
    base = RemixLibraryConfig((0,), 4, 40, 32, DegradationConfig(), 0.1, 0, 0)
    explicit = RemixLibraryConfig((0,), 4, 40, 32, DegradationConfig(), 0.1, 0, 0, hr_blur_mm=(0.0, 0.0),
                                  hr_blur_probability=0.0, contrast_gamma=(1.0, 1.0))
    varied = RemixLibraryConfig((0,), 4, 40, 32, DegradationConfig(), 0.1, 0, 0, hr_blur_mm=(0.3, 0.9),
                                hr_blur_probability=0.3, contrast_gamma=(0.8, 1.25))
    assert base.key(3) == explicit.key(3) != varied.key(3)


def test_library_cache_keys_of_the_shipped_configs_are_stable() -> None:
    """Keys computed by the version that built the bundled checkpoints: new
    options at their defaults must not rename (and so rebuild) those libraries."""
    from training.remix.config import load_config
    from training.remix.train import library_config
    from training.ssmoe.data import LibraryConfig

    assert library_config(load_config("compact")).key(3) == "22f4c1dd36ff7e13"
    assert LibraryConfig("aniso", (0, 1, 2, 3), 168, 16).key() == "d0745a27f7eaa498"
