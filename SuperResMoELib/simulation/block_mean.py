"""Block averages: the mean of integer-factor voxel blocks, and the exact area average for non-integer factors.

Factors are listed in ``(i, j, k)`` order; arrays are KJI ``(K, J, I)`` or
with leading frame axes ``(..., K, J, I)`` (every frame averaged alike).

The two averages are kept apart on purpose: :func:`block_mean` (used by
:func:`~SuperResMoELib.simulation.lowres.simulate_low_resolution`'s boxcar
method and by :func:`~SuperResMoELib.sample_data.mudi_downsample`) reduces
each block with one float64 ``mean``, while :func:`area_average` contracts
each axis in turn with fractional overlap weights (``tensordot``, float64,
result left in float64).  For an integer factor both give the same values up
to rounding, but not bit for bit (a sum of ``x / f`` is not ``sum(x) / f``),
so neither replaces the other without changing generated data.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from SuperResMoELib.core.errors import InputError


def _factors_kji(factors: Sequence[int]) -> tuple[int, int, int]:
    """Integer ``(f_i, f_j, f_k)`` -> ``(f_k, f_j, f_i)`` (array axis order)."""
    fi, fj, fk = (int(f) for f in factors)
    return fk, fj, fi


def crop_to_blocks(array: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """``array`` ``(..., K, J, I)`` cropped at the high-index end of each
    spatial axis to a multiple of its factor ``(f_i, f_j, f_k)``: a view
    ``(..., f_k (K // f_k), f_j (J // f_j), f_i (I // f_i))`` (same origin)."""
    fk, fj, fi = _factors_kji(factors)
    k, j, i = array.shape[-3:]
    return array[..., : (k // fk) * fk, : (j // fj) * fj, : (i // fi) * fi]


def block_mean(array: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """The mean of every ``f_i x f_j x f_k`` block of voxels.

    Args:
        array: ``(..., K, J, I)`` with ``K``, ``J``, ``I`` multiples of
            ``f_k``, ``f_j``, ``f_i`` (see :func:`crop_to_blocks`).
        factors: integer block sizes ``(f_i, f_j, f_k)``, each ``>= 1``.

    Returns:
        float32 ``(..., K / f_k, J / f_j, I / f_i)``: LR voxel ``m`` is the mean
        of HR voxels ``m f .. m f + f - 1`` along each axis, accumulated in
        float64.

    Raises:
        InputError: a spatial size that is not a multiple of its factor.
    """
    fk, fj, fi = _factors_kji(factors)
    k, j, i = array.shape[-3:]
    if k % fk or j % fj or i % fi:
        raise InputError(
            f"block mean: shape (K, J, I) = {(k, j, i)} is not a multiple of the factors "
            f"(f_k, f_j, f_i) = {(fk, fj, fi)}"
        )
    lead = array.shape[:-3]
    blocks = array.reshape(lead + (k // fk, fk, j // fj, fj, i // fi, fi))
    d = len(lead)
    return blocks.mean(axis=(d + 1, d + 3, d + 5), dtype=np.float64).astype(np.float32)


def _box_weights(n_out: int, factor: float) -> np.ndarray:
    """``(n_out, n_in)`` area-average weights from 1-unit cells to ``factor``-unit cells."""
    n_in = round(n_out * factor)
    edges = np.arange(n_out + 1, dtype=np.float64) * factor
    cells = np.arange(n_in + 1, dtype=np.float64)
    lo = np.maximum(edges[:-1, None], cells[None, :-1])
    hi = np.minimum(edges[1:, None], cells[None, 1:])
    return np.clip(hi - lo, 0.0, None) / factor


def area_average(array: np.ndarray, out_shape: Sequence[int], factor: float) -> np.ndarray:
    """Exact area (volume) average of a KJI array onto cells ``factor`` times larger.

    Args:
        array: ``(K, J, I)`` with ``K = round(out_shape[0] * factor)`` etc.
        out_shape: ``(K', J', I')`` of the coarse cells; their edges start at
            the first edge of ``array`` along every axis.
        factor: cell size ratio (any positive number, e.g. 2.5), the same on
            every axis.

    Returns:
        float64 ``out_shape``: each coarse cell is the overlap-weighted mean of
        the fine cells it covers (fine cells cut by a coarse edge count with
        the fraction inside).
    """
    out = np.asarray(array, dtype=np.float64)
    for axis, n in enumerate(out_shape):
        w = _box_weights(n, factor)
        out = np.moveaxis(np.tensordot(w, out, axes=(1, axis)), 0, axis)
    return out
