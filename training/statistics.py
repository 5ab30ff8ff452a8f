"""Significance tests of the paper-protocol evaluation tables (training only).

:func:`wilcoxon_paired` compares two methods' per-volume scores;
:func:`SuperResMoELib.evaluation.metrics.distribution_stats` (used by the
library too) summarises one method's.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import stats

from SuperResMoELib.core.errors import InputError


def _sample(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    """``values`` as a flat float64 array ``(n,)``, ``n >= 1``, all finite.

    Raises:
        InputError: non-numeric, empty, or NaN/Inf values.
    """
    try:
        x = np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must hold numbers: {exc}") from exc
    if x.size == 0:
        raise InputError(f"{name} is empty")
    if not np.isfinite(x).all():
        raise InputError(f"{name} contains {int(np.count_nonzero(~np.isfinite(x)))} NaN or Inf value(s)")
    return x


def wilcoxon_paired(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Two-sided paired Wilcoxon signed-rank test of ``a`` against ``b``
    (:func:`scipy.stats.wilcoxon`, default zero handling and method).

    Args:
        a, b: paired values, same length ``n >= 1`` (e.g. per-subject MSE of
            two methods).

    Returns:
        ``statistic``, ``p_value``, ``n`` (number of pairs) and
        ``median_difference`` (median of ``a - b``).  When every difference is
        zero the test has nothing to rank: ``statistic = 0``, ``p_value = 1``.

    Raises:
        InputError: empty or non-finite samples, or samples of different lengths.
    """
    x, y = _sample(a, "a"), _sample(b, "b")
    if x.shape != y.shape:
        raise InputError(f"paired samples need the same length, got {x.size} and {y.size}")
    diff = x - y
    if not np.any(diff != 0):
        statistic, p_value = 0.0, 1.0
    else:
        res = stats.wilcoxon(x, y, alternative="two-sided")
        statistic, p_value = float(res.statistic), float(res.pvalue)
    return {
        "statistic": statistic,
        "p_value": p_value,
        "n": float(x.size),
        "median_difference": float(np.median(diff)),
    }
