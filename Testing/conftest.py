"""Shared fixtures: geometries that catch axis-order and sign mistakes."""

from __future__ import annotations

import numpy as np
import pytest

from SuperResMoELib.core.volume import Grid, Volume


def rotation(axis: np.ndarray, angle_deg: float) -> np.ndarray:
    """``(3, 3)`` rotation about ``axis`` by ``angle_deg`` (Rodrigues)."""
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    t = np.deg2rad(angle_deg)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


def make_matrix(kind: str) -> np.ndarray:
    """IJK->RAS matrices: ``axis`` (identity-like), ``oblique`` (rotated,
    anisotropic), ``flipped`` (negative determinant, LPS-like storage)."""
    m = np.eye(4)
    if kind == "axis":
        m[:3, :3] = np.diag([1.0, 1.0, 2.0])
        m[:3, 3] = [-10.0, -20.0, 5.0]
    elif kind == "oblique":
        m[:3, :3] = rotation([1.0, 2.0, 3.0], 27.0) @ np.diag([0.9, 1.1, 2.5])
        m[:3, 3] = [12.5, -40.25, 7.75]
    elif kind == "flipped":
        m[:3, :3] = rotation([0.0, 1.0, 1.0], 12.0) @ np.diag([-1.2, 0.8, 3.0])
        m[:3, 3] = [100.0, 3.0, -60.5]
    else:
        raise ValueError(kind)
    return m


GEOMETRIES = ("axis", "oblique", "flipped")


@pytest.fixture(params=GEOMETRIES)
def geom(request) -> str:
    return request.param


def smooth_volume(shape=(12, 14, 16), kind: str = "axis", seed: int = 0) -> Volume:
    """A smooth random-ish volume with a distinct value in every voxel."""
    rng = np.random.default_rng(seed)
    k, j, i = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    arr = 100 + 3 * i + 5 * j + 7 * k + rng.normal(0, 0.5, shape).astype(np.float32)
    return Volume(arr.astype(np.float32), make_matrix(kind), name="test")


@pytest.fixture
def grid_of():
    return lambda shape, kind: Grid(shape, make_matrix(kind))
