"""Tests of training.ssmoe.pseudo_labels (SS-MoE pseudo error classes, MQS)."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

from training.ssmoe import pseudo_labels as pl
from training.ssmoe.pseudo_labels import (
    LABELERS,
    count_bounds,
    empirical_thresholds,
    interval_lengths,
    kmeans_thresholds,
    mqs_quantile,
    mqs_segments,
    mqs_thresholds,
    pseudo_labels,
    quantile_thresholds,
)

# ---------------------------------------------------------------------------
# brute-force reference of the MQS definition (small n only)
# ---------------------------------------------------------------------------


def _stat(n: int, l: int, c: int, beta: float) -> float:
    m = c / l
    kl = 0.0
    if m > 0:
        kl += m * np.log(m / beta)
    if m < 1:
        kl += (1 - m) * np.log((1 - m) / (1 - beta))
    return np.sqrt(2 * l * max(kl, 0.0)) - np.sqrt(2 + 2 * np.log(n / l))


def _theta_ok(x, s, e, theta, q, beta, lengths) -> bool:
    """theta feasible for segment [s, e): every system interval inside accepts
    some count between #(< theta) and #(<= theta)."""
    n = x.size
    for l in lengths:
        for a in range(s, e - l + 1):
            w = x[a : a + l]
            c_lt, c_le = int(np.sum(w < theta)), int(np.sum(w <= theta))
            if not any(_stat(n, l, c, beta) <= q + 1e-10 for c in range(c_lt, c_le + 1)):
                return False
    return True


def _brute_segment(x, s, e, q, beta, lengths):
    """(admissible, clipped beta-quantile, check loss) of segment [s, e)."""
    seg = x[s:e]
    ok = [v for v in np.unique(seg) if _theta_ok(x, s, e, v, q, beta, lengths)]
    if not ok:
        return False, None, None
    lo, hi = min(ok), max(ok)
    srt = np.sort(seg)
    m = seg.size
    k_lo = int(np.ceil(beta * m - 1e-9)) - 1
    k_hi = int(np.floor(beta * m + 1e-9))
    theta = float(np.clip(0.5 * (srt[k_lo] + srt[min(k_hi, m - 1)]), lo, hi))
    r = seg - theta
    return True, theta, float(np.sum(r * (beta - (r < 0))))


def _brute_fit(x, q, beta=0.5, n_segments=None):
    n = x.size
    lengths = interval_lengths(n)
    info = {(s, e): _brute_segment(x, s, e, q, beta, lengths)
            for s in range(n) for e in range(s + 1, n + 1)}
    best = None
    for n_cuts in range(n):
        if n_segments is not None and n_cuts + 1 != n_segments:
            continue
        for cuts in itertools.combinations(range(1, n), n_cuts):
            b = (0,) + cuts + (n,)
            segs = [(b[i], b[i + 1]) for i in range(len(b) - 1)]
            if all(info[sg][0] for sg in segs):
                loss = sum(info[sg][2] for sg in segs)
                if best is None or loss < best[0] - 1e-12:
                    best = (loss, [(s, e, info[(s, e)][1]) for s, e in segs])
        if best is not None:
            return best
    return best


# ---------------------------------------------------------------------------
# interval system and local bounds
# ---------------------------------------------------------------------------


def test_interval_lengths():
    lengths = interval_lengths(1500)
    assert list(lengths[:8]) == [1, 2, 3, 4, 6, 8, 11, 16]
    assert lengths[-1] <= 1500 and np.all(np.diff(lengths) > 0)
    assert list(interval_lengths(1)) == [1]
    with pytest.raises(ValueError):
        interval_lengths(0)


@pytest.mark.parametrize("beta", [0.5, 0.3])
@pytest.mark.parametrize("q", [-1.0, 0.0, 1.3, 4.0])
def test_count_bounds_match_brute_force(q, beta):
    n = 200
    lengths = np.array([1, 2, 3, 7, 16, 50, 128, 200])
    a, b, empty = count_bounds(n, lengths, q, beta)
    for g, l in enumerate(lengths):
        ok = [c for c in range(l + 1) if _stat(n, l, c, beta) <= q + 1e-10]
        assert empty[g] == (len(ok) == 0)
        if ok:
            assert (a[g], b[g]) == (ok[0], ok[-1])
            assert ok == list(range(ok[0], ok[-1] + 1))  # contiguous


