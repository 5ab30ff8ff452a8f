"""Robust intensity scales, shared by sample data, training and inference.

Structural MRI has arbitrary units; networks trained on one scanner's range
see inputs divided by a robust maximum (a high percentile of the positive
voxels), which ignores a few hot voxels and the zero background.
"""

from __future__ import annotations

import numpy as np

#: Percentile of the positive voxels used as the robust maximum.
ROBUST_MAX_PERCENTILE: float = 99.5


def robust_max(array: np.ndarray, percentile: float = ROBUST_MAX_PERCENTILE) -> float:
    """The ``percentile`` of the positive finite voxels of ``array`` (any shape);
    0.0 for an image without positive voxels."""
    values = np.asarray(array)
    pos = values[np.isfinite(values) & (values > 0)]
    return float(np.percentile(pos, percentile)) if pos.size else 0.0
