"""Type checks shared by the validated config dataclasses (``bool`` is not a number here)."""

from __future__ import annotations

import math


def is_int(v: object) -> bool:
    """An ``int`` that is not a ``bool``."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_real(v: object) -> bool:
    """A finite ``int`` or ``float`` that is not a ``bool``."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def require_positive_ints(config: object, names: tuple[str, ...], label: str = "") -> None:
    """Raise ``ValueError`` naming the first of the attributes ``names`` of
    ``config`` that is not an int >= 1 (``label`` prefixes the name, e.g. ``"VQ-VAE "``)."""
    for name in names:
        v = getattr(config, name)
        if not is_int(v) or v < 1:
            raise ValueError(f"{label}{name} must be a positive int, got {v!r}")
