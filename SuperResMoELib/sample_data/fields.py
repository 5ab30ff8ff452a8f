"""Smooth random fields on a coarse lattice: smoothed noise, diffeomorphic warp fields, trilinear evaluation.

Fields live on a lattice of control points :data:`FIELD_CONTROL_SPACING_MM`
apart over the 1 mm template grid (template index space = mm); arrays are
``(C, K', J', I')`` (C components on the coarse KJI lattice).  The warps pull
back T1 subjects and MUDI tissue maps; the same smoothed noise makes the T1
bias fields (:mod:`~SuperResMoELib.sample_data.t1_variation`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from SuperResMoELib.sample_data.seeds import _rng

#: Spacing (mm) of the coarse lattice on which warps and bias fields live.
FIELD_CONTROL_SPACING_MM: float = 4.0
#: Gaussian smoothing (sigma, mm) of the random stationary velocity field.
WARP_SMOOTHNESS_MM: float = 20.0
#: Largest velocity magnitude (mm); the displacement after integration is of
#: the same size (a few mm).
WARP_MAX_MM: float = 4.0
#: Scaling-and-squaring steps integrating the velocity field into a
#: diffeomorphic displacement (exp of the field).
WARP_SQUARING_STEPS: int = 6


def _coarse_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """Coarse lattice (spacing :data:`FIELD_CONTROL_SPACING_MM`) covering a 1 mm grid."""
    return tuple(math.ceil((n - 1) / FIELD_CONTROL_SPACING_MM) + 1 for n in shape)


def _smooth_noise(rng: np.random.Generator, shape: Sequence[int], n: int, sigma_mm: float) -> np.ndarray:
    """``(n, *shape)`` Gaussian-smoothed white noise on the coarse lattice, zero mean."""
    sigma = sigma_mm / FIELD_CONTROL_SPACING_MM
    noise = rng.standard_normal((n, *shape))
    out = np.stack([ndimage.gaussian_filter(c, sigma, mode="reflect") for c in noise])
    return out - out.mean(axis=tuple(range(1, out.ndim)), keepdims=True)


def _warp_field(seed: int, subject: int, stream: str, shape: Sequence[int]) -> np.ndarray:
    """A smooth diffeomorphic displacement on the coarse lattice of a 1 mm grid.

    A stationary velocity field (smoothed noise, largest magnitude
    :data:`WARP_MAX_MM`) is integrated by scaling and squaring
    (:data:`WARP_SQUARING_STEPS`), ``u <- u + u o (id + u)``.

    Returns:
        ``(3, *coarse_shape)`` float64 displacement in mm along the (k, j, i)
        array axes (= voxels of the 1 mm grid).
    """
    coarse = _coarse_shape(shape)
    v = _smooth_noise(_rng(seed, subject, stream), coarse, 3, WARP_SMOOTHNESS_MM)
    peak = float(np.sqrt((v**2).sum(axis=0)).max())
    u = v * (WARP_MAX_MM / peak / 2**WARP_SQUARING_STEPS)
    points = np.indices(coarse, dtype=np.float64)
    for _ in range(WARP_SQUARING_STEPS):
        at = points + u / FIELD_CONTROL_SPACING_MM
        u = u + np.stack([ndimage.map_coordinates(c, at, order=1, mode="nearest") for c in u])
    return u


def _linear_weights(start: int, n: int, n_coarse: int) -> np.ndarray:
    """``(n, n_coarse)`` linear-interpolation weights from the coarse lattice to
    1 mm indices ``start .. start + n - 1`` (clamped at the lattice ends)."""
    c = np.clip((start + np.arange(n, dtype=np.float64)) / FIELD_CONTROL_SPACING_MM, 0.0, n_coarse - 1)
    i0 = np.minimum(np.floor(c).astype(np.int64), max(n_coarse - 2, 0))
    frac = c - i0
    w = np.zeros((n, n_coarse))
    rows = np.arange(n)
    w[rows, i0] = 1.0 - frac
    if n_coarse > 1:
        w[rows, i0 + 1] += frac
    return w


class _CoarseSampler:
    """Trilinear evaluation of a coarse field ``(C, *coarse)`` on slabs of a 1 mm
    box region, done separably: the field is interpolated along j and i once
    for the whole region, then each slab only mixes two coarse k planes."""

    def __init__(self, field: np.ndarray, start: Sequence[int], shape: Sequence[int]):
        coarse = field.shape[1:]
        wk, wj, wi = (_linear_weights(int(s), int(n), int(c)) for s, n, c in zip(start, shape, coarse))
        f = np.asarray(field, dtype=np.float64)
        f = np.einsum("ckji,Ii->ckjI", f, wi, optimize=True)
        self.partial = np.ascontiguousarray(np.einsum("ckjI,Jj->ckJI", f, wj, optimize=True))
        self.wk = wk

    def __call__(self, k0: int, k1: int) -> np.ndarray:
        """``(C, k1 - k0, J, I)`` values on region slab ``k0:k1``."""
        c, _, n_j, n_i = self.partial.shape
        out = np.zeros((c, k1 - k0, n_j, n_i))
        for n, w in enumerate(self.wk[k0:k1]):
            for k in np.flatnonzero(w):
                out[:, n] += w[k] * self.partial[:, k]
        return out
