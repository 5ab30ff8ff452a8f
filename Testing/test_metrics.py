"""Tests of SuperResMoELib.evaluation.metrics against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from skimage.metrics import structural_similarity

from SuperResMoELib.evaluation import metrics
from SuperResMoELib.core.errors import InputError
from SuperResMoELib.core.volume import Grid, Volume

#: Side of the volumes used for SSIM (the Gaussian window is 19 voxels wide).
SSIM_SIDE = 20


@pytest.fixture
def ref8() -> np.ndarray:
    """2x2x2 ground truth with two background voxels: 0 1 2 3 4 5 6 0."""
    return np.array([0, 1, 2, 3, 4, 5, 6, 0], dtype=np.float64).reshape(2, 2, 2)


@pytest.fixture
def pred8() -> np.ndarray:
    """2x2x2 prediction: differences (pred - ref) = 1 1 0 -2 0 0 2 3."""
    return np.array([1, 2, 2, 1, 4, 5, 8, 3], dtype=np.float64).reshape(2, 2, 2)


def smooth_volume(side: int = SSIM_SIDE, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    k, j, i = np.meshgrid(*(np.arange(side),) * 3, indexing="ij")
    return 100.0 + 50.0 * np.sin(k / 3.0) * np.cos(j / 4.0) + i + rng.normal(0, 1, (side,) * 3)


# ------------------------------------------------------------------------ MSE
def test_mse_by_hand(ref8, pred8):
    # squared differences: 1 1 0 4 0 0 4 9 -> sum 19 over 8 voxels
    assert metrics.mse(ref8, pred8) == pytest.approx(19 / 8)
    assert metrics.rmse(ref8, pred8) == pytest.approx(math.sqrt(19 / 8))


def test_mse_ssmoe_counts_background_in_denominator_only(ref8, pred8):
    # GT == 0 at voxels 0 and 7 (squared errors 1 and 9): excluded from the sum,
    # remaining 1 + 0 + 4 + 0 + 0 + 4 = 9, divided by all 8 voxels (not by 6).
    assert metrics.mse_ssmoe(ref8, pred8) == pytest.approx(9 / 8)
    assert metrics.mse_ssmoe(ref8, pred8) != pytest.approx(9 / 6)


def test_mse_ssmoe_all_background_is_zero():
    gt = np.zeros((2, 2, 2))
    assert metrics.mse_ssmoe(gt, np.full((2, 2, 2), 7.0)) == 0.0


def test_mse_with_mask(ref8, pred8):
    mask = ref8 != 0  # same voxels as SS-MoE, but averaged over the 6 in the mask
    assert metrics.mse(ref8, pred8, mask) == pytest.approx(9 / 6)
    assert metrics.rmse(ref8, pred8, mask.astype(np.uint8)) == pytest.approx(math.sqrt(9 / 6))


def test_mask_errors(ref8, pred8):
    with pytest.raises(InputError, match="mask shape"):
        metrics.mse(ref8, pred8, np.ones((2, 2)))
    with pytest.raises(InputError, match="no voxel"):
        metrics.mse(ref8, pred8, np.zeros((2, 2, 2), bool))


# ----------------------------------------------------------------------- PSNR
def test_psnr_given_data_range(ref8, pred8):
    # 10 log10(10^2 / (19/8)) = 10 log10(800 / 19)
    assert metrics.psnr(ref8, pred8, data_range=10.0) == pytest.approx(10 * math.log10(800 / 19))


def test_psnr_default_data_range(ref8, pred8):
    # reference max - min = 6 - 0 = 6 -> 10 log10(36 / (19/8)) = 10 log10(288 / 19)
    assert metrics.psnr(ref8, pred8) == pytest.approx(10 * math.log10(288 / 19))


def test_psnr_masked(ref8, pred8):
    assert metrics.psnr(ref8, pred8, mask=ref8 != 0) == pytest.approx(10 * math.log10(36 / 1.5))


def test_psnr_identical_is_inf(ref8):
    assert metrics.psnr(ref8, ref8.copy()) == math.inf


def test_psnr_constant_reference_needs_range():
    with pytest.raises(InputError, match="data_range"):
        metrics.psnr(np.ones((2, 2, 2)), np.zeros((2, 2, 2)))
    with pytest.raises(InputError, match="data_range"):
        metrics.psnr(np.ones((2, 2, 2)), np.zeros((2, 2, 2)), data_range=0.0)
    # 10 log10(4 / 1) with an explicit range of 2
    assert metrics.psnr(np.ones((2, 2, 2)), np.zeros((2, 2, 2)), data_range=2.0) == pytest.approx(
        10 * math.log10(4.0)
    )


# ----------------------------------------------------------------------- SSIM
def test_ssim_identical_is_one():
    vol = smooth_volume()
    assert metrics.ssim3d(vol, vol.copy()) == pytest.approx(1.0)


def test_ssim_perturbed_matches_skimage():
    ref = smooth_volume()
    pred = ref + np.random.default_rng(1).normal(0, 5, ref.shape)
    value = metrics.ssim3d(ref, pred)
    direct = structural_similarity(
        ref,
        pred,
        data_range=ref.max() - ref.min(),
        gaussian_weights=True,
        sigma=2.5,
        use_sample_covariance=False,
    )
    assert value < 1.0
    assert value == pytest.approx(direct, abs=1e-4)
    given = metrics.ssim3d(ref, pred, data_range=255.0)
    assert given == pytest.approx(
        structural_similarity(
            ref, pred, data_range=255.0, gaussian_weights=True, sigma=2.5, use_sample_covariance=False
        ),
        abs=1e-4,
    )


@pytest.mark.parametrize("case", ["offset", "dark", "blocky", "anisotropic", "tiny_range"])
def test_torch_ssim_equals_skimage_on_hard_cases(case):
    """The torch SSIM against scikit-image to 1e-4, 3D and per slice, where float32
    could lose it: a large offset, near-zero images, sharp blocks, thin shapes, tiny ranges."""
    rng = np.random.default_rng(7)
    ref = smooth_volume()
    if case == "offset":
        ref = ref + 1e5
    elif case == "dark":
        ref = ref * 1e-6
    elif case == "blocky":
        ref = np.kron(rng.integers(0, 4, (3, 4, 3)), np.ones((10, 8, 9))).astype(np.float64)
    elif case == "anisotropic":
        ref = rng.normal(size=(20, 60, 31)).cumsum(axis=1)
    elif case == "tiny_range":
        ref = 1.0 + 1e-5 * ref / np.abs(ref).max()
    pred = ref + rng.normal(0, 0.05 * ref.std(), ref.shape)
    dr = float(ref.max() - ref.min())
    kw = dict(gaussian_weights=True, sigma=2.5, use_sample_covariance=False, data_range=dr)
    assert metrics.ssim3d(ref, pred) == pytest.approx(structural_similarity(ref, pred, **kw), abs=1e-4)
    per = np.mean([structural_similarity(ref[:, j], pred[:, j], **kw) for j in range(ref.shape[1])])
    assert metrics.ssim_slices(ref, pred, axis=1) == pytest.approx(per, abs=1e-4)


def test_ssim_window_size_and_small_volume():
    win = metrics.ssim_window_size()
    assert win == 19  # 2 * int(3.5 * 2.5 + 0.5) + 1
    ok = smooth_volume(win)
    assert metrics.ssim3d(ok, ok) == pytest.approx(1.0)
    small = np.ones((win, win, win - 1))
    with pytest.raises(InputError, match="at least 19 voxels"):
        metrics.ssim3d(small, small)
    with pytest.raises(InputError, match="3D"):
        metrics.ssim3d(np.ones((20, 20)), np.ones((20, 20)))


def test_ssim_huge_values_scale_invariant():
    ref = smooth_volume()
    pred = ref + np.random.default_rng(2).normal(0, 5, ref.shape)
    base = metrics.ssim3d(ref, pred)
    factor = 2.0**100  # exact scaling: squares would reach ~1e64, fine, but must not change SSIM
    assert metrics.ssim3d(ref * factor, pred * factor) == pytest.approx(base, rel=1e-12)
    huge = metrics.ssim3d(ref.astype(np.float32) * np.float32(1e30), pred.astype(np.float32) * np.float32(1e30))
    assert huge == pytest.approx(base, rel=1e-4)


# ---------------------------------------------------------------- correlation
def test_correlation_linear_transforms():
    x = np.arange(8, dtype=np.float64).reshape(2, 2, 2)
    assert metrics.correlation(x, 3 * x + 7) == pytest.approx(1.0)
    assert metrics.correlation(x, -2 * x + 1) == pytest.approx(-1.0)


def test_correlation_by_hand():
    # x = 1 2 3, y = 1 3 2: centred x = -1 0 1, y = -1 1 0
    # r = (1 + 0 + 0) / sqrt(2 * 2) = 0.5
    x = np.array([1.0, 2.0, 3.0])
    y = np.array([1.0, 3.0, 2.0])
    assert metrics.correlation(x, y) == pytest.approx(0.5)
    assert metrics.correlation(x, y) == pytest.approx(stats.pearsonr(x, y)[0])


def test_correlation_with_mask():
    x = np.array([1.0, 2.0, 3.0, 100.0])
    y = np.array([1.0, 3.0, 2.0, -50.0])
    assert metrics.correlation(x, y, mask=np.array([1, 1, 1, 0])) == pytest.approx(0.5)


def test_correlation_constant_raises():
    with pytest.raises(InputError, match="prediction is constant"):
        metrics.correlation(np.arange(4.0), np.full(4, 2.0))
    with pytest.raises(InputError, match="reference is constant"):
        metrics.correlation(np.zeros(4), np.arange(4.0))


# ----------------------------------------------------------- dtypes, overflow
def test_uint8_does_not_wrap():
    ref = np.zeros((2, 2, 2), np.uint8)
    pred = np.full((2, 2, 2), 255, np.uint8)
    # every voxel differs by 255 -> 255^2 = 65025 (uint8 arithmetic would give 1)
    assert metrics.mse(ref, pred) == pytest.approx(65025.0)
    assert metrics.mse(pred, ref) == pytest.approx(65025.0)
    assert metrics.psnr(pred, ref, data_range=255.0) == pytest.approx(0.0)


@pytest.mark.parametrize("dtype", [np.int16, np.int64, np.uint16, np.float16, np.float32, bool])
def test_any_numeric_dtype(ref8, pred8, dtype):
    r, p = ref8.astype(dtype), pred8.astype(dtype)
    expected = float(np.mean((r.astype(np.float64) - p.astype(np.float64)) ** 2))
    assert metrics.mse(r, p) == pytest.approx(expected)


def test_huge_values_do_not_overflow():
    ref = np.full((2, 2, 2), 1e30, np.float32)
    pred = np.zeros((2, 2, 2), np.float32)
    expected = float(np.float32(1e30)) ** 2
    assert metrics.mse(ref, pred) == pytest.approx(expected)
    assert metrics.mse_ssmoe(ref, pred) == pytest.approx(expected)
    assert metrics.rmse(ref, pred) == pytest.approx(float(np.float32(1e30)))
    x = np.array([1e200, 2e200, 3e200])
    assert metrics.correlation(x, x[::-1]) == pytest.approx(-1.0)
    # mse = 1e398 is beyond float64, yet PSNR = 20 log10(2e200) - 10 log10(1e398)
    #     = 20 log10(2) + 4000 - 3980 is an ordinary number
    assert metrics.psnr(x, x + 1e199) == pytest.approx(20 * math.log10(2) + 20.0)
    assert metrics.rmse(x, x + 1e199) == pytest.approx(1e199)
    assert metrics.mse(x, x + 1e199) == math.inf  # honestly beyond float64


def test_mse_whose_squares_overflow_but_mean_does_not():
    # each squared difference 1.6e308 is finite; their sum over 4 voxels is not,
    # but the mean is: 1.6e308
    d = math.sqrt(1.6e308)
    ref = np.array([d, d, d, d])
    assert metrics.mse(ref, np.zeros(4)) == pytest.approx(1.6e308)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf_rejected(ref8, bad):
    broken = ref8.copy()
    broken[0, 0, 0] = bad
    for fn in (metrics.mse, metrics.mse_ssmoe, metrics.psnr, metrics.correlation):
        with pytest.raises(InputError, match="NaN or Inf"):
            fn(ref8, broken)
        with pytest.raises(InputError, match="NaN or Inf"):
            fn(broken, ref8)


def test_shape_mismatch_and_empty(ref8):
    for fn in (metrics.mse, metrics.mse_ssmoe, metrics.rmse, metrics.psnr, metrics.correlation, metrics.ssim3d):
        with pytest.raises(InputError, match="different shapes"):
            fn(ref8, np.zeros((2, 2, 3)))
        with pytest.raises(InputError, match="empty"):
            fn(np.zeros((0, 2, 2)), np.zeros((0, 2, 2)))


def test_non_numeric_rejected():
    with pytest.raises(InputError, match="numeric"):
        metrics.mse(np.array(["a", "b"]), np.array(["a", "b"]))


def test_inputs_not_modified(ref8, pred8):
    r, p = ref8.copy(), pred8.copy()
    metrics.mse_ssmoe(r, p)
    metrics.correlation(r, p)
    np.testing.assert_array_equal(r, ref8)
    np.testing.assert_array_equal(p, pred8)


# ------------------------------------------------------------ volume helpers
def make_volume(array: np.ndarray, spacing=(1.0, 1.0, 2.0), origin=(10.0, -5.0, 3.0), name: str = "") -> Volume:
    grid = Grid.from_spacing(np.shape(array)[-3:], spacing, origin)
    return Volume.on_grid(array, grid, name=name)


def test_error_maps_values_and_grid(ref8, pred8):
    ref, pred = make_volume(ref8, name="hr"), make_volume(pred8.astype(np.int16), name="sr")
    sq = metrics.squared_error_map(ref, pred)
    ab = metrics.absolute_error_map(ref, pred)
    # pred - ref = 1 1 0 -2 0 0 2 3
    np.testing.assert_array_equal(sq.array.ravel(), [1, 1, 0, 4, 0, 0, 4, 9])
    np.testing.assert_array_equal(ab.array.ravel(), [1, 1, 0, 2, 0, 0, 2, 3])
    for m in (sq, ab):
        assert m.array.dtype == np.float32
        assert m.grid.same_as(ref.grid)
        np.testing.assert_array_equal(m.ijk_to_ras, ref.ijk_to_ras)
    assert "sr" in sq.name


def test_error_map_uint8_and_4d():
    ref = make_volume(np.zeros((2, 2, 2, 2), np.uint8))
    pred = make_volume(np.full((2, 2, 2, 2), 255, np.uint8))
    sq = metrics.squared_error_map(ref, pred)
    assert sq.is_4d and sq.array.shape == (2, 2, 2, 2)
    assert np.all(sq.array == 65025.0)
    assert np.all(metrics.absolute_error_map(pred, ref).array == 255.0)


def test_error_map_huge_values_stay_finite():
    ref = make_volume(np.zeros((2, 2, 2), np.float32))
    pred = make_volume(np.full((2, 2, 2), 1e30, np.float32))
    sq = metrics.squared_error_map(ref, pred)
    assert np.all(np.isfinite(sq.array))
    assert sq.array.dtype == np.float64


def test_check_same_grid_messages(ref8):
    ref = make_volume(ref8, name="hr")
    metrics.check_same_grid(ref, make_volume(ref8 + 1))
    metrics.check_same_grid(ref, make_volume(ref8, origin=(10.0005, -5.0, 3.0)))  # within 1e-3 mm
    with pytest.raises(InputError) as info:
        metrics.check_same_grid(ref, make_volume(np.zeros((2, 2, 3)), name="sr"))
    msg = str(info.value)
    # sizes and spacings in one stated order, IJK: the (K, J, I) = (2, 2, 3) array is 3x2x2 voxels
    assert "size 2x2x2" in msg and "size 3x2x2" in msg and "(i, j, k)" in msg and "'hr'" in msg and "'sr'" in msg
    with pytest.raises(InputError) as info:
        metrics.check_same_grid(ref, make_volume(ref8, spacing=(0.5, 1.0, 2.0), origin=(0.0, 0.0, 0.0)))
    msg = str(info.value)
    assert "spacing 1x1x2 mm (i, j, k)" in msg and "spacing 0.5x1x2 mm (i, j, k)" in msg
    assert "origin [10.0, -5.0, 3.0]" in msg and "origin [0.0, 0.0, 0.0]" in msg


def test_check_same_grid_frames():
    a = make_volume(np.zeros((3, 2, 2, 2)))
    with pytest.raises(InputError, match="different grids"):
        metrics.check_same_grid(a, make_volume(np.zeros((2, 2, 2, 2))))
    with pytest.raises(InputError, match="different grids"):
        metrics.check_same_grid(a, make_volume(np.zeros((2, 2, 2))))


def test_compare_3d(ref8, pred8):
    out = metrics.compare(make_volume(ref8), make_volume(pred8), include_ssim=False)
    assert set(out) == {"mse", "mse_ssmoe", "rmse", "psnr", "correlation"}
    assert out["mse"] == pytest.approx(19 / 8)
    assert out["mse_ssmoe"] == pytest.approx(9 / 8)
    assert out["rmse"] == pytest.approx(math.sqrt(19 / 8))
    assert out["psnr"] == pytest.approx(10 * math.log10(288 / 19))
    assert out["correlation"] == pytest.approx(stats.pearsonr(ref8.ravel(), pred8.ravel())[0])
    masked = metrics.compare(make_volume(ref8), make_volume(pred8), mask=ref8 != 0, include_ssim=False)
    assert masked["mse"] == pytest.approx(9 / 6)
    assert masked["mse_ssmoe"] == pytest.approx(9 / 8)


def test_compare_with_ssim_and_small_volume(ref8):
    vol = smooth_volume()
    out = metrics.compare(make_volume(vol), make_volume(vol + 1.0))
    assert set(out) == {"mse", "mse_ssmoe", "rmse", "psnr", "ssim", "correlation"}
    assert 0.0 < out["ssim"] < 1.0
    assert out["mse"] == pytest.approx(1.0)
    with pytest.raises(InputError, match="include_ssim=False"):
        metrics.compare(make_volume(ref8), make_volume(ref8))


def test_compare_undefined_metrics_are_nan():
    out = metrics.compare(make_volume(np.ones((2, 2, 2))), make_volume(np.zeros((2, 2, 2))), include_ssim=False)
    assert out["mse"] == 1.0
    assert math.isnan(out["psnr"]) and math.isnan(out["correlation"])


def test_compare_and_per_frame_4d(ref8, pred8):
    ref = np.stack([ref8, ref8, 2 * ref8])
    pred = np.stack([pred8, ref8, 2 * pred8])
    # per-frame SS-MoE MSE: 9/8, 0, 4 * 9/8
    expected = np.array([9 / 8, 0.0, 36 / 8])
    values = metrics.per_frame(make_volume(ref), make_volume(pred))
    assert values.shape == (3,)
    np.testing.assert_allclose(values, expected)
    np.testing.assert_allclose(metrics.per_frame(make_volume(ref), make_volume(pred), "mse"), [19 / 8, 0, 76 / 8])
    out = metrics.compare(make_volume(ref), make_volume(pred), include_ssim=False)
    assert out["mse_ssmoe"] == pytest.approx(expected.mean())
    assert math.isinf(out["psnr"])  # frame 1 is perfect
    spatial_mask = metrics.compare(make_volume(ref), make_volume(pred), mask=ref8 != 0, include_ssim=False)
    assert spatial_mask["mse"] == pytest.approx(np.mean([9 / 6, 0, 36 / 6]))


def test_per_frame_3d_and_unknown_metric(ref8, pred8):
    np.testing.assert_allclose(metrics.per_frame(make_volume(ref8), make_volume(pred8)), [9 / 8])
    with pytest.raises(InputError, match="unknown metric"):
        metrics.per_frame(make_volume(ref8), make_volume(pred8), "mae")


# ----------------------------------------------------------------- statistics
def test_distribution_stats_by_hand():
    s = metrics.distribution_stats(list(range(1, 9)))
    # mean 4.5; deviations +-0.5, +-1.5, +-2.5, +-3.5 -> squares sum 2 * (0.25 + 2.25 + 6.25 + 12.25) = 42
    # population variance 42 / 8 = 5.25
    # linear quantiles: position (n-1) q = 7 q -> q1 at 1.75 -> 2 + 0.75 = 2.75,
    # median at 3.5 -> 4.5, q3 at 5.25 -> 6 + 0.25 = 6.25
    assert s == pytest.approx(
        {
            "n": 8.0,
            "mean": 4.5,
            "std": math.sqrt(5.25),
            "variance": 5.25,
            "min": 1.0,
            "q1": 2.75,
            "median": 4.5,
            "q3": 6.25,
            "max": 8.0,
        }
    )


def test_distribution_stats_errors_and_single_value():
    assert metrics.distribution_stats(np.array([3.0]))["std"] == 0.0
    with pytest.raises(InputError, match="empty"):
        metrics.distribution_stats([])
    with pytest.raises(InputError, match="NaN"):
        metrics.distribution_stats([1.0, float("nan")])
