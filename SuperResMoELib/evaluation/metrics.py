"""Image-quality metrics, error maps and the statistics of quality tables.

Every metric takes two arrays of the same shape (any numeric dtype: bool, int,
uint, float16/32/64), computes in float64 and returns a Python ``float``.
Inputs are never modified.  Problems with the input (different shapes, an empty
array, NaN or Inf voxels, a constant image where a metric is undefined) raise
:class:`~SuperResMoELib.core.errors.InputError`.

Sums of squares are computed on arrays scaled by a power of two (an exact
operation), so huge intensities (say ``1e30`` stored as float32) give the right
answer instead of overflowing to ``inf``.

Conventions:

* ``reference`` is the ground truth (HR image), ``prediction`` the estimate.
* :func:`mse_ssmoe` follows the SS-MoE paper's protocol: squared errors are
  counted only where the ground truth is non-zero, but averaged over *all*
  voxels.
* :func:`ssim3d` is scikit-image's SSIM on the whole 3D array with a Gaussian
  window of ``sigma = 2.5`` (:data:`SSIM_SIGMA`).
* :func:`compare` and :func:`per_frame` take :class:`~SuperResMoELib.core.volume.Volume`
  objects and check first that both lie on the same grid.
"""

from __future__ import annotations

from typing import Callable, Final, Sequence

import numpy as np

from SuperResMoELib.core.errors import InputError
from SuperResMoELib.core.volume import Volume
from SuperResMoELib.evaluation.ssim import ssim_map_mean

#: Standard deviation (voxels) of the Gaussian SSIM window.
SSIM_SIGMA: float = 2.5
#: Truncation (in sigmas) scikit-image uses for Gaussian SSIM windows.
SSIM_TRUNCATE: float = 3.5
#: Grid tolerance (mm) of :func:`check_same_grid`.
DEFAULT_GRID_ATOL_MM: float = 1e-3
#: Metric that :func:`per_frame` reports by default.
DEFAULT_FRAME_METRIC: str = "mse_ssmoe"
#: Data type of error maps (float64 is used only where float32 would overflow).
ERROR_MAP_DTYPE = np.float32
#: numpy quantile method of :func:`distribution_stats` (numpy's default).
QUANTILE_METHOD: Final = "linear"
#: Quartile levels reported by :func:`distribution_stats`.
QUARTILES: tuple[float, float, float] = (0.25, 0.5, 0.75)
#: dtype kinds accepted as numeric input (bool, signed int, unsigned int, float).
NUMERIC_KINDS: str = "biuf"


# --------------------------------------------------------------------- checks
def _as_float64(values: np.ndarray | Sequence[float], name: str) -> np.ndarray:
    """``values`` as a float64 array (a copy only when the dtype changes).

    Raises:
        InputError: non-numeric, empty, or containing NaN/Inf.
    """
    if isinstance(values, Volume):
        values = values.array
    arr = np.asarray(values)
    if arr.dtype.kind not in NUMERIC_KINDS:
        raise InputError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if arr.size == 0:
        raise InputError(f"{name} is empty (shape {arr.shape})")
    out = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(out)):
        n_bad = int(np.count_nonzero(~np.isfinite(out)))
        raise InputError(f"{name} contains {n_bad} NaN or Inf value(s); metrics need finite values")
    return out


