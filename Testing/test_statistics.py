"""Tests of training.statistics (the paired Wilcoxon test of the evaluation tables)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from SuperResMoELib.core.errors import InputError
from training import statistics


def test_wilcoxon_known_p_value():
    # all five differences a - b are negative with distinct magnitudes 1..5:
    # W = 0 and the exact two-sided p = 2 / 2^5 = 0.0625
    a = [1.0, 2.0, 3.0, 4.0, 5.0]
    b = [2.0, 4.0, 6.0, 8.0, 10.0]
    res = statistics.wilcoxon_paired(a, b)
    assert res["statistic"] == 0.0
    assert res["p_value"] == pytest.approx(0.0625)
    assert res["n"] == 5.0
    assert res["median_difference"] == -3.0
    swapped = statistics.wilcoxon_paired(b, a)
    assert swapped["p_value"] == pytest.approx(res["p_value"])
    assert swapped["median_difference"] == 3.0


def test_wilcoxon_matches_scipy():
    rng = np.random.default_rng(3)
    a = rng.normal(0, 1, 30)
    b = a + rng.normal(0.3, 1, 30)
    direct = stats.wilcoxon(a, b, alternative="two-sided")
    res = statistics.wilcoxon_paired(a, b)
    assert res["statistic"] == pytest.approx(direct.statistic)
    assert res["p_value"] == pytest.approx(direct.pvalue)
    assert statistics.wilcoxon_paired(b, a)["p_value"] == pytest.approx(direct.pvalue)


def test_wilcoxon_degenerate_and_errors():
    same = statistics.wilcoxon_paired([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert same["p_value"] == 1.0 and same["statistic"] == 0.0 and same["median_difference"] == 0.0
    with pytest.raises(InputError, match="same length"):
        statistics.wilcoxon_paired([1.0, 2.0], [1.0])
    with pytest.raises(InputError, match="empty"):
        statistics.wilcoxon_paired([], [])
