"""One JSON encoding for everything the package writes (manifests, metrics,
progress lines, training state): numpy scalars and arrays become numbers and
lists, paths strings, enums their values."""

from __future__ import annotations

import enum
import json
from pathlib import PurePath
from typing import Any

import numpy as np


def json_default(obj: Any) -> Any:
    """``json.dumps(default=...)`` hook for numpy, paths and enums.

    Raises:
        TypeError: any other type (as ``json`` itself would).
    """
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _lenient(obj: Any) -> Any:
    try:
        return json_default(obj)
    except TypeError:
        return str(obj)


def dumps(obj: Any, lenient: bool = False, **kwargs: Any) -> str:
    """``json.dumps`` with :func:`json_default`; ``lenient`` writes any other
    object as its ``str`` (for progress lines, which must never fail)."""
    return json.dumps(obj, default=_lenient if lenient else json_default, **kwargs)
