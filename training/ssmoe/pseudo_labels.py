"""Pseudo error classes for SS-MoE training phase one.

SS-MoE (paper 001, section 2.3) trains a baseline network, computes one error
score ``e_i`` per training patch and turns the scores into ``K`` pseudo error
classes ``c_i`` that supervise the gater.  The paper uses *multiscale quantile
segmentation* (MQS, Jula Vanegas, Behr & Munk, JASA 2022) of the sorted
scores; the reference code used quartiles; the paper also mentions an
"empirical rule" (an equispaced grid along a power law, i.e. log-spaced
thresholds) and k-means.  All four are here (:data:`LABELERS`), behind one entry
point, :func:`pseudo_labels`.

Every labeler maps ``scores`` (any shape, flattened to ``(N,)``) and ``k`` to
``k - 1`` increasing thresholds ``t`` in score units; the class of a score is
``np.searchsorted(t, score, side="right")``, so class 0 holds the smallest
errors and a score equal to a threshold goes to the upper class.

MQS
---
MQS fits a step function to a sequence ``x_0 .. x_{n-1}`` whose
``beta``-quantile is constant on each segment.  For an interval ``I`` and a
candidate value ``theta`` let ``m_I(theta)`` be the fraction of the points of
``I`` that are ``<= theta``.  The local statistic is

    T_I(theta) = sqrt(2 |I| KL(m_I(theta) || beta)) - sqrt(2 + 2 log(n / |I|)),

``KL(m || b) = m log(m / b) + (1 - m) log((1 - m) / (1 - b))`` the Bernoulli
Kullback-Leibler divergence.  A segment ``[s, e)`` with value ``theta`` is
admissible when ``T_I(theta) <= q`` for every interval ``I`` of the interval
system contained in ``[s, e)``.  With ties, ``m_I`` may take any value between
the fractions of points ``< theta`` and ``<= theta`` (so that a ``theta`` equal
to a data value, e.g. the sample median, is feasible); the feasible
``theta`` of one interval then form the closed range
``[x_(a), x_(b + 1)]`` of its order statistics, ``[a, b]`` the admissible
counts, and a segment is admissible iff the intersection of these ranges over
its sub-intervals is non-empty.

*Interval system.*  All intervals whose length is in the geometric grid
``round(INTERVAL_LENGTH_RATIO ** j) <= n`` (1, 2, 3, 4, 6, 8, 11, 16, ... for
ratio sqrt 2), at every start position: ``O(n log n)`` intervals instead of the
``O(n^2)`` of the R package, which keeps localisation (every start) and loses
at most a factor ``ratio`` in length.  The Monte Carlo quantile
:func:`mqs_quantile` uses the same system, so the ``1 - alpha`` guarantee holds
for it.

*Estimator.*  The estimate uses the fewest admissible segments ``S``; among
the partitions into ``S`` admissible segments it minimises the total check
(pinball) loss ``sum_i rho_beta(x_i - theta_seg)``, ``rho_b(u) = u (b - 1{u <
0})``, where ``theta_seg`` is the segment's sample ``beta``-quantile clipped into
its feasible range (the constrained minimiser of the loss).  Since the
constraints of a segment are those of its sub-intervals, sub-segments of an
admissible segment are admissible: for every end ``e`` the admissible starts
form a range ``[L(e), e)`` with ``L`` non-decreasing, the minimal number of
segments covering ``[0, e)`` is ``D(e) = 1 + D(L(e))`` and the one covering
``[s, n)`` is ``D'(s) = 1 + D'(R(s))``.  The ``j``-th boundary of a minimal
partition must satisfy ``D(t_j) = j`` and ``D'(t_j) = S - j``; the dynamic
program for the loss runs only over these (typically narrow) ranges.  ``L`` and
``R`` are found by vectorised binary searches; feasible ranges of candidate
segments come from per-length sparse tables (range max / min), or in ``O(1)``
from index arithmetic when ``x`` is sorted (the SS-MoE case).

*Thresholds.*  :func:`mqs_thresholds` applies MQS to the sorted scores
(subsampled to at most ``max_points`` evenly spaced order statistics).  A fit of
sorted data is a non-decreasing step function; each boundary between segments
becomes a threshold halfway between the last value of one segment and the
first value of the next.  By default the scores are segmented on a log scale
(``log_scale=True``): admissibility is rank based and does not change, but the
check-loss tie-break and the midpoints are taken in log units, which suits
multiplicative (power-law like) error scores.  For a fixed ``K``, ``q`` is bisected (larger ``q`` ->
fewer segments) to the largest ``q`` that still gives ``K`` segments; as ``q``
is then tuned rather than calibrated, the fit uses every interval length
(the full system of the R package), which on sorted data costs ``O(n)`` per
``q`` and makes the segment count move in steps of one.

Note that MQS is rank based: on strictly increasing data admissibility depends
only on the segment length, so MQS of sorted scores is an equal-frequency-like
split whose boundaries are moved by the check loss towards gaps in the data
(segments may not exceed the maximal admissible length).  For the same
reason ``k=None`` (calibrated ``q``) gives many classes on sorted continuous
scores (about 50 for 1500 points): a sorted sequence has no constant-median
stretches, so the fixed-``K`` path is the one SS-MoE uses.  Equal check losses
(frequent with ties) are decided on a grid of :data:`COST_TIE_RTOL` and then by
the earliest segment start, never by rounding.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.special import xlogy

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_BETA",
    "DEFAULT_MAX_POINTS",
    "DEFAULT_N_SIM",
    "LABELERS",
    "count_bounds",
    "empirical_thresholds",
    "interval_lengths",
    "kmeans_thresholds",
    "mqs_quantile",
    "mqs_segments",
    "mqs_thresholds",
    "pseudo_labels",
    "quantile_thresholds",
]

# ---------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------

#: Quantile level MQS segments (0.5: the median).
DEFAULT_BETA: float = 0.5
#: Error level of the MQS multiscale quantile ``q`` (probability of
#: overestimating the number of segments).
DEFAULT_ALPHA: float = 0.1
#: Monte Carlo replications for :func:`mqs_quantile`.
DEFAULT_N_SIM: int = 1000
#: Seed of the Monte Carlo simulation when none is given (reproducible ``q``).
DEFAULT_MC_SEED: int = 0
#: Simulations per vectorised chunk in :func:`mqs_quantile` (memory bound).
MC_CHUNK: int = 250
#: At most this many order statistics of the scores are segmented.
DEFAULT_MAX_POINTS: int = 1500
#: Ratio of consecutive interval lengths of the interval system.
INTERVAL_LENGTH_RATIO: float = math.sqrt(2.0)
#: Tolerance when comparing the local statistic with its bound.
STAT_TOL: float = 1e-10
#: Tolerance of ``ceil``/``floor`` of ``beta * m`` (ranks of sample quantiles).
RANK_EPS: float = 1e-9
#: Smallest ``q``: the penalty ``q + sqrt(2 + 2 log(n / n))`` of the whole
#: sequence is zero there.
Q_MIN: float = -math.sqrt(2.0)
#: First upper bracket of the bisection on ``q`` (doubled until it brackets).
Q_BRACKET_START: float = 2.0
#: The upper bracket is never raised beyond this (``q`` that large accepts
#: any segment of any sequence of a realistic length).
Q_BRACKET_MAX: float = 1.0e4
#: Bisection stops once the bracket is this narrow and gives ``K`` segments.
Q_BISECT_TOL: float = 1e-4
#: Bisection gives up (the count skips ``K``) below this bracket width.
Q_BISECT_MIN_WIDTH: float = 1e-10
#: Hard cap on bisection iterations.
Q_BISECT_MAX_ITER: int = 200
#: Largest number of sorted window values kept for an unsorted sequence
#: (float64; about 160 MB, i.e. n of about 3500 with the default system).
MAX_WINDOW_VALUES: int = 20_000_000
#: Check losses closer than this times the data scale count as equal (the
#: tie is then broken by the earliest segment start, not by rounding).
COST_TIE_RTOL: float = 1e-9
#: Restarts of the 1D k-means (Lloyd) labeler.
KMEANS_N_INIT: int = 10
#: Lloyd iterations per restart of the 1D k-means labeler.
KMEANS_MAX_ITER: int = 300

_MC_CACHE: dict[tuple[int, float, int, int], np.ndarray] = {}


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def _as_scores(scores: np.ndarray, name: str = "scores") -> np.ndarray:
    """``scores`` as a finite float64 vector of shape ``(N,)``, ``N >= 1``."""
    x = np.asarray(scores, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or Inf")
    return x


def _check_k(k: int) -> int:
    if isinstance(k, bool) or int(k) != k or int(k) < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _check_beta(beta: float) -> float:
    beta = float(beta)
    if not 0.0 < beta < 1.0:
        raise ValueError(f"beta must lie in (0, 1), got {beta}")
    return beta


def _seed_of(rng: int | np.random.Generator | None) -> int | None:
    """Seed for caching: ``None`` -> :data:`DEFAULT_MC_SEED`, a Generator -> no cache."""
    if rng is None:
        return DEFAULT_MC_SEED
    if isinstance(rng, np.random.Generator):
        return None
    return int(rng)


def interval_lengths(n: int) -> np.ndarray:
    """Lengths of the MQS interval system for a sequence of ``n`` points.

    ``unique(round(INTERVAL_LENGTH_RATIO ** j))`` for ``j = 0, 1, ...`` up to
    ``n``; every length is used at every start position.  Shape ``(G,)``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    jmax = math.floor(math.log(n) / math.log(INTERVAL_LENGTH_RATIO) + 1e-9) + 1
    lengths = np.round(INTERVAL_LENGTH_RATIO ** np.arange(jmax + 1)).astype(np.int64)
    return np.unique(lengths[(lengths >= 1) & (lengths <= n)])


