"""k-space (Fourier) truncation: the low-pass filter of an acquisition with fewer phase-encoding lines."""

from __future__ import annotations


import numpy as np
import scipy.fft

from SuperResMoELib.core.errors import InputError
from SuperResMoELib.core.volume import Volume
from SuperResMoELib.simulation._checks import _array_axis, _check_volume, _factors3, _float32
from SuperResMoELib.simulation.tolerances import RELATIVE_TOLERANCE
from SuperResMoELib.core.types import Factors


def kspace_truncate(volume: Volume, factors: Factors) -> Volume:
    """Low-pass a volume by truncating its k-space (Fourier domain).

    Along every IJK axis with factor ``s > 1`` the discrete Fourier transform
    keeps the central ``1/s`` of k-space, i.e. the frequencies with
    ``|f| <= 1 / (2 s)`` cycles per voxel (``|index| <= n / (2 s)``; the kept
    band is symmetric, so a real input gives a real result), and zeroes the
    rest; the inverse transform's real part is returned (no magnitude is
    taken, so signs are kept).  Factor 1 leaves that axis untouched (exactly).

    Geometry: same grid.  Shapes: ``(K, J, I)`` -> ``(K, J, I)`` or
    ``(N, K, J, I)`` -> ``(N, K, J, I)`` (each frame separately), float32.

    Args:
        volume: input volume.
        factors: one factor for all axes or ``(s_i, s_j, s_k)``, each ``>= 1``.

    Raises:
        InputError: a factor below 1 or not finite.
    """
    _check_volume(volume)
    f = _factors3(factors, "k-space truncation factors")
    if np.any(f < 1.0):
        raise InputError(f"k-space truncation factors must be >= 1, got {list(f)}")
    arr = _float32(volume)
    axes = [_array_axis(arr.ndim, a) for a in range(3) if f[a] > 1.0]
    if not axes:
        return volume.with_array(arr.copy())
    spectrum = scipy.fft.fftn(arr, axes=axes)
    for a in range(3):
        if f[a] <= 1.0:
            continue
        ax = _array_axis(arr.ndim, a)
        n = arr.shape[ax]
        freq = np.abs(scipy.fft.fftfreq(n))
        keep = (freq <= 0.5 / f[a] + RELATIVE_TOLERANCE / n).astype(spectrum.real.dtype)
        shape = [1] * arr.ndim
        shape[ax] = n
        spectrum *= keep.reshape(shape)
    out = scipy.fft.ifftn(spectrum, axes=axes).real.astype(np.float32)
    return volume.with_array(out)
