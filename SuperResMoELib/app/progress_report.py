"""Progress reporters for the command line: a terminal bar, JSON lines for the
Slicer module (one object per line: ``stage``, ``fraction``, ``message``), or
nothing."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from SuperResMoELib.io.jsonutil import dumps


class JsonLinesProgress:
    """Prints ``{"stage": ..., "fraction": ..., "message": ...}`` per call to ``stream``."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        self.emit({"stage": stage, "fraction": round(float(fraction), 4), "message": message})

    def emit(self, obj: dict[str, Any]) -> None:
        self.stream.write(dumps(obj, lenient=True) + "\n")
        self.stream.flush()

    def close(self) -> None:
        pass


class BarProgress:
    """A tqdm bar on stderr, restarted whenever the stage changes."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.stage: str | None = None
        self.bar: Any = None

    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        from tqdm import tqdm

        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=1000, desc=stage, file=self.stream, leave=False, postfix=[""],
                            bar_format="{desc:>9} {percentage:3.0f}%|{bar:30}| {postfix[0]}")
        self.bar.n = int(round(1000 * min(max(fraction, 0.0), 1.0)))
        self.bar.postfix[0] = message[-70:]
        self.bar.refresh()

    def emit(self, obj: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class NoProgress:
    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        pass

    def emit(self, obj: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def make_reporter(kind: str) -> JsonLinesProgress | BarProgress | NoProgress:
    """``json``, ``bar``, ``none`` or ``auto`` (a bar when stderr is a terminal)."""
    if kind == "json":
        return JsonLinesProgress()
    if kind == "bar" or (kind == "auto" and sys.stderr.isatty()):
        return BarProgress()
    return NoProgress()