def _local_stat(n: int, length: np.ndarray, count: np.ndarray, beta: float) -> np.ndarray:
    """``T`` of intervals of ``length`` points of which ``count`` are ``<= theta``.

    ``sqrt(2 l KL(c / l || beta)) - sqrt(2 + 2 log(n / l))`` (broadcast over
    ``length`` and ``count``).  For a fixed length it decreases in ``c`` up to
    ``beta * l`` and increases after.
    """
    length = np.asarray(length, dtype=np.float64)
    m = np.asarray(count, dtype=np.float64) / length
    kl = xlogy(m, m / beta) + xlogy(1.0 - m, (1.0 - m) / (1.0 - beta))
    local = np.sqrt(2.0 * length * np.maximum(kl, 0.0))
    return local - np.sqrt(2.0 + 2.0 * np.log(n / length))


def _stat_table(n: int, length: int, beta: float) -> np.ndarray:
    """:func:`_local_stat` of one length for all counts ``c = 0..l``; shape ``(l + 1,)``."""
    return _local_stat(n, np.full(length + 1, length), np.arange(length + 1), beta)


def count_bounds(
    n: int, lengths: np.ndarray, q: float, beta: float = DEFAULT_BETA
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Admissible counts of points ``<= theta`` per interval length.

    For each ``l`` in ``lengths`` (shape ``(G,)``) the counts ``c`` with
    ``T(l, c) <= q`` form a range ``[a_l, b_l]`` (``T`` quasi-convex in ``c``),
    found by binary searches on both sides of the minimiser.  Returns
    ``(a, b, empty)``, shapes ``(G,)``; ``empty`` marks lengths with no
    admissible count (then ``a``, ``b`` are meaningless).
    """
    L = np.asarray(lengths, dtype=np.int64)
    limit = float(q) + STAT_TOL

    def ok(c: np.ndarray, sel: np.ndarray) -> np.ndarray:
        return _local_stat(n, L[sel], c, beta) <= limit

    c0 = np.floor(beta * L).astype(np.int64)
    c1 = np.minimum(c0 + 1, L)
    t0 = _local_stat(n, L, c0, beta)
    t1 = _local_stat(n, L, c1, beta)
    cstar = np.where(t1 < t0, c1, c0)  # integer minimiser of T(l, .)
    empty = np.minimum(t0, t1) > limit
    # smallest admissible count in [0, cstar] (T decreasing there)
    lo, hi = np.zeros_like(L), cstar.copy()
    while True:
        act = np.flatnonzero((lo < hi) & ~empty)
        if act.size == 0:
            break
        mid = (lo[act] + hi[act]) // 2
        good = ok(mid, act)
        hi[act] = np.where(good, mid, hi[act])
        lo[act] = np.where(good, lo[act], mid + 1)
    a = lo
    # largest admissible count in [cstar, l] (T increasing there)
    lo, hi = cstar.copy(), L.copy()
    while True:
        act = np.flatnonzero((lo < hi) & ~empty)
        if act.size == 0:
            break
        mid = (lo[act] + hi[act] + 1) // 2
        good = ok(mid, act)
        lo[act] = np.where(good, mid, lo[act])
        hi[act] = np.where(good, hi[act], mid - 1)
    return a, lo, empty


def _sparse_table(v: np.ndarray, op: Callable, fill: float) -> np.ndarray:
    """Range-min/max table: ``T[j, a] = op(v[a : a + 2**j])``; shape ``(J, len(v))``."""
    size = v.size
    levels = max(1, int(size).bit_length())
    table = np.full((levels, size), fill)
    table[0] = v
    for j in range(1, levels):
        half = 1 << (j - 1)
        width = size - (1 << j) + 1
        if width <= 0:
            break
        table[j, :width] = op(table[j - 1, :width], table[j - 1, half : half + width])
    return table


def _floor_log2(r: np.ndarray) -> np.ndarray:
    """``floor(log2(r))`` for integer arrays ``r >= 1`` (exact)."""
    _, exp = np.frexp(r.astype(np.float64))
    return (exp - 1).astype(np.int64)


# ---------------------------------------------------------------------------
# MQS core
# ---------------------------------------------------------------------------


class _MQSProblem:
    """MQS of one sequence ``x`` (shape ``(n,)``) for any ``q``.

    The ``q``-independent parts (interval system, statistic tables, sorted
    windows or prefix sums) are computed once, so that a bisection over ``q``
    is cheap.  Positions are boundaries ``0..n``; segment ``[s, e)``.
    """

    def __init__(
        self, x: np.ndarray, beta: float = DEFAULT_BETA, all_lengths: bool = False
    ) -> None:
        self.x = np.asarray(x, dtype=np.float64).ravel()
        self.n = n = self.x.size
        if n == 0:
            raise ValueError("cannot segment an empty sequence")
        if not np.all(np.isfinite(self.x)):
            raise ValueError("the sequence contains NaN or Inf")
        self.beta = _check_beta(beta)
        self.sorted = bool(n < 2 or np.all(np.diff(self.x) >= 0.0))
        if all_lengths and not self.sorted:
            raise ValueError("the full interval system is only supported for sorted data")
        self.lengths = (np.arange(1, n + 1, dtype=np.int64) if all_lengths
                        else interval_lengths(n))
        self.prefix = np.concatenate(([0.0], np.cumsum(self.x)))
        if not self.sorted:
            # Order statistics of every window of every system length:
            # O(n * sum(lengths)) ~ O(n^2) values, so unsorted input is capped.
            n_values = int(np.sum((n - self.lengths + 1) * self.lengths))
            if n_values > MAX_WINDOW_VALUES:
                raise ValueError(
                    f"an unsorted sequence of {n} points needs {n_values} window values "
                    f"(limit {MAX_WINDOW_VALUES}); subsample it (sorted input has no limit)")
            self.windows = [
                np.sort(sliding_window_view(self.x, int(l)), axis=1) for l in self.lengths
            ]
        self._q: float | None = None

    # -- bounds for one q ----------------------------------------------------

    def prepare(self, q: float) -> None:
        """Set up the feasible-range queries for ``q``."""
        q = float(q)
        if self._q == q:
            return
        if not q >= Q_MIN:
            raise ValueError(f"q must be >= {Q_MIN:.4f}, got {q}")
        a, b, empty = count_bounds(self.n, self.lengths, q, self.beta)
        n, L = self.n, self.lengths
        if self.sorted:
            # lo of an interval [p, p + l) is x[p + a_l - 1] (if a_l >= 1), hi is
            # x[p + b_l] (if b_l < l); both non-decreasing in p, so inside [s, e)
            # max lo sits at p = e - l and min hi at p = s.
            none_lo, none_hi = -(n + 1), n + 1
            off_lo = np.where(a >= 1, a - L, none_lo)
            off_hi = np.where(b < L, b, none_hi)
            self._off_lo = np.maximum.accumulate(off_lo)
            self._off_hi = np.minimum.accumulate(off_hi)
            self._empty = np.logical_or.accumulate(empty)
            self._none_lo, self._none_hi = none_lo, none_hi
        else:
            self._lo_tables = []
            self._hi_tables = []
            for g, win in enumerate(self.windows):
                l = int(L[g])
                if empty[g]:
                    lo = np.full(win.shape[0], np.inf)
                    hi = np.full(win.shape[0], -np.inf)
                else:
                    lo = win[:, a[g] - 1] if a[g] >= 1 else np.full(win.shape[0], -np.inf)
                    hi = win[:, b[g]] if b[g] < l else np.full(win.shape[0], np.inf)
                self._lo_tables.append(_sparse_table(lo, np.maximum, -np.inf))
                self._hi_tables.append(_sparse_table(hi, np.minimum, np.inf))
        self._q = q

    def feasible_range(self, s: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Feasible values ``[lo, hi]`` of segments ``[s, e)`` (arrays, ``s < e``).

        Empty (``lo > hi``) when the segment is not admissible.
        """
        s = np.asarray(s, dtype=np.int64)
        e = np.asarray(e, dtype=np.int64)
        d = e - s
        g = np.searchsorted(self.lengths, d, side="right") - 1  # largest length <= d
        if self.sorted:
            off_lo = self._off_lo[g]
            off_hi = self._off_hi[g]
            lo = np.where(off_lo == self._none_lo, -np.inf,
                          self.x[np.clip(e - 1 + off_lo, 0, self.n - 1)])
            hi = np.where(off_hi == self._none_hi, np.inf,
                          self.x[np.clip(s + off_hi, 0, self.n - 1)])
            emp = self._empty[g]
            lo = np.where(emp, np.inf, lo)
            hi = np.where(emp, -np.inf, hi)
            return lo, hi
        lo = np.full(s.shape, -np.inf)
        hi = np.full(s.shape, np.inf)
        for gi, l in enumerate(self.lengths):
            mask = d >= l
            if not mask.any():
                break
            ss, ee = s[mask], e[mask]
            r = ee - l - ss + 1
            j = _floor_log2(r)
            right = ee - l - (1 << j) + 1
            tlo, thi = self._lo_tables[gi], self._hi_tables[gi]
            lo[mask] = np.maximum(lo[mask], np.maximum(tlo[j, ss], tlo[j, right]))
            hi[mask] = np.minimum(hi[mask], np.minimum(thi[j, ss], thi[j, right]))
        return lo, hi

    def admissible(self, s: np.ndarray, e: np.ndarray) -> np.ndarray:
        lo, hi = self.feasible_range(s, e)
        return lo <= hi

    # -- reachability ----------------------------------------------------------

    def leftmost_starts(self) -> np.ndarray:
        """``L[e]`` = smallest ``s`` with ``[s, e)`` admissible, ``e = 1..n``; shape ``(n + 1,)``."""
        n = self.n
        e = np.arange(1, n + 1, dtype=np.int64)
        lo = np.zeros(n, dtype=np.int64)
        hi = e - 1  # a single point is always admissible
        while True:
            active = lo < hi
            if not active.any():
                break
            mid = (lo + hi) // 2
            ok = self.admissible(np.where(active, mid, e - 1), e)
            hi = np.where(active & ok, mid, hi)
            lo = np.where(active & ~ok, mid + 1, lo)
        return np.concatenate(([0], lo))

    def rightmost_ends(self) -> np.ndarray:
        """``R[s]`` = largest ``e`` with ``[s, e)`` admissible, ``s = 0..n-1``; shape ``(n + 1,)``."""
        n = self.n
        s = np.arange(n, dtype=np.int64)
        lo = s + 1
        hi = np.full(n, n, dtype=np.int64)
        while True:
            active = lo < hi
            if not active.any():
                break
            mid = (lo + hi + 1) // 2
            ok = self.admissible(s, np.where(active, mid, s + 1))
            lo = np.where(active & ok, mid, lo)
            hi = np.where(active & ~ok, mid - 1, hi)
        return np.concatenate((lo, [n]))

    @staticmethod
    def _forward_counts(left: np.ndarray) -> np.ndarray:
        lst = left.tolist()
        out = [0] * len(lst)
        for e in range(1, len(lst)):
            out[e] = out[lst[e]] + 1
        return np.asarray(out, dtype=np.int64)

    @staticmethod
    def _backward_counts(right: np.ndarray) -> np.ndarray:
        lst = right.tolist()
        n = len(lst) - 1
        out = [0] * (n + 1)
        for s in range(n - 1, -1, -1):
            out[s] = out[lst[s]] + 1
        return np.asarray(out, dtype=np.int64)

    def n_segments(self, q: float) -> int:
        """Minimal number of admissible segments at ``q``."""
        self.prepare(q)
        return int(self._forward_counts(self.leftmost_starts())[-1])

    # -- segment values and costs ------------------------------------------------

    def _segment_values_and_costs(
        self, s: np.ndarray, e: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Clipped ``beta``-quantile and check loss of admissible segments ``[s, e)``."""
        beta = self.beta
        lo, hi = self.feasible_range(s, e)
        m = e - s
        k_lo = np.ceil(beta * m - RANK_EPS).astype(np.int64) - 1  # 0-based ranks
        k_hi = np.floor(beta * m + RANK_EPS).astype(np.int64)
        k_lo = np.clip(k_lo, 0, m - 1)
        k_hi = np.clip(k_hi, 0, m - 1)
        if self.sorted:
            x, P = self.x, self.prefix
            theta = np.clip(0.5 * (x[s + k_lo] + x[s + k_hi]), lo, hi)
            p = np.clip(np.searchsorted(x, theta, side="right"), s, e)
            below = theta * (p - s) - (P[p] - P[s])
            above = (P[e] - P[p]) - theta * (e - p)
            return theta, (1.0 - beta) * below + beta * above
        theta = np.empty(s.size)
        cost = np.empty(s.size)
        order = np.argsort(s, kind="stable")
        starts, first = np.unique(s[order], return_index=True)
        bounds = np.append(first, s.size)
        for u, start in enumerate(starts):
            idx = order[bounds[u] : bounds[u + 1]]
            mm = m[idx]
            y = self.x[start : start + int(mm.max())]
            inside = np.arange(y.size)[None, :] < mm[:, None]
            ys = np.sort(np.where(inside, y[None, :], np.inf), axis=1)
            rows = np.arange(idx.size)
            th = 0.5 * (ys[rows, k_lo[idx]] + ys[rows, k_hi[idx]])
            th = np.clip(th, lo[idx], hi[idx])
            resid = y[None, :] - th[:, None]
            rho = resid * (beta - (resid < 0.0))
            theta[idx] = th
            cost[idx] = np.where(inside, rho, 0.0).sum(axis=1)
        return theta, cost

    # -- the fit -------------------------------------------------------------------

    def fit(self, q: float, n_segments: int | None = None) -> list[tuple[int, int, float]]:
        """MQS estimate at ``q``: list of ``(start, end_exclusive, value)``.

        With ``n_segments=None`` the fewest admissible segments are used; a
        larger ``n_segments`` (at most ``n``) gives the minimum-check-loss
        partition into exactly that many admissible segments.
        """
        self.prepare(q)
        n = self.n
        left = self.leftmost_starts()
        right = self.rightmost_ends()
        D = self._forward_counts(left)
        Dp = self._backward_counts(right)
        S = int(D[n])
        K = S if n_segments is None else int(n_segments)
        if not S <= K <= n:
            raise ValueError(f"cannot split {n} points into {K} admissible segments "
                             f"(at least {S} needed)")
        pos = np.arange(n + 1)

        def boundary_range(j: int) -> tuple[int, int]:
            ok = (D <= j) & (pos >= j) & (Dp <= K - j) & (n - pos >= K - j)
            idx = np.flatnonzero(ok)
            return int(idx[0]), int(idx[-1])

        tie_tol = COST_TIE_RTOL * (float(np.abs(self.x - np.median(self.x)).sum())
                                   + float(np.abs(self.x).max()) + 1.0)
        cost = np.full(n + 1, np.inf)
        cost[0] = 0.0
        back: list[tuple[np.ndarray, np.ndarray]] = []
        prev_lo, prev_hi = 0, 0
        for j in range(1, K + 1):
            e_lo, e_hi = boundary_range(j)
            ends = np.arange(e_lo, e_hi + 1, dtype=np.int64)
            s_from = np.maximum(left[ends], prev_lo)
            s_to = np.minimum(ends - 1, prev_hi)
            counts = s_to - s_from + 1
            if np.any(counts < 1):  # pragma: no cover - excluded by the theory
                raise RuntimeError("MQS dynamic program found an unreachable boundary")
            offsets = np.concatenate(([0], np.cumsum(counts)[:-1]))
            total = int(counts.sum())
            e_pair = np.repeat(ends, counts)
            s_pair = np.repeat(s_from, counts) + (np.arange(total) - np.repeat(offsets, counts))
            theta, seg_cost = self._segment_values_and_costs(s_pair, e_pair)
            tot = cost[s_pair] + seg_cost
            # equal losses (common with ties) must not be decided by rounding:
            # compare losses on a grid of COST_TIE_RTOL * scale, then prefer the
            # earliest start.
            key = np.round(tot / tie_tol)
            order = np.lexsort((s_pair, key, e_pair))
            best = order[offsets]  # pairs are grouped by end, in increasing order
            new_cost = np.full(n + 1, np.inf)
            new_cost[ends] = tot[best]
            arg_s = np.full(n + 1, -1, dtype=np.int64)
            arg_s[ends] = s_pair[best]
            arg_theta = np.full(n + 1, np.nan)
            arg_theta[ends] = theta[best]
            back.append((arg_s, arg_theta))
            cost = new_cost
            prev_lo, prev_hi = e_lo, e_hi
        segments: list[tuple[int, int, float]] = []
        e = n
        for arg_s, arg_theta in reversed(back):
            s = int(arg_s[e])
            segments.append((s, e, float(arg_theta[e])))
            e = s
        segments.reverse()
        return segments


# ---------------------------------------------------------------------------
# Public MQS API
# ---------------------------------------------------------------------------


def mqs_segments(
    x: np.ndarray, q: float, beta: float = DEFAULT_BETA
) -> list[tuple[int, int, float]]:
    """MQS fit of the sequence ``x`` (in the given order; not sorted here).

    Parameters
    ----------
    x : array, shape ``(n,)`` (flattened), finite.
    q : threshold of the multiscale statistic (``>= Q_MIN``); typically
        :func:`mqs_quantile` ``(n, alpha, beta)``.  Larger ``q`` -> fewer segments.
    beta : quantile level in ``(0, 1)``.

    Returns
    -------
    list of ``(start, end_exclusive, value)`` covering ``0..n`` in order: the
    fewest admissible segments, ties broken by the check loss; ``value`` is
    the segment's sample ``beta``-quantile clipped into its feasible range.

    Cost: ``O(n log n)`` per feasibility query batch; sorted ``x`` needs
    ``O(n)`` memory, unsorted ``x`` keeps the sorted windows of every system
    length (``O(n^2)``, capped by :data:`MAX_WINDOW_VALUES`, ``n`` of about 3500).
    """
    return _MQSProblem(np.asarray(x, dtype=np.float64).ravel(), beta).fit(q)


def _simulate_statistic(
    n: int, beta: float, n_sim: int, rng: np.random.Generator
) -> np.ndarray:
    """``n_sim`` draws of ``max_I T_I`` under i.i.d. Bernoulli(beta) data; shape ``(n_sim,)``.

    The data are ``1{U_i <= beta}`` for uniform ``U_i`` (the indicators of
    continuous data at their true ``beta``-quantile), and ``I`` runs over the
    interval system of :func:`interval_lengths`.  ``T`` of one interval depends
    only on its count, and is quasi-convex in it, so per length only the
    extreme window counts are needed.
    """
    lengths = interval_lengths(n)
    tables = [_stat_table(n, int(l), beta) for l in lengths]
    out = np.empty(n_sim)
    for c0 in range(0, n_sim, MC_CHUNK):
        c = min(MC_CHUNK, n_sim - c0)
        w = rng.random((c, n)) <= beta
        cs = np.zeros((c, n + 1), dtype=np.int32)
        np.cumsum(w, axis=1, out=cs[:, 1:])
        best = np.full(c, -np.inf)
        for l, table in zip(lengths, tables):
            counts = cs[:, l:] - cs[:, :-l]
            best = np.maximum(best, np.maximum(table[counts.max(axis=1)],
                                               table[counts.min(axis=1)]))
        out[c0 : c0 + c] = best
    return out


def mqs_quantile(
    n: int,
    alpha: float = DEFAULT_ALPHA,
    beta: float = DEFAULT_BETA,
    n_sim: int = DEFAULT_N_SIM,
    rng: int | np.random.Generator | None = None,
) -> float:
    """``(1 - alpha)`` quantile ``q`` of the MQS multiscale statistic for ``n`` points.

    The statistic ``max_I [sqrt(2|I| KL(m_I || beta)) - sqrt(2 + 2 log(n/|I|))]``
    is simulated ``n_sim`` times under i.i.d. Bernoulli(beta) data (what any
    continuous sequence with constant ``beta``-quantile gives at that quantile:
    distribution free) over the interval system of :func:`interval_lengths`.
    ``rng``: an integer seed, ``None`` (:data:`DEFAULT_MC_SEED`) or a Generator.
    Simulations are cached per ``(n, beta, n_sim, seed)`` (not for Generators).
    With this ``q``, a sequence without change is fitted with one segment with
    probability at least ``1 - alpha``.
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    beta = _check_beta(beta)
    n_sim = int(n_sim)
    if n_sim < 1:
        raise ValueError(f"n_sim must be >= 1, got {n_sim}")
    seed = _seed_of(rng)
    if seed is None:
        sample = _simulate_statistic(n, beta, n_sim, rng)  # type: ignore[arg-type]
    else:
        key = (n, beta, n_sim, seed)
        sample = _MC_CACHE.get(key)
        if sample is None:
            sample = _simulate_statistic(n, beta, n_sim, np.random.default_rng(seed))
            _MC_CACHE[key] = sample
    return float(np.quantile(sample, 1.0 - alpha))


def _subsample_sorted(z: np.ndarray, max_points: int) -> np.ndarray:
    """At most ``max_points`` order statistics of sorted ``z`` at evenly spaced ranks
    (always including the minimum and the maximum)."""
    if z.size <= max_points:
        return z
    ranks = np.unique(np.round(np.linspace(0, z.size - 1, max_points)).astype(np.int64))
    return z[ranks]


def mqs_thresholds(
    scores: np.ndarray,
    k: int | None = None,
    alpha: float = DEFAULT_ALPHA,
    beta: float = DEFAULT_BETA,
    max_points: int = DEFAULT_MAX_POINTS,
    rng: int | np.random.Generator | None = None,
    log_scale: bool = True,
) -> np.ndarray:
    """Class thresholds from MQS of the sorted ``scores``.

    Parameters
    ----------
    scores : array, any shape, finite (flattened to ``(N,)``).
    k : number of classes.  ``None``: as many classes as MQS segments at
        ``q = mqs_quantile(n, alpha, beta, rng=rng)`` (interval system of
        :func:`interval_lengths`, as in the simulation).  Otherwise ``q`` is
        only a tuning knob: it is bisected (the segment count is
        non-increasing in ``q``) to the largest ``q`` giving exactly ``k``
        segments, and the system uses every interval length (on the sorted
        scores this costs ``O(n)`` per ``q``) so that the count changes in
        steps of one.  If the count still jumps over ``k``, the
        minimum-check-loss partition into ``k`` segments admissible at the
        smallest ``q`` giving fewer segments is used (with a warning).
    max_points : the sorted scores are subsampled to at most this many order
        statistics (evenly spaced ranks) before segmenting.
    log_scale : segment ``log(score)`` instead of the scores (if some score is
        ``<= 0``: ``asinh(score / s0)``, ``s0`` the smallest non-zero ``|score|``,
        which is log-like for ``score >> s0``; see :func:`_log_like_transform`).
        MQS admissibility is rank based, so this changes only the check-loss
        tie-break (a k-medians-like criterion that, in score units, pulls the
        boundaries of multiplicative clusters into the upper cluster) and puts
        thresholds at geometric instead of arithmetic midpoints.

    Returns
    -------
    thresholds : shape ``(k - 1,)``, strictly increasing, in score units: the
    midpoints between the last value of a segment and the first of the next.

    Raises
    ------
    ValueError if ``k`` exceeds the number of distinct (subsampled) scores.
    """
    z = _subsample_sorted(np.sort(_as_scores(scores)), int(max_points))
    beta = _check_beta(beta)
    forward, inverse = _log_like_transform(z) if log_scale else (None, None)
    if forward is not None:
        z = forward(z)  # strictly increasing map: z stays sorted, ties stay ties
    n_distinct = np.unique(z).size
    if k is None:
        q = mqs_quantile(z.size, alpha=alpha, beta=beta, rng=rng)
        segments = _MQSProblem(z, beta).fit(max(q, Q_MIN))
        k_eff = len(segments)
    else:
        k_eff = _check_k(k)
        if k_eff > n_distinct:
            raise ValueError(
                f"cannot form k={k_eff} MQS classes from {n_distinct} distinct scores "
                f"(of {z.size} segmented order statistics)")
        # q is tuned, not calibrated, here: use every interval length (cheap on
        # sorted data), so that the segment count moves in steps of one.
        segments = _fit_k_segments(_MQSProblem(z, beta, all_lengths=True), k_eff)
    ends = np.array([seg[1] for seg in segments[:-1]], dtype=np.int64)
    thresholds = _repair_thresholds(np.unique(z), 0.5 * (z[ends - 1] + z[ends]), k_eff, "mqs")
    return inverse(thresholds) if inverse is not None else thresholds


def _log_like_transform(
    z: np.ndarray,
) -> tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]] | tuple[None, None]:
    """Strictly increasing log-like map of scores and its inverse.

    ``log`` if every score is positive; else ``asinh(score / s0)`` with ``s0``
    the smallest non-zero ``|score|`` (zeros and negatives keep their order);
    ``(None, None)`` (identity) if every score is zero.
    """
    if np.all(z > 0.0):
        return np.log, np.exp
    nonzero = np.abs(z[z != 0.0])
    if nonzero.size == 0:
        return None, None
    s0 = float(nonzero.min())
    return (lambda v: np.arcsinh(v / s0)), (lambda u: s0 * np.sinh(u))