# ---------------------------------------------------------------------------
# MQS fits
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("noise", ["gauss", "cauchy"])
def test_mqs_recovers_change_points(noise):
    rng = np.random.default_rng(7)
    sizes, medians = [300, 200, 500], [0.0, 5.0, 2.0]
    draw = rng.standard_normal if noise == "gauss" else rng.standard_cauchy
    x = np.concatenate([m + draw(size) for m, size in zip(medians, sizes)])
    q = mqs_quantile(x.size, alpha=0.1)
    segs = mqs_segments(x, q)
    assert len(segs) == 3
    assert segs[0][0] == 0 and segs[-1][1] == x.size
    assert all(segs[i][1] == segs[i + 1][0] for i in range(2))
    assert abs(segs[0][1] - 300) <= 5 and abs(segs[1][1] - 500) <= 5
    tol = 0.25 if noise == "gauss" else 0.4
    for (_, _, value), med in zip(segs, medians):
        assert abs(value - med) < tol


def test_mqs_constant_and_null_sequences():
    assert mqs_segments(np.full(300, 2.5), q=0.0) == [(0, 300, 2.5)]
    assert mqs_segments(np.array([4.0]), q=1.0) == [(0, 1, 4.0)]
    rng = np.random.default_rng(3)
    x = rng.exponential(size=800)  # skewed, no change of the median
    segs = mqs_segments(x, mqs_quantile(800))
    assert len(segs) == 1
    assert abs(segs[0][2] - np.log(2)) < 0.15


def test_mqs_more_segments_for_smaller_q():
    rng = np.random.default_rng(4)
    x = np.sort(rng.lognormal(size=300))
    counts = [len(mqs_segments(x, q)) for q in (-1.0, 0.0, 1.0, 3.0, 10.0)]
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]


def test_mqs_fit_is_admissible_brute_force():
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(0, 1, 60), rng.normal(4, 1, 40)])
    q = 0.5
    segs = mqs_segments(x, q)
    lengths = interval_lengths(x.size)
    for s, e, value in segs:
        assert _theta_ok(x, s, e, value, q, 0.5, lengths)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mqs_dp_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(0, 0.3, 6), rng.normal(3, 0.3, 5)])
    rng.shuffle(x[:6])
    for q in (-1.2, -0.5, 0.5):
        _loss, ref = _brute_fit(x, q)
        got = mqs_segments(x, q)
        assert [(s, e) for s, e, _ in got] == [(s, e) for s, e, _ in ref]
        np.testing.assert_allclose([v for *_, v in got], [v for *_, v in ref])


def test_exact_k_dp_matches_brute_force():
    rng = np.random.default_rng(11)
    x = np.sort(rng.lognormal(size=10))
    problem = pl._MQSProblem(x)
    q = 1.0
    s_min = problem.n_segments(q)
    for k in (s_min, s_min + 1, s_min + 3):
        _loss, ref = _brute_fit(x, q, n_segments=k)
        got = problem.fit(q, n_segments=k)
        assert [(s, e) for s, e, _ in got] == [(s, e) for s, e, _ in ref]
    with pytest.raises(ValueError):
        problem.fit(q, n_segments=x.size + 1)


def test_sorted_fast_path_matches_generic_path():
    rng = np.random.default_rng(6)
    x = np.sort(np.round(rng.lognormal(size=400), 1))  # sorted, with ties
    fast = pl._MQSProblem(x)
    generic = pl._MQSProblem(x)
    generic.sorted = False
    generic.windows = [np.sort(np.lib.stride_tricks.sliding_window_view(x, int(l)), axis=1)
                       for l in generic.lengths]
    assert fast.sorted
    for q in (-1.0, 0.0, 1.0, 2.5):
        a, b = fast.fit(q), generic.fit(q)
        assert [(s, e) for s, e, _ in a] == [(s, e) for s, e, _ in b]
        np.testing.assert_allclose([v for *_, v in a], [v for *_, v in b])


def test_mqs_segments_rejects_bad_input():
    with pytest.raises(ValueError):
        mqs_segments(np.array([]), 1.0)
    with pytest.raises(ValueError):
        mqs_segments(np.array([1.0, np.nan]), 1.0)
    with pytest.raises(ValueError):
        mqs_segments(np.arange(5.0), 1.0, beta=1.0)


# ---------------------------------------------------------------------------
# Monte Carlo quantile
# ---------------------------------------------------------------------------


