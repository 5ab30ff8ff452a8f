"""Progress reporting and cancellation shared by every long operation.

A progress callback receives ``(stage, fraction, message)``: a short stage name
(``"load"``, ``"enhance"``, ``"write"``, ...), the fraction done in ``[0, 1]``
for that stage, and a human-readable message.  A :class:`CancelToken` is
polled between units of work; :meth:`CancelToken.check` raises
:class:`~SuperResMoELib.core.errors.CancelledError` once cancellation was asked for.
"""

from __future__ import annotations

import threading
from typing import Callable, Protocol


class ProgressCallback(Protocol):
    def __call__(self, stage: str, fraction: float, message: str = "") -> None: ...


def no_progress(stage: str, fraction: float, message: str = "") -> None:
    """A progress callback that ignores everything."""


class CancelToken:
    """Thread-safe cancellation flag."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise :class:`CancelledError` if :meth:`cancel` was called."""
        if self._event.is_set():
            from SuperResMoELib.core.errors import CancelledError

            raise CancelledError("cancelled by the user")


def scaled(progress: ProgressCallback, start: float, end: float) -> Callable[[str, float, str], None]:
    """A callback mapping fractions ``[0, 1]`` into ``[start, end]`` of ``progress``."""

    def inner(stage: str, fraction: float, message: str = "") -> None:
        progress(stage, start + (end - start) * min(max(fraction, 0.0), 1.0), message)

    return inner