def _fit_k_segments(problem: _MQSProblem, k: int) -> list[tuple[int, int, float]]:
    """MQS fit of ``problem`` with exactly ``k`` segments (bisection on ``q``)."""
    if k == 1:
        return [(0, problem.n, float(np.quantile(problem.x, problem.beta)))]
    q_lo = Q_MIN
    s_lo = problem.n_segments(q_lo)
    if s_lo < k:
        warnings.warn(
            f"MQS gives at most {s_lo} segments (q={q_lo:.3f}); using the "
            f"minimum-check-loss partition into k={k} admissible segments",
            RuntimeWarning, stacklevel=3)
        return problem.fit(q_lo, n_segments=k)
    q_hi = Q_BRACKET_START
    while problem.n_segments(q_hi) >= k:
        q_lo, q_hi = q_hi, 2.0 * q_hi
        if q_hi > Q_BRACKET_MAX:  # pragma: no cover - unreachable for finite data
            raise RuntimeError("could not bracket the MQS threshold q")
    s_lo = problem.n_segments(q_lo)
    for _ in range(Q_BISECT_MAX_ITER):
        width = q_hi - q_lo
        if width <= Q_BISECT_MIN_WIDTH or (s_lo == k and width <= Q_BISECT_TOL):
            break
        mid = 0.5 * (q_lo + q_hi)
        s_mid = problem.n_segments(mid)
        if s_mid >= k:
            q_lo, s_lo = mid, s_mid
        else:
            q_hi = mid
    if s_lo == k:
        return problem.fit(q_lo)
    warnings.warn(
        f"MQS segment count jumps from {s_lo} to fewer than {k} at q~{q_hi:.6f}; "
        f"using the minimum-check-loss partition into k={k} admissible segments",
        RuntimeWarning, stacklevel=3)
    return problem.fit(q_hi, n_segments=k)