def _pair(reference: np.ndarray, prediction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both inputs as float64 arrays of one shape."""
    ref = _as_float64(reference, "reference")
    pred = _as_float64(prediction, "prediction")
    if ref.shape != pred.shape:
        raise InputError(
            f"reference and prediction have different shapes: {ref.shape} vs {pred.shape}"
        )
    return ref, pred


def _mask(mask: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    """A boolean mask of ``shape`` (non-zero = inside), or None.

    Raises:
        InputError: wrong shape or no voxel inside.
    """
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.shape != shape:
        raise InputError(f"mask shape {m.shape} differs from the image shape {shape}")
    m = m != 0
    if not m.any():
        raise InputError("mask selects no voxel")
    return m


def _pow2_scale(*arrays: np.ndarray) -> float:
    """A power of two ``>=`` the largest absolute value (1 for all-zero input).

    Dividing by it is exact and brings every value into ``[-1, 1]``.
    """
    peak = max(float(np.max(np.abs(a))) for a in arrays)
    if peak == 0.0:
        return 1.0
    return float(np.ldexp(1.0, int(np.frexp(peak)[1])))


def _scaled_mean_square_diff(
    ref: np.ndarray, pred: np.ndarray, weights: np.ndarray | None = None
) -> tuple[float, float]:
    """``(m, s)`` with ``mean((ref - pred)^2 * weights) == m * s^2`` and
    ``0 <= m <= 4``: the mean square of the inputs divided by the power of two ``s``."""
    scale = _pow2_scale(ref, pred)
    d = ref / scale - pred / scale
    sq = d * d
    if weights is not None:
        sq = sq * weights
    return float(np.mean(sq)), scale


def _mean_square_diff(ref: np.ndarray, pred: np.ndarray, weights: np.ndarray | None = None) -> float:
    """``mean((ref - pred)^2 * weights)`` over all elements, overflow-safe
    (``inf`` only when the result itself exceeds float64's range)."""
    m, scale = _scaled_mean_square_diff(ref, pred, weights)
    return m * scale * scale


def _masked(ref: np.ndarray, pred: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The voxels of both arrays inside ``mask`` (all voxels when None)."""
    m = _mask(mask, ref.shape)
    return (ref, pred) if m is None else (ref[m], pred[m])


# -------------------------------------------------------------------- metrics
def mse_ssmoe(reference: np.ndarray, prediction: np.ndarray) -> float:
    """Mean squared error with the SS-MoE protocol.

    ``sum((GT - pred)^2 * [GT != 0]) / N`` where ``N`` is the *total* number
    of voxels: background voxels (``GT == 0``) add nothing to the numerator
    but still count in the denominator.

    Args:
        reference: ground truth, any shape, e.g. ``(K, J, I)``.
        prediction: same shape as ``reference``.
    """
    ref, pred = _pair(reference, prediction)
    return _mean_square_diff(ref, pred, (ref != 0).astype(np.float64))


def mse(reference: np.ndarray, prediction: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean squared error ``mean((reference - prediction)^2)``.

    Args:
        reference, prediction: arrays of one shape.
        mask: optional array of that shape; only voxels where it is non-zero
            are averaged.
    """
    ref, pred = _masked(*_pair(reference, prediction), mask)
    return _mean_square_diff(ref, pred)


def rmse(reference: np.ndarray, prediction: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Root mean squared error, ``sqrt(mse(...))``; arguments as :func:`mse`."""
    ref, pred = _masked(*_pair(reference, prediction), mask)
    m, scale = _scaled_mean_square_diff(ref, pred)
    return float(np.sqrt(m)) * scale


def _data_range(ref: np.ndarray, data_range: float | None) -> float:
    """The given data range, or ``ref.max() - ref.min()``; must be positive."""
    if data_range is None:
        dr = float(np.max(ref)) - float(np.min(ref))
        if dr <= 0.0:
            raise InputError(
                "the reference is constant, so its data range is 0; pass data_range explicitly"
            )
        return dr
    dr = float(data_range)
    if not np.isfinite(dr) or dr <= 0.0:
        raise InputError(f"data_range must be a positive finite number, got {data_range}")
    return dr


def psnr(
    reference: np.ndarray,
    prediction: np.ndarray,
    data_range: float | None = None,
    mask: np.ndarray | None = None,
) -> float:
    """Peak signal-to-noise ratio in dB: ``10 log10(data_range^2 / mse)``.

    Args:
        reference, prediction: arrays of one shape.
        data_range: peak-to-peak intensity range; default
            ``reference.max() - reference.min()`` over the whole reference
            (also when a mask is given).
        mask: optional; restricts the MSE to voxels where it is non-zero.

    Returns:
        PSNR in dB; ``inf`` when the images are identical (``mse == 0``).
    """
    ref, pred = _pair(reference, prediction)
    dr = _data_range(ref, data_range)
    m, scale = _scaled_mean_square_diff(*_masked(ref, pred, mask))
    if m == 0.0:
        return float("inf")
    # 10 log10(dr^2 / (m s^2)) without forming dr^2 or s^2 (either may overflow).
    return float(20.0 * np.log10(dr) - 10.0 * np.log10(m) - 20.0 * np.log10(scale))


def ssim_window_size(sigma: float = SSIM_SIGMA) -> int:
    """Side (voxels) of scikit-image's Gaussian SSIM window for ``sigma``:
    ``2 * int(SSIM_TRUNCATE * sigma + 0.5) + 1`` (19 for sigma 2.5)."""
    return 2 * int(SSIM_TRUNCATE * sigma + 0.5) + 1


def ssim3d(reference: np.ndarray, prediction: np.ndarray, data_range: float | None = None) -> float:
    """Mean structural similarity of two 3D volumes.

    The value of :func:`skimage.metrics.structural_similarity` with
    ``gaussian_weights=True, sigma=2.5, use_sample_covariance=False`` on the
    whole ``(K, J, I)`` arrays, computed with separable torch convolutions
    (:mod:`.ssim`; equal to 1e-4).

    Args:
        reference, prediction: ``(K, J, I)`` arrays, each side at least
            :func:`ssim_window_size` (19) voxels.
        data_range: default ``reference.max() - reference.min()``.

    Raises:
        InputError: not 3D, smaller than the window, or constant reference
            without ``data_range``.
    """
    ref, pred = _pair(reference, prediction)
    if ref.ndim != 3:
        raise InputError(f"ssim3d needs 3D arrays (K, J, I), got shape {ref.shape}")
    win = ssim_window_size(SSIM_SIGMA)
    if min(ref.shape) < win:
        raise InputError(
            f"SSIM needs at least {win} voxels along each axis (Gaussian window, sigma "
            f"{SSIM_SIGMA}), the volume has shape {ref.shape}; skip SSIM for such small volumes"
        )
    return float(ssim_map_mean(ref, pred, _data_range(ref, data_range), SSIM_SIGMA, SSIM_TRUNCATE, 3)[0])


def ssim_slices(reference: np.ndarray, prediction: np.ndarray, data_range: float | None = None, axis: int = 0) -> float:
    """Mean 2D structural similarity over the slices along array ``axis`` (as
    :func:`ssim3d`, per slice: the papers that score 2D slices); each slice at
    least :func:`ssim_window_size` pixels on a side.

    Raises:
        InputError: not 3D, slices smaller than the window.
    """
    ref, pred = _pair(reference, prediction)
    if ref.ndim != 3:
        raise InputError(f"ssim_slices needs 3D arrays (K, J, I), got shape {ref.shape}")
    win = ssim_window_size(SSIM_SIGMA)
    if min(np.delete(ref.shape, axis)) < win:
        raise InputError(f"SSIM needs slices of at least {win} x {win} pixels, the volume has shape {ref.shape}")
    dr = _data_range(ref, data_range)
    per_slice = ssim_map_mean(np.moveaxis(ref, axis, 0), np.moveaxis(pred, axis, 0), dr, SSIM_SIGMA, SSIM_TRUNCATE, 2)
    return float(np.mean(per_slice))


def correlation(reference: np.ndarray, prediction: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Pearson correlation coefficient ``r`` in ``[-1, 1]``.

    Args:
        reference, prediction: arrays of one shape.
        mask: optional; only voxels where it is non-zero are used.

    Raises:
        InputError: either image is constant (over the mask), where r is undefined.
    """
    ref, pred = _masked(*_pair(reference, prediction), mask)
    x = ref.ravel() / _pow2_scale(ref)
    y = pred.ravel() / _pow2_scale(pred)
    x = x - x.mean()
    y = y - y.mean()
    sxx = float(np.dot(x, x))
    syy = float(np.dot(y, y))
    for label, s in (("reference", sxx), ("prediction", syy)):
        if s == 0.0:
            raise InputError(f"correlation is undefined: the {label} is constant")
    r = float(np.dot(x, y)) / (np.sqrt(sxx) * np.sqrt(syy))
    return float(np.clip(r, -1.0, 1.0))


#: Metrics by name, each ``f(reference, prediction) -> float`` (used by :func:`per_frame`).
METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "mse": mse,
    "mse_ssmoe": mse_ssmoe,
    "rmse": rmse,
    "psnr": psnr,
    "ssim": ssim3d,
    "correlation": correlation,
}


# ----------------------------------------------------------------- on volumes
def _describe(volume: Volume, role: str) -> str:
    label = f"{role} '{volume.name}'" if volume.name else role
    frames = f"{volume.n_frames} frames of " if volume.is_4d else ""
    return f"{label}: {frames}{volume.grid.describe()}"


def check_same_grid(reference: Volume, prediction: Volume, atol_mm: float = DEFAULT_GRID_ATOL_MM) -> None:
    """Check that two volumes can be compared voxel by voxel.

    Both must have the same array shape (for 4D the same number of frames)
    and IJK->RAS matrices equal within ``atol_mm``.

    Raises:
        InputError: naming both shapes, spacings and origins.
    """
    same = (
        reference.array.shape == prediction.array.shape
        and reference.grid.same_as(prediction.grid, atol=atol_mm)
    )
    if not same:
        raise InputError(
            "reference and prediction are on different grids; resample the prediction onto "
            f"the reference grid first ({_describe(reference, 'reference')}; "
            f"{_describe(prediction, 'prediction')})"
        )


def _error_map(reference: Volume, prediction: Volume, squared: bool, label: str) -> Volume:
    check_same_grid(reference, prediction)
    ref = _as_float64(reference.array, "reference")
    pred = _as_float64(prediction.array, "prediction")
    diff = pred - ref
    err = diff * diff if squared else np.abs(diff)
    limit = float(np.finfo(ERROR_MAP_DTYPE).max)
    dtype = ERROR_MAP_DTYPE if float(np.max(err)) <= limit else np.float64
    name = f"{prediction.name or 'prediction'} {label}"
    return reference.with_array(err.astype(dtype), name=name)


def squared_error_map(reference: Volume, prediction: Volume) -> Volume:
    """Voxel-wise ``(prediction - reference)^2`` on the reference grid.

    Returns:
        A volume shaped like the reference (``(K, J, I)`` or ``(N, K, J, I)``),
        float32 (float64 only where a value exceeds float32's range).
    """
    return _error_map(reference, prediction, squared=True, label="squared error")


def absolute_error_map(reference: Volume, prediction: Volume) -> Volume:
    """Voxel-wise ``|prediction - reference|`` on the reference grid (dtype as
    :func:`squared_error_map`)."""
    return _error_map(reference, prediction, squared=False, label="absolute error")


def _frame_mask(mask: np.ndarray | None, volume: Volume) -> np.ndarray | None:
    """A ``(K, J, I)`` mask for every frame, from a spatial or a full-shape mask
    (a full 4D mask is returned as is and indexed per frame by the caller)."""
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.shape not in (volume.spatial_shape, tuple(volume.array.shape)):
        raise InputError(
            f"mask shape {m.shape} fits neither the spatial shape {volume.spatial_shape} "
            f"nor the volume shape {tuple(volume.array.shape)}"
        )
    return m


def _compare_3d(ref: np.ndarray, pred: np.ndarray, mask: np.ndarray | None, include_ssim: bool) -> dict[str, float]:
    out: dict[str, float] = {
        "mse": mse(ref, pred, mask),
        "mse_ssmoe": mse_ssmoe(ref, pred),
    }
    out["rmse"] = rmse(ref, pred, mask)
    try:
        out["psnr"] = psnr(ref, pred, mask=mask)
    except InputError:
        out["psnr"] = float("nan")  # constant reference: no data range
    if include_ssim:
        try:
            out["ssim"] = ssim3d(ref, pred)
        except InputError as exc:
            if min(ref.shape) < ssim_window_size(SSIM_SIGMA):
                raise InputError(f"{exc} (pass include_ssim=False)") from exc
            out["ssim"] = float("nan")  # constant reference
    try:
        out["correlation"] = correlation(ref, pred, mask)
    except InputError:
        out["correlation"] = float("nan")  # a constant image
    return out


def compare(
    reference: Volume,
    prediction: Volume,
    mask: np.ndarray | None = None,
    include_ssim: bool = True,
) -> dict[str, float]:
    """All metrics of a prediction against its reference.

    Args:
        reference, prediction: volumes on the same grid (:func:`check_same_grid`).
        mask: optional ``(K, J, I)`` (or full 4D) mask for ``mse``, ``rmse``,
            ``psnr`` and ``correlation``; ``mse_ssmoe`` and ``ssim`` always use
            the whole volume.
        include_ssim: compute SSIM (volumes need >= 19 voxels per axis).

    Returns:
        ``{"mse", "mse_ssmoe", "rmse", "psnr", "ssim", "correlation"}``
        (``ssim`` only with ``include_ssim``).  For a 4D volume every value is
        the mean over frames (``rmse`` is the mean of the per-frame RMSEs); use
        :func:`per_frame` for the individual values.  A metric that is
        undefined for these images (``psnr``/``ssim`` of a constant reference,
        ``correlation`` of a constant image) is ``nan`` here instead of an error.
    """
    check_same_grid(reference, prediction)
    m = _frame_mask(mask, reference)
    rows = []
    for n in range(reference.n_frames):
        ref = np.asarray(reference.array[n] if reference.is_4d else reference.array)
        pred = np.asarray(prediction.array[n] if prediction.is_4d else prediction.array)
        fm = m[n] if (m is not None and m.ndim == 4) else m
        rows.append(_compare_3d(ref, pred, fm, include_ssim))
    return {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}


def per_frame(reference: Volume, prediction: Volume, metric: str = DEFAULT_FRAME_METRIC) -> np.ndarray:
    """One metric for every frame of a 4D volume.

    Args:
        reference, prediction: volumes on the same grid, ``(N, K, J, I)``
            (a 3D volume counts as one frame).
        metric: a key of :data:`METRICS`.

    Returns:
        ``(N,)`` float64 values.
    """
    if metric not in METRICS:
        raise InputError(f"unknown metric '{metric}'; choose one of {', '.join(METRICS)}")
    check_same_grid(reference, prediction)
    fn = METRICS[metric]
    refs, preds = reference.frames(), prediction.frames()
    return np.array([fn(r.array, p.array) for r, p in zip(refs, preds)], dtype=np.float64)


# ----------------------------------------------------------------- statistics
def distribution_stats(values: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Summary statistics of a set of per-subject / per-volume values.

    Args:
        values: any shape (flattened), at least one finite value.

    Returns:
        ``n``, ``mean``, ``std`` and ``variance`` (population statistics,
        ``ddof=0``), ``min``, ``q1``, ``median``, ``q3``, ``max`` (quartiles with
        numpy's default ``"linear"`` quantile method).
    """
    v = _as_float64(values, "values").ravel()
    q1, median, q3 = np.quantile(v, QUARTILES, method=QUANTILE_METHOD)
    mean = float(np.mean(v))
    variance = float(np.var(v, ddof=0))
    return {
        "n": float(v.size),
        "mean": mean,
        "std": float(np.sqrt(variance)),
        "variance": variance,
        "min": float(np.min(v)),
        "q1": float(q1),
        "median": float(median),
        "q3": float(q3),
        "max": float(np.max(v)),
    }
