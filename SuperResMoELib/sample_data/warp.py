"""Pull-back warps of 1 mm template images over a box region, slab by slab.

A region is given by its first voxel ``start`` (k, j, i) in template indices
and its ``shape`` ``(K, J, I)``; the displacement is evaluated on it with
:class:`~SuperResMoELib.sample_data.fields._CoarseSampler`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage

from SuperResMoELib.sample_data.fields import _CoarseSampler

def _region_points(start: Sequence[int], shape: Sequence[int], k0: int, k1: int) -> np.ndarray:
    """``(3, k1-k0, J, I)`` 1 mm index coordinates (k, j, i) of slab ``k0:k1`` of a region."""
    pts = np.indices((k1 - k0, shape[1], shape[2]), dtype=np.float64)
    pts[0] += start[0] + k0
    pts[1] += start[1]
    pts[2] += start[2]
    return pts


#: Region slabs processed at once when warping (bounds temporary memory).
_SLAB: int = 16


def _warp_region(
    images: Sequence[np.ndarray],
    orders: Sequence[int],
    displacement: np.ndarray,
    start: Sequence[int],
    shape: Sequence[int],
    extra: Callable[[int, int], None] | None = None,
) -> list[np.ndarray]:
    """Pull-back warp ``out(x) = image(x + u(x))`` of 1 mm images over a box region.

    Args:
        images: KJI arrays on the template grid.
        orders: spline order per image (3: cubic B-spline with prefilter; 1: linear).
        displacement: coarse field from
            :func:`~SuperResMoELib.sample_data.fields._warp_field`.
        start: first voxel (k, j, i) of the region in template indices (may be
            negative / beyond the template: edges are extended).
        shape: region shape (K, J, I).
        extra: optional ``extra(k0, k1)`` hook, called per slab.

    Returns:
        float32 arrays of ``shape``.
    """
    coeffs = [
        ndimage.spline_filter(img, order=3, mode="nearest") if o == 3 else np.asarray(img, np.float32)
        for img, o in zip(images, orders)
    ]
    sampler = _CoarseSampler(displacement, start, shape)
    outs = [np.empty(tuple(shape), dtype=np.float32) for _ in images]
    for k0 in range(0, shape[0], _SLAB):
        k1 = min(shape[0], k0 + _SLAB)
        src = _region_points(start, shape, k0, k1) + sampler(k0, k1)
        for c, o, out in zip(coeffs, orders, outs):
            ndimage.map_coordinates(c, src, output=out[k0:k1], order=o, mode="nearest", prefilter=False)
        if extra is not None:
            extra(k0, k1)
    return outs