# ---------------------------------------------------------------------------
# Other labelers
# ---------------------------------------------------------------------------


def quantile_thresholds(scores: np.ndarray, k: int) -> np.ndarray:
    """``k - 1`` equal-frequency thresholds: ``np.quantile(scores, j / k)``, ``j = 1..k-1``.

    Quartiles for ``k = 4`` (the SS-MoE reference code's choice).  Shape ``(k - 1,)``.
    """
    x = _as_scores(scores)
    k = _check_k(k)
    return np.quantile(x, np.arange(1, k) / k)


def empirical_thresholds(scores: np.ndarray, k: int) -> np.ndarray:
    """``k - 1`` thresholds equispaced in ``log(score)`` (power-law grid).

    The interior points of ``geomspace(min, max, k + 1)`` with ``min``/``max``
    the smallest/largest positive score; shape ``(k - 1,)``.  Non-positive
    scores fall into class 0.
    """
    x = _as_scores(scores)
    k = _check_k(k)
    positive = x[x > 0.0]
    if positive.size == 0:
        raise ValueError("the empirical (log-spaced) rule needs positive scores")
    return np.geomspace(positive.min(), positive.max(), k + 1)[1:-1]


def _lloyd_1d(v: np.ndarray, prefix: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, float]:
    """Lloyd iterations on sorted ``v`` (shape ``(N,)``) from sorted ``centres``; (centres, inertia)."""
    prefix2 = np.concatenate(([0.0], np.cumsum(v * v)))
    for _ in range(KMEANS_MAX_ITER):
        cuts = np.searchsorted(v, 0.5 * (centres[:-1] + centres[1:]), side="right")
        edges = np.concatenate(([0], cuts, [v.size]))
        counts = np.diff(edges)
        sums = prefix[edges[1:]] - prefix[edges[:-1]]
        new = np.where(counts > 0, sums / np.maximum(counts, 1), centres)
        new = np.sort(new)
        if np.array_equal(new, centres):
            break
        centres = new
    cuts = np.searchsorted(v, 0.5 * (centres[:-1] + centres[1:]), side="right")
    edges = np.concatenate(([0], cuts, [v.size]))
    counts = np.diff(edges)
    sums = prefix[edges[1:]] - prefix[edges[:-1]]
    sq = prefix2[edges[1:]] - prefix2[edges[:-1]]
    inertia = float(np.sum(sq - 2.0 * centres * sums + counts * centres**2))
    return centres, inertia


