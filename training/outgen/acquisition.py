"""How the out-of-generator set acquires LR images: a slice profile along
each coarsened axis, then one sample per slice at the slice's centre (not the
training degradations, not the Super MUDI block average).

Sizes: along an axis of ``n`` HR voxels and an integer factor ``f``, the LR
has ``n // f`` slices; slice ``m`` covers HR voxels ``f m .. f m + f - 1`` and
sits at their centre, ``f m + (f - 1) / 2`` (between two voxels for even ``f``:
the mean of the two), so the LR grid is ``scaled_grid(hr_cropped, 1 / f)``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def trapezoid(f: int) -> np.ndarray:
    """A trapezoid slice profile of FWHM ``f`` voxels (flat top 0.6 f, full width 1.4 f), sum 1."""
    top, width = 0.6 * f, 1.4 * f
    x = np.arange(-math.ceil(width / 2), math.ceil(width / 2) + 1, dtype=np.float64)
    w = np.clip((width / 2 - np.abs(x)) / ((width - top) / 2), 0.0, 1.0)
    return w / w.sum()


def gaussian(f: int) -> np.ndarray:
    """A Gaussian point-spread function of FWHM ``f`` voxels (truncated at 3 sigma), sum 1."""
    sigma = f / 2.355
    x = np.arange(-math.ceil(3 * sigma), math.ceil(3 * sigma) + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def sample_slices(arr: np.ndarray, factors_kji: tuple[int, int, int], profile) -> np.ndarray:
    """``arr (..., K, J, I)`` filtered by ``profile(f)`` along each axis of factor
    ``f > 1`` and sampled at the slice centres (module docstring)."""
    from scipy import ndimage

    out = np.asarray(arr, np.float64)
    for axis_kji, f in enumerate(factors_kji):
        if f == 1:
            continue
        axis = out.ndim - 3 + axis_kji
        n = out.shape[axis] // f
        out = ndimage.convolve1d(out, profile(f), axis=axis, mode="nearest")
        lo = f * np.arange(n) + (f - 1) // 2
        out = out.take(lo, axis=axis) if f % 2 else 0.5 * (out.take(lo, axis=axis) + out.take(lo + 1, axis=axis))
    return out


def crop_whole(arr: np.ndarray, factors_kji: tuple[int, int, int]) -> np.ndarray:
    """``arr (..., K, J, I)`` cropped at the high end to whole slices."""
    index: tuple[Any, ...] = (Ellipsis, *(slice(0, (n // f) * f) for n, f in zip(arr.shape[-3:], factors_kji)))
    return np.ascontiguousarray(arr[index])