def test_mqs_quantile_grows_slowly_and_is_reproducible():
    q100, q2000 = mqs_quantile(100), mqs_quantile(2000)
    assert q100 < q2000 < q100 + 1.0
    assert mqs_quantile(300, rng=12) == mqs_quantile(300, rng=12)
    assert mqs_quantile(300, rng=12) != mqs_quantile(300, rng=13)
    assert abs(mqs_quantile(300, rng=12) - mqs_quantile(300, rng=13)) < 0.3
    assert mqs_quantile(300, alpha=0.05) > mqs_quantile(300, alpha=0.5)
    g = mqs_quantile(300, n_sim=200, rng=np.random.default_rng(1))
    assert np.isfinite(g)
    with pytest.raises(ValueError):
        mqs_quantile(0)
    with pytest.raises(ValueError):
        mqs_quantile(10, alpha=1.5)


def test_simulated_statistic_matches_brute_force():
    n, beta = 40, 0.5
    sims = pl._simulate_statistic(n, beta, 5, np.random.default_rng(3))
    rng = np.random.default_rng(3)
    w = rng.random((5, n)) <= beta  # the same draws
    lengths = interval_lengths(n)
    for r in range(5):
        ref = max(_stat(n, int(l), int(w[r, a : a + l].sum()), beta)
                  for l in lengths for a in range(n - l + 1))
        assert sims[r] == pytest.approx(ref)


@pytest.mark.parametrize("kind", ["bernoulli", "uniform"])
def test_mqs_quantile_coverage(kind):
    n, alpha, n_rep = 200, 0.1, 50
    q = mqs_quantile(n, alpha=alpha)
    rng = np.random.default_rng(21)
    single = 0
    for _ in range(n_rep):
        u = rng.random(n)
        x = (u <= 0.5).astype(float) if kind == "bernoulli" else u
        single += len(mqs_segments(x, q)) == 1
    assert single >= 0.8 * n_rep


# ---------------------------------------------------------------------------
# MQS thresholds
# ---------------------------------------------------------------------------


def _clusters(log_means, sizes, sd=0.2, seed=0):
    rng = np.random.default_rng(seed)
    parts = [rng.lognormal(m, sd, s) for m, s in zip(log_means, sizes)]
    return np.concatenate(parts), parts


def _between_clusters(thresholds, parts):
    parts = sorted(parts, key=np.median)
    return all(parts[i].max() < t < parts[i + 1].min() for i, t in enumerate(thresholds))


@pytest.mark.parametrize("sizes", [[375, 375, 375, 375], [300, 450, 350, 400]])
def test_mqs_thresholds_k4_between_clusters(sizes):
    scores, parts = _clusters([-6, -4, -2, 0], sizes)
    rng = np.random.default_rng(1)
    scores = rng.permutation(scores)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # k = 4 reached by the q bisection, not by the warned fallback
        th = mqs_thresholds(scores, k=4)
    assert th.shape == (3,) and np.all(np.diff(th) > 0)
    assert _between_clusters(th, parts)
    # the scores are used as a set: the same thresholds whatever their order
    np.testing.assert_array_equal(th, mqs_thresholds(np.sort(scores)[::-1], k=4))


@pytest.mark.parametrize("k", [2, 8])
def test_mqs_thresholds_other_k(k):
    scores, parts = _clusters(2.0 * np.arange(k), [150] * k, seed=k)
    th = mqs_thresholds(scores, k=k)
    assert th.shape == (k - 1,)
    assert _between_clusters(th, parts)