def kmeans_thresholds(scores: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """``k - 1`` thresholds from 1D k-means on ``log(score)``.

    Lloyd's algorithm on the sorted log scores (prefix sums, exact
    assignments), started from the equal-frequency centres and from
    ``KMEANS_N_INIT - 1`` k-means++ seedings drawn with ``seed``; the run with
    the smallest inertia wins.  Thresholds are the midpoints (in log space, the
    k-means decision boundaries) between consecutive sorted centres, returned
    in score units; shape ``(k - 1,)``.  Non-positive scores are treated as the
    smallest positive score.
    """
    x = _as_scores(scores)
    k = _check_k(k)
    positive = x[x > 0.0]
    if positive.size == 0:
        raise ValueError("k-means on log(score) needs positive scores")
    v = np.sort(np.log(np.maximum(x, positive.min())))
    if np.unique(v).size < k:
        raise ValueError(f"cannot form k={k} k-means classes from {np.unique(v).size} "
                         "distinct scores")
    if k == 1:
        return np.empty(0)
    prefix = np.concatenate(([0.0], np.cumsum(v)))
    rng = np.random.default_rng(seed)
    starts = [np.quantile(v, (np.arange(k) + 0.5) / k)]
    for _ in range(KMEANS_N_INIT - 1):  # k-means++ seeding
        c = [v[rng.integers(v.size)]]
        for _ in range(k - 1):
            d2 = np.min((v[:, None] - np.asarray(c)[None, :]) ** 2, axis=1)
            total = d2.sum()
            c.append(v[rng.integers(v.size)] if total <= 0 else v[rng.choice(v.size, p=d2 / total)])
        starts.append(np.sort(np.asarray(c)))
    best, best_inertia = None, np.inf
    for c0 in starts:
        centres, inertia = _lloyd_1d(v, prefix, np.sort(c0))
        if best is None or inertia < best_inertia:
            best, best_inertia = centres, inertia
    assert best is not None
    return np.exp(0.5 * (best[:-1] + best[1:]))


# ---------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------


def _repair_thresholds(
    unique_scores: np.ndarray, thresholds: np.ndarray, k: int, method: str
) -> np.ndarray:
    """Move thresholds so that each of the ``k`` classes holds a distinct score.

    ``unique_scores``: sorted distinct scores, shape ``(m,)``, ``m >= k``.
    With ``side="right"`` labelling, class ``j`` holds the scores ``u_i`` with
    ``p_{j-1} <= i < p_j``, ``p_j`` the number of distinct scores below
    threshold ``j``; the ``p_j`` are pushed to a strictly increasing sequence
    in ``[1, m - 1]`` and moved thresholds put halfway between neighbours.
    Thresholds that already give non-empty classes are returned unchanged.
    """
    u = unique_scores
    t = np.asarray(thresholds, dtype=np.float64).copy()
    if t.size != k - 1:
        raise ValueError(f"labeler {method!r} returned {t.size} thresholds for k={k}")
    if k == 1:
        return t
    m = u.size
    if m < k:
        raise ValueError(f"cannot form k={k} non-empty classes from {m} distinct scores")
    p = np.searchsorted(u, t, side="left")
    fixed = p.copy()
    low = np.arange(1, k)
    high = m - (k - 1) + np.arange(k - 1)
    fixed = np.clip(fixed, low, high)
    for j in range(1, k - 1):
        fixed[j] = max(fixed[j], fixed[j - 1] + 1)
    changed = fixed != p
    if changed.any():
        warnings.warn(
            f"labeler {method!r} gave empty classes; moved {int(changed.sum())} "
            "threshold(s) so that every class is non-empty", RuntimeWarning, stacklevel=3)
        t[changed] = 0.5 * (u[fixed[changed] - 1] + u[fixed[changed]])
    return t


#: Name -> labeler ``(scores, k, **kw) -> thresholds`` of shape ``(k - 1,)``.
LABELERS: dict[str, Callable[..., np.ndarray]] = {
    "mqs": mqs_thresholds,
    "quantile": quantile_thresholds,
    "empirical": empirical_thresholds,
    "kmeans": kmeans_thresholds,
}


def pseudo_labels(
    scores: np.ndarray, k: int, method: str = "mqs", **kw
) -> tuple[np.ndarray, np.ndarray]:
    """Pseudo error classes of per-patch error scores.

    Parameters
    ----------
    scores : array of shape ``(N,)`` (any shape is flattened), finite.
    k : number of classes, at most the number of distinct scores.
    method : a key of :data:`LABELERS` (``"mqs"``, ``"quantile"``,
        ``"empirical"``, ``"kmeans"``); ``**kw`` go to the labeler.

    Returns
    -------
    labels : int64, shape ``(N,)``, in ``0..k-1``, 0 = smallest errors,
        ``labels = searchsorted(thresholds, scores, side="right")`` (monotone in
        the score); every class is non-empty (thresholds that would leave a
        class empty are moved, with a warning).
    thresholds : float64, shape ``(k - 1,)``, strictly increasing.
    """
    if method not in LABELERS:
        raise ValueError(f"unknown pseudo-label method {method!r}; available: "
                         + ", ".join(sorted(LABELERS)))
    x = _as_scores(scores)
    k = _check_k(k)
    u = np.unique(x)
    if k > u.size:
        raise ValueError(f"cannot form k={k} non-empty classes from {u.size} distinct scores")
    thresholds = LABELERS[method](x, k, **kw)
    thresholds = _repair_thresholds(u, thresholds, k, method)
    labels = np.searchsorted(thresholds, x, side="right").astype(np.int64)
    return labels, thresholds
