"""Figures of the evaluation reports: matplotlib (the optional ``training``
extra) with the file-only Agg backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from SuperResMoELib.core.errors import require_package


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend.

    Raises:
        MissingPackageError: matplotlib is not installed (``superresmoe[training]``).
    """
    require_package("matplotlib", "training", "figures")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> None:
    """Lay out ``fig``, write it to ``path`` (its folder is created) and close it."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    pyplot().close(fig)
