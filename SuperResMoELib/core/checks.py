"""Type checks shared by the validated config dataclasses (``bool`` is not a number here)."""

from __future__ import annotations

import math


def is_int(v: object) -> bool:
    """An ``int`` that is not a ``bool``."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_real(v: object) -> bool:
    """A finite ``int`` or ``float`` that is not a ``bool``."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
