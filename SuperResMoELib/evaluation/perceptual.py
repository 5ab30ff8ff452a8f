"""An offline perceptual measure: GMSD (gradient magnitude similarity
deviation; Xue, Zhang, Mou, Bovik, IEEE TIP 2014).  LPIPS, the paper's
perceptual metric, needs pretrained network weights that cannot be downloaded
here; GMSD needs none and correlates well with human judgements of
distortions.  Lower is better (0 for identical images).

Per 2D slice: both images divided by the data range (peak 1), 2 x 2 average
pooled, Prewitt gradient magnitudes ``m_r``, ``m_d``; the similarity map
``(2 m_r m_d + c) / (m_r^2 + m_d^2 + c)`` with ``c = 170 / 255^2``; GMSD is
its standard deviation.  A volume's GMSD is the mean over its slices along
``axis`` (slices whose reference has no signal are skipped).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: GMSD's constant for images in [0, 1] (the paper's 170 for [0, 255]).
GMSD_C: float = 170.0 / 255.0 ** 2
_PREWITT = np.array([[1.0, 0.0, -1.0], [1.0, 0.0, -1.0], [1.0, 0.0, -1.0]]) / 3.0


def _magnitude(x: np.ndarray) -> np.ndarray:
    return np.hypot(ndimage.convolve(x, _PREWITT, mode="nearest"), ndimage.convolve(x, _PREWITT.T, mode="nearest"))


def _pool(x: np.ndarray) -> np.ndarray:
    h, w = (x.shape[0] // 2) * 2, (x.shape[1] // 2) * 2
    return x[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))


def gmsd_2d(reference: np.ndarray, prediction: np.ndarray, data_range: float) -> float:
    """GMSD of one ``(H, W)`` slice pair (module docstring)."""
    if reference.shape != prediction.shape or reference.ndim != 2:
        raise ValueError(f"GMSD needs two 2D slices of one shape, got {reference.shape} and {prediction.shape}")
    if not data_range > 0:
        raise ValueError(f"data range must be positive, got {data_range}")
    r = _pool(np.asarray(reference, np.float64) / data_range)
    d = _pool(np.asarray(prediction, np.float64) / data_range)
    mr, md = _magnitude(r), _magnitude(d)
    gms = (2.0 * mr * md + GMSD_C) / (mr ** 2 + md ** 2 + GMSD_C)
    return float(gms.std())


def gmsd(reference: np.ndarray, prediction: np.ndarray, data_range: float | None = None, axis: int = 0) -> float:
    """Mean GMSD over the slices along array ``axis`` of two ``(K, J, I)`` volumes
    (``data_range`` default: the reference's max - min)."""
    ref = np.asarray(reference, np.float64)
    pred = np.asarray(prediction, np.float64)
    if ref.shape != pred.shape or ref.ndim != 3:
        raise ValueError(f"GMSD needs two volumes of one shape, got {ref.shape} and {pred.shape}")
    rng = float(ref.max() - ref.min()) if data_range is None else float(data_range)
    values = [gmsd_2d(np.take(ref, n, axis), np.take(pred, n, axis), rng)
              for n in range(ref.shape[axis]) if np.take(ref, n, axis).max() > np.take(ref, n, axis).min()]
    if not values:
        raise ValueError("GMSD: the reference has no slice with signal")
    return float(np.mean(values))
