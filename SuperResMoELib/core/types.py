"""Type aliases shared across the package (one place, as TorchIO's ``typing``).

Array shapes are in KJI order (slice, row, column); factors, spacings and
sizes of a grid in IJK order unless a name says otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import numpy as np
import numpy.typing as npt

#: One number for every axis, or one per axis ``(i, j, k)`` (a sequence or an array).
Factors = Union[float, Sequence[float], npt.NDArray[np.floating]]
#: A patch or window size: one number for a cube, or ``(k, j, i)``.
PatchSize = Union[int, Sequence[int]]
#: Three integers ``(k, j, i)`` (array order) or ``(i, j, k)`` (grid order), as named.
Int3 = tuple[int, int, int]

__all__ = ["Factors", "Int3", "PatchSize"]
