"""Private argument validators and array helpers of :mod:`SuperResMoELib.simulation`.

Every validator raises :class:`~SuperResMoELib.core.errors.InputError` with a
one-line message naming the argument; the helpers convert a volume's array to
float32 and map IJK axes to array axes of KJI / NKJI arrays.
"""

from __future__ import annotations

import math

import numpy as np

from SuperResMoELib.core.errors import InputError
from SuperResMoELib.core.volume import Volume
from SuperResMoELib.core.types import Factors


def _check_volume(volume: Volume) -> None:
    if not isinstance(volume, Volume):
        raise InputError(f"expected a Volume, got {type(volume).__name__}")


def _check_axis(axis: int) -> int:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not 0 <= int(axis) <= 2:
        raise InputError(f"axis must be 0 (i), 1 (j) or 2 (k), got {axis!r}")
    return int(axis)


def _check_number(value: float, what: str, allow_zero: bool = False) -> float:
    """``value`` as a finite float that is positive (or non-negative)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise InputError(f"{what} must be {'zero or ' if allow_zero else ''}positive, got {value!r}")
    return v


def _check_positive(value: float, what: str) -> float:
    return _check_number(value, what)


def _check_non_negative(value: float, what: str) -> float:
    return _check_number(value, what, allow_zero=True)


def _check_rng(rng: np.random.Generator) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise InputError(
            f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got "
            f"{type(rng).__name__}"
        )
    return rng


def _factors3(factors: Factors, what: str = "factors") -> np.ndarray:
    f = np.asarray(factors, dtype=np.float64).ravel()
    if f.size == 1:
        f = np.repeat(f, 3)
    if f.size != 3:
        raise InputError(f"{what} must be one number or three (i, j, k), got {list(f)}")
    if not np.all(np.isfinite(f)):
        raise InputError(f"{what} must be finite numbers, got {list(f)}")
    return f


def _array_axis(ndim: int, axis: int) -> int:
    """Array axis of IJK ``axis`` in a KJI (3D) or NKJI (4D) array."""
    return ndim - 1 - axis


def _float32(volume: Volume) -> np.ndarray:
    return np.asarray(volume.array, dtype=np.float32)