def test_mqs_thresholds_large_input_subsampled_and_free_k():
    rng = np.random.default_rng(8)
    scores = rng.lognormal(-3, 1, 50_000)
    th4 = mqs_thresholds(scores, k=4, max_points=1500)
    assert th4.shape == (3,) and np.all(np.diff(th4) > 0)
    assert scores.min() < th4[0] and th4[-1] < scores.max()
    th = mqs_thresholds(scores)  # k from the MC quantile
    assert th.ndim == 1 and th.size >= 1 and np.all(np.diff(th) > 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        th40 = mqs_thresholds(scores, k=40)
    assert th40.shape == (39,) and np.all(np.diff(th40) > 0)


def test_mqs_thresholds_with_zero_scores_and_linear_scale():
    rng = np.random.default_rng(9)
    scores = np.concatenate([np.zeros(200), rng.lognormal(0, 0.2, 200), rng.lognormal(3, 0.2, 200)])
    th = mqs_thresholds(scores, k=3)
    assert 0.0 < th[0] < np.exp(-0.6) and np.exp(0.6) < th[1] < np.exp(2.4)
    th_lin = mqs_thresholds(scores, k=3, log_scale=False)
    assert th_lin.shape == (2,) and np.all(np.diff(th_lin) > 0)


def test_mqs_thresholds_impossible_k():
    scores = np.repeat([1.0, 2.0, 3.0], 20)
    assert mqs_thresholds(scores, k=3).shape == (2,)
    with pytest.raises(ValueError, match="distinct"):
        mqs_thresholds(scores, k=4)
    with pytest.raises(ValueError):
        mqs_thresholds(scores, k=0)


# ---------------------------------------------------------------------------
# other labelers
# ---------------------------------------------------------------------------


def test_quantile_thresholds_are_quartiles():
    rng = np.random.default_rng(10)
    scores = rng.gamma(2.0, size=999)
    np.testing.assert_allclose(quantile_thresholds(scores, 4),
                               np.quantile(scores, [0.25, 0.5, 0.75]))
    assert quantile_thresholds(scores, 1).shape == (0,)


def test_empirical_thresholds_log_spaced():
    scores = np.array([-1.0, 0.0, 0.01, 0.5, 3.0, 10.0])
    th = empirical_thresholds(scores, 5)
    expected = np.exp(np.log(0.01) + (np.log(10.0) - np.log(0.01)) * np.arange(1, 5) / 5)
    np.testing.assert_allclose(th, expected)
    np.testing.assert_allclose(np.diff(np.log(th)), np.log(1000.0) / 5)
    with pytest.raises(ValueError):
        empirical_thresholds(np.array([0.0, -1.0]), 3)


def test_kmeans_thresholds_between_clusters():
    scores, parts = _clusters([-6, -3, 0, 3], [100, 400, 250, 50], sd=0.3, seed=3)
    th = kmeans_thresholds(scores, 4, seed=0)
    assert th.shape == (3,) and _between_clusters(th, parts)
    np.testing.assert_array_equal(th, kmeans_thresholds(scores, 4, seed=0))


# ---------------------------------------------------------------------------
# pseudo_labels
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", sorted(LABELERS))
def test_pseudo_labels_properties(method):
    rng = np.random.default_rng(12)
    scores = rng.lognormal(-4, 1.2, 3000)
    labels, th = pseudo_labels(scores, 4, method=method)
    assert labels.dtype == np.int64 and labels.shape == scores.shape
    assert labels.min() == 0 and labels.max() == 3
    assert np.all(np.bincount(labels, minlength=4) > 0)
    assert th.shape == (3,) and np.all(np.diff(th) > 0)
    order = np.argsort(scores)
    assert np.all(np.diff(labels[order]) >= 0)  # monotone in the score
    assert labels[np.argmin(scores)] == 0 and labels[np.argmax(scores)] == 3
    np.testing.assert_array_equal(labels, np.searchsorted(th, scores, side="right"))


@pytest.mark.parametrize("method", sorted(LABELERS))
def test_pseudo_labels_ties_never_leave_empty_classes(method):
    rng = np.random.default_rng(13)
    scores = np.concatenate([np.full(300, 0.01), rng.lognormal(0, 1, 60)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        labels, th = pseudo_labels(scores, 4, method=method)
    assert np.all(np.bincount(labels, minlength=4) > 0)
    assert np.all(np.diff(th) > 0)


def test_pseudo_labels_repair_warns():
    scores = np.concatenate([np.zeros(90), np.arange(1.0, 11.0)])
    with pytest.warns(RuntimeWarning, match="empty classes"):
        labels, _ = pseudo_labels(scores, 4, method="quantile")
    assert np.all(np.bincount(labels, minlength=4) > 0)


def test_pseudo_labels_errors():
    scores = np.arange(1.0, 11.0)
    with pytest.raises(ValueError, match="empirical, kmeans, mqs, quantile"):
        pseudo_labels(scores, 3, method="otsu")
    with pytest.raises(ValueError, match="distinct"):
        pseudo_labels(np.ones(10), 2)
    with pytest.raises(ValueError):
        pseudo_labels(np.array([]), 2)
    labels, th = pseudo_labels(scores, 1)
    assert th.shape == (0,) and np.all(labels == 0)
