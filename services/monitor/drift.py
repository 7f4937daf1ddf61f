"""Drift statistics of a window against the training reference profile, vectorised.

The reference is what the trainer profiled (never recomputed from raw data): for a numeric
feature a seeded sample of training values (its ECDF) and quantile bins, for a categorical one
the category frequencies and the row count. The current window arrives column by column: numeric
columns as float64 arrays (NaN = missing, left out of the tests), categorical ones as integer codes
into the feature's `Vocabulary` (the monitor encodes at ingestion).

Tests (`FeatureDrift.test`), and when a feature counts as drifted:
  - `ks` (numeric): two-sample Kolmogorov-Smirnov D against the reference sample, p-value from
    Smirnov's asymptotic distribution (scipy's `method="asymp"`); BH-adjusted p below `p_value`
    and D at least `min_effect`.
  - `chi2` (categorical): chi-square on the 2-by-k table of reference and window counts;
    BH-adjusted p below `p_value` and Cramer's V (of the table with both rows scaled to one total,
    so that a large reference does not shrink it) at least `min_effect`.
  - `wasserstein` (numeric): Wasserstein-1 distance over the reference standard deviation; at
    least `min_effect`.
  - `jensenshannon` (both): Jensen-Shannon distance, base 2, over the categories or the
    reference's quantile bins; at least `min_effect`.
  - `psi` (both): population stability index over the same bins, shares clipped at 1e-4; at
    least 0.2.

Automatic choice (as Evidently's defaults, by sample size): windows of at most 1,000 rows get the
p-value tests (`ks`, `chi2`); larger windows, where any p-value test finds *some* difference, get
the distances (`wasserstein`, `jensenshannon`). A spec may name the test per feature.

Cost per window is O(rows) per column, and the columns are tested on a thread per core (numpy
releases the GIL): no sort of the window. A numeric value's rank among the
reference sample is read from a uniform grid laid over the sample (exact wherever no reference
point is near; a binary search only for values whose grid cell or a neighbour holds one), and
the counts below and at each reference point give the **exact** KS statistic: between two
reference points the reference CDF is flat, so the supremum is reached at an interval's ends.
Wasserstein needs the window's order inside an interval only where the two CDFs cross; there the
fast mode takes |integral(F_ref - F_win)| and reports the most it can be off (`bound`): the exact value
lies in [score, score + bound]. `exact=True` sorts the window instead and equals scipy.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
from scipy import stats

from shared.contract.events import CategoricalProfile, FeatureDrift, NumericProfile

Test = Literal["ks", "chi2", "psi", "wasserstein", "jensenshannon"]
P_VALUE_TESTS = frozenset({"ks", "chi2"})
SMALL_WINDOW = 1000
PSI_THRESHOLD = 0.2
PSI_FLOOR = 1e-4
GRID_PER_POINT = 256
FloatArray = np.ndarray[Any, np.dtype[np.float64]]
IntArray = np.ndarray[Any, np.dtype[np.int64]]


# ---------------------------------------------------------------- references


@dataclass(frozen=True)
class NumericReference:
    """A numeric feature's reference: its sample's ECDF, quantile bins, and the rank grid."""

    name: str
    points: FloatArray  # sorted distinct sample values
    cdf: FloatArray  # share of the sample at or below each point
    sample: FloatArray  # the sample itself, sorted (exact mode)
    edges: FloatArray  # inner quantile bin edges (bins open at both ends)
    fractions: FloatArray
    std: float
    low: float
    scale: float  # grid cells per unit
    cells: int
    below: IntArray  # per cell: reference points strictly below the cell's left edge
    near: np.ndarray[Any, np.dtype[np.bool_]]  # per cell: a reference point in it or a neighbour

    @classmethod
    def from_profile(cls, name: str, profile: NumericProfile) -> NumericReference:
        sample = np.sort(np.asarray(profile.sample, dtype=np.float64))
        if sample.size == 0:
            sample = np.array([profile.mean], dtype=np.float64)
        points, counts = np.unique(sample, return_counts=True)
        cdf = np.cumsum(counts) / sample.size
        low, high = float(points[0]), float(points[-1])
        cells = max(1, GRID_PER_POINT * points.size)
        # A hair under cells/(high-low), so the highest point falls in the last cell, not beyond.
        scale = cells / (high - low) * (1 - 1e-9) if high > low else 0.0
        left_edges = low + np.arange(cells) / scale if scale else np.array([low])
        has = np.zeros(cells, dtype=bool)
        if scale:
            has[np.minimum(((points - low) * scale).astype(np.int64), cells - 1)] = True
        else:
            has[:] = True
        near = has.copy()
        near[1:] |= has[:-1]
        near[:-1] |= has[1:]
        # Cell 0 is everything below the lowest point, cell cells+1 everything above the highest.
        below = np.concatenate([[0], np.searchsorted(points, left_edges, side="left"), [points.size]]).astype(np.int64)
        near = np.concatenate([[False], near, [False]])
        edges = np.asarray(profile.bin_edges[1:-1], dtype=np.float64)
        fractions = np.asarray(profile.bin_fractions, dtype=np.float64)
        if fractions.size != edges.size + 1:  # a degenerate profile: one bin
            edges, fractions = np.array([], dtype=np.float64), np.array([1.0])
        return cls(
            name=name,
            points=points,
            cdf=cdf,
            sample=sample,
            edges=edges,
            fractions=fractions,
            std=float(profile.std) if profile.std > 0 else float(np.std(sample)) or 1.0,
            low=low,
            scale=scale,
            cells=cells,
            below=below,
            near=near,
        )

    def ranks(self, x: FloatArray) -> tuple[IntArray, IntArray, np.ndarray[Any, np.dtype[np.bool_]]]:
        """How many reference points lie strictly below each value, read off the grid, then settled
        by binary search where the grid cannot tell: (ranks, the positions searched, which of those
        equal a reference point)."""
        k = self.points.size
        if not self.scale:
            at = np.searchsorted(self.points, x, side="left")
            searched = np.arange(x.size)
            return at, searched, self.points[np.minimum(at, k - 1)] == x
        cell = x - self.low  # subtract first: the lowest point lands on exactly 1.0
        cell *= self.scale
        cell += 1
        np.clip(cell, 0, self.cells + 1, out=cell)
        index = cell.astype(np.int64)
        left = self.below[index]
        searched = np.flatnonzero(self.near[index])
        values = x[searched]
        at = np.searchsorted(self.points, values, side="left")
        left[searched] = at
        return left, searched, self.points[np.minimum(at, k - 1)] == values


class Vocabulary:
    """Integer codes of a categorical feature: the reference's categories first, new ones appended."""

    def __init__(self, categories: Sequence[str]) -> None:
        self.codes: dict[str, int] = {c: i for i, c in enumerate(categories)}
        self.names: list[str] = list(categories)

    def code(self, value: str) -> int:
        """The code of a category, allocating one for a category never seen."""
        found = self.codes.get(value)
        if found is None:
            found = self.codes[value] = len(self.names)
            self.names.append(value)
        return found


@dataclass(frozen=True)
class CategoricalReference:
    """A categorical feature's reference: counts per category, in the vocabulary's order."""

    name: str
    counts: FloatArray
    vocabulary: Vocabulary = field(compare=False)

    @classmethod
    def from_profile(cls, name: str, profile: CategoricalProfile) -> CategoricalReference:
        categories = sorted(profile.frequencies)
        total = max(profile.count, 1)
        counts = np.array([profile.frequencies[c] * total for c in categories], dtype=np.float64)
        return cls(name=name, counts=counts, vocabulary=Vocabulary(categories))


Reference = NumericReference | CategoricalReference


# ---------------------------------------------------------------- numeric statistics


@dataclass(frozen=True)
class Counts:
    """A window's position against a numeric reference: the sufficient statistics of KS and Wasserstein."""

    m: int
    below_or_at: FloatArray  # per reference point: window values <= it
    below: FloatArray  # per reference point: window values < it
    inner_count: FloatArray  # per gap (-inf,p0), (p0,p1), …, (p_last,inf): window values strictly inside
    inner_sum: FloatArray


def count(reference: NumericReference, x: FloatArray) -> Counts:
    """Rank the window's values among the reference points in O(rows): a few passes, no sort."""
    k = reference.points.size
    left, searched, equal = reference.ranks(x)
    ties = left[searched[equal]]  # values equal to reference point `tie`
    tied = np.bincount(ties, minlength=k + 1).astype(np.float64)
    by_left = np.bincount(left, minlength=k + 1).astype(np.float64)
    by_right = by_left - tied  # a value equal to point j counts below point j+1, not j
    by_right[1:] += tied[:-1]
    sums = np.bincount(left, weights=x, minlength=k + 1).astype(np.float64)
    sums -= np.bincount(ties, weights=x[searched[equal]], minlength=k + 1)
    return Counts(
        m=x.size,
        below_or_at=np.cumsum(by_left)[:k],
        below=np.cumsum(by_right)[:k],
        inner_count=by_left - tied,
        inner_sum=sums,
    )


def ks_statistic(reference: NumericReference, counts: Counts) -> float:
    """The exact two-sample KS statistic from the counts."""
    m, r = counts.m, reference.cdf
    at_points = np.abs(r - counts.below_or_at / m)
    gaps = np.abs(r[:-1] - counts.below[1:] / m)
    first = counts.below[0] / m
    return float(max(first, at_points.max(initial=0.0), gaps.max(initial=0.0)))


def ks_p_value(d: float, n: int, m: int) -> float:
    """Smirnov's asymptotic two-sided p-value, as scipy's `ks_2samp(method="asymp")`."""
    big, small = sorted([float(n), float(m)], reverse=True)
    return float(stats.kstwo.sf(d, np.round(big * small / (big + small))))


def wasserstein_fast(reference: NumericReference, counts: Counts) -> tuple[float, float]:
    """Wasserstein-1 between the reference ECDF and the window: (value, most it can be off)."""
    m, p, r = counts.m, reference.points, reference.cdf
    # Outside the reference's range the reference CDF is 0 (below) or 1 (above): exact.
    below = (counts.inner_count[0] * p[0] - counts.inner_sum[0]) / m
    above = (counts.inner_sum[-1] - counts.inner_count[-1] * p[-1]) / m
    if p.size == 1:
        return float(below + above), 0.0
    width = np.diff(p)
    at = counts.below_or_at[:-1] / m  # window CDF just after each point
    before_next = counts.below[1:] / m  # window CDF just before the next point
    inside = (counts.inner_count[1:-1] * p[1:] - counts.inner_sum[1:-1]) / m
    integral_window = at * width + inside  # ∫ F_win over each gap
    integral_reference = r[:-1] * width
    signed = integral_reference - integral_window
    value = np.abs(signed)
    crossing = (before_next > r[:-1]) & (at < r[:-1])
    bound = 2 * width * np.minimum(r[:-1] - at, before_next - r[:-1])
    return float(below + above + value.sum()), float(bound[crossing].sum())


def wasserstein_exact(reference: NumericReference, x: FloatArray) -> float:
    """Wasserstein-1 by sorting the window (as scipy's `wasserstein_distance`)."""
    a, b = reference.sample, np.sort(x)
    values = np.concatenate([a, b])
    values.sort(kind="mergesort")
    deltas = np.diff(values)
    cdf_a = np.searchsorted(a, values[:-1], side="right") / a.size
    cdf_b = np.searchsorted(b, values[:-1], side="right") / b.size
    return float(np.sum(np.abs(cdf_a - cdf_b) * deltas))


def ks_exact(reference: NumericReference, x: FloatArray) -> float:
    """KS D by sorting the window (as scipy's `ks_2samp`)."""
    a, b = reference.sample, np.sort(x)
    values = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, values, side="right") / a.size
    cdf_b = np.searchsorted(b, values, side="right") / b.size
    return float(np.max(np.abs(cdf_a - cdf_b)))


def binned(reference: NumericReference, x: FloatArray) -> FloatArray:
    """Window shares over the reference's quantile bins."""
    counts = np.bincount(np.searchsorted(reference.edges, x, side="right"), minlength=reference.fractions.size)
    return counts / max(x.size, 1)


# ---------------------------------------------------------------- shared statistics


def psi(expected: FloatArray, actual: FloatArray) -> float:
    """Population stability index of two share vectors (shares clipped at 1e-4)."""
    e = np.clip(expected, PSI_FLOOR, None)
    a = np.clip(actual, PSI_FLOOR, None)
    return float(np.sum((a - e) * np.log(a / e)))


def jensen_shannon(p: FloatArray, q: FloatArray) -> float:
    """Jensen-Shannon distance, base 2 (scipy's `jensenshannon(p, q, base=2)`)."""
    p = p / p.sum()
    q = q / q.sum()
    mid = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        left = np.where(p > 0, p * np.log(p / mid), 0.0)
        right = np.where(q > 0, q * np.log(q / mid), 0.0)
    divergence = (left.sum() + right.sum()) / 2
    return float(math.sqrt(max(divergence, 0.0) / math.log(2)))


def chi2_two_rows(reference: FloatArray, window: FloatArray) -> tuple[float, float, float]:
    """Chi-square on the 2-by-k table as scipy's `chi2_contingency`: statistic, p-value, effect size."""
    keep = (reference + window) > 0
    table = np.vstack([reference[keep], window[keep]])
    if table.shape[1] < 2:
        return 0.0, 1.0, 0.0
    total = table.sum()
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / total
    statistic = float(np.sum((table - expected) ** 2 / expected))
    dof = table.shape[1] - 1
    p_value = float(stats.chi2.sf(statistic, dof))
    # Cramer's V of the same table with both rows scaled to one total: an effect size that does not
    # shrink as the reference grows (V proper would, since the reference has far more rows).
    p, q = table[0] / table[0].sum(), table[1] / table[1].sum()
    effect = math.sqrt(float(np.sum((p - q) ** 2 / (2 * (p + q)))))
    return statistic, p_value, effect


# ---------------------------------------------------------------- a window's verdicts


@dataclass(frozen=True)
class Policy:
    """How a window is judged (from the spec's monitoring policy)."""

    p_value: float = 0.05
    min_effect: float = 0.1
    drifted_share: float = 0.5
    tests: Mapping[str, Test] = field(default_factory=dict)
    exact: bool = False


@dataclass(frozen=True)
class Measured:
    """One feature's test before the window-level correction."""

    feature: str
    test: Test
    statistic: float
    p_value: float | None
    score: float
    threshold: float
    bound: float = 0.0


def choose(reference: Reference, rows: int, policy: Policy) -> Test:
    """The test for a column: the spec's, else by type and window size."""
    named = policy.tests.get(reference.name)
    if named is not None:
        return named
    small = rows <= SMALL_WINDOW
    if isinstance(reference, NumericReference):
        return "ks" if small else "wasserstein"
    return "chi2" if small else "jensenshannon"


# Each test registers itself for the kind of column it applies to (as Evidently's `register_stattest`
# does): a function of the reference, the window's values and the policy, giving the measurement.
NumericTest = Callable[[NumericReference, np.ndarray[Any, Any], Policy], Measured]
CategoricalTest = Callable[[CategoricalReference, np.ndarray[Any, Any], np.ndarray[Any, Any], Policy], Measured]
NUMERIC_TESTS: dict[str, NumericTest] = {}
CATEGORICAL_TESTS: dict[str, CategoricalTest] = {}


def numeric_test(name: Test) -> Callable[[NumericTest], NumericTest]:
    """Register a test of numeric columns under `name`."""

    def register(test: NumericTest) -> NumericTest:
        NUMERIC_TESTS[name] = test
        return test

    return register


def categorical_test(name: Test) -> Callable[[CategoricalTest], CategoricalTest]:
    """Register a test of categorical columns (reference counts against window counts) under `name`."""

    def register(test: CategoricalTest) -> CategoricalTest:
        CATEGORICAL_TESTS[name] = test
        return test

    return register


@numeric_test("ks")
def _ks(reference: NumericReference, x: np.ndarray[Any, Any], policy: Policy) -> Measured:
    d = ks_exact(reference, x) if policy.exact else ks_statistic(reference, count(reference, x))
    p = ks_p_value(d, reference.sample.size, x.size)
    return Measured(reference.name, "ks", d, p, d, policy.p_value)


@numeric_test("wasserstein")
def _wasserstein(reference: NumericReference, x: np.ndarray[Any, Any], policy: Policy) -> Measured:
    if policy.exact:
        w, bound = wasserstein_exact(reference, x), 0.0
    else:
        w, bound = wasserstein_fast(reference, count(reference, x))
    return Measured(reference.name, "wasserstein", w, None, w / reference.std, policy.min_effect, bound / reference.std)


@numeric_test("psi")
def _psi_numeric(reference: NumericReference, x: np.ndarray[Any, Any], policy: Policy) -> Measured:
    score = psi(reference.fractions, binned(reference, x))
    return Measured(reference.name, "psi", score, None, score, PSI_THRESHOLD)


@numeric_test("jensenshannon")
def _js_numeric(reference: NumericReference, x: np.ndarray[Any, Any], policy: Policy) -> Measured:
    score = jensen_shannon(reference.fractions, binned(reference, x))
    return Measured(reference.name, "jensenshannon", score, None, score, policy.min_effect)


@categorical_test("chi2")
def _chi2(
    reference: CategoricalReference, expected: np.ndarray[Any, Any], window: np.ndarray[Any, Any], policy: Policy
) -> Measured:
    statistic, p, v = chi2_two_rows(expected, window)
    return Measured(reference.name, "chi2", statistic, p, v, policy.p_value)


@categorical_test("jensenshannon")
def _js_categorical(
    reference: CategoricalReference, expected: np.ndarray[Any, Any], window: np.ndarray[Any, Any], policy: Policy
) -> Measured:
    score = jensen_shannon(expected, window)
    return Measured(reference.name, "jensenshannon", score, None, score, policy.min_effect)


@categorical_test("psi")
def _psi_categorical(
    reference: CategoricalReference, expected: np.ndarray[Any, Any], window: np.ndarray[Any, Any], policy: Policy
) -> Measured:
    score = psi(expected / max(expected.sum(), 1.0), window / window.sum())
    return Measured(reference.name, "psi", score, None, score, PSI_THRESHOLD)


def measure(reference: Reference, column: np.ndarray[Any, Any], policy: Policy) -> Measured | None:
    """Test one column of the window with the test its policy or its size chooses; None when it
    has no values."""
    if isinstance(reference, NumericReference):
        x = np.asarray(column, dtype=np.float64)
        if np.isnan(x.sum()):
            x = x[~np.isnan(x)]
        if x.size == 0:
            return None
        test = choose(reference, x.size, policy)
        if test not in NUMERIC_TESTS:
            raise ValueError(f"{test} does not apply to the numeric feature {reference.name}")
        return NUMERIC_TESTS[test](reference, x, policy)
    codes = np.asarray(column, dtype=np.int64)
    if codes.size and codes.min() < 0:  # -1: missing
        codes = codes[codes >= 0]
    if codes.size == 0:
        return None
    size = max(len(reference.vocabulary.names), reference.counts.size)
    window = np.bincount(codes, minlength=size).astype(np.float64)
    expected = np.zeros(window.size)
    expected[: reference.counts.size] = reference.counts
    test = choose(reference, codes.size, policy)
    if test not in CATEGORICAL_TESTS:
        raise ValueError(f"{test} does not apply to the categorical feature {reference.name}")
    return CATEGORICAL_TESTS[test](reference, expected, window, policy)


def benjamini_hochberg(p_values: Sequence[float], alpha: float) -> list[bool]:
    """Which hypotheses BH rejects at false-discovery rate `alpha`."""
    m = len(p_values)
    if m == 0:
        return []
    order = np.argsort(p_values)
    ranked = np.asarray(p_values, dtype=np.float64)[order]
    passing = np.flatnonzero(ranked <= alpha * (np.arange(1, m + 1) / m))
    rejected = np.zeros(m, dtype=bool)
    if passing.size:
        rejected[order[: passing[-1] + 1]] = True
    return rejected.tolist()


@dataclass(frozen=True)
class WindowDrift:
    """Every feature's verdict and the window's."""

    features: list[FeatureDrift]
    prediction: FeatureDrift | None
    drifted_share: float
    dataset_drift: bool
    bounds: dict[str, float]


def judge(measured: Sequence[Measured], prediction: Measured | None, policy: Policy) -> WindowDrift:
    """Verdicts: p-value tests need a BH-adjusted p below `p_value` *and* an effect above the floor;
    distances need their score above the threshold. The prediction is judged alongside the features
    (it is in the BH family) but does not count in the dataset share."""
    everything = [*measured, *([prediction] if prediction else [])]
    tested = [i for i, m in enumerate(everything) if m.test in P_VALUE_TESTS]
    rejected = benjamini_hochberg([everything[i].p_value or 1.0 for i in tested], policy.p_value)
    significant = {i for i, r in zip(tested, rejected, strict=True) if r}
    verdicts = []
    for i, m in enumerate(everything):
        if m.test in P_VALUE_TESTS:
            drifted = i in significant and m.score >= policy.min_effect
        else:
            drifted = m.score >= m.threshold
        verdicts.append(
            FeatureDrift(
                feature=m.feature,
                test=m.test,
                statistic=m.statistic,
                p_value=m.p_value,
                score=m.score,
                threshold=m.threshold,
                drifted=drifted,
            )
        )
    features = verdicts[: len(measured)]
    share = sum(f.drifted for f in features) / len(features) if features else 0.0
    return WindowDrift(
        features=features,
        prediction=verdicts[-1] if prediction else None,
        drifted_share=share,
        dataset_drift=share >= policy.drifted_share,
        bounds={m.feature: m.bound for m in everything if m.bound},
    )


_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="drift")
    return _POOL


def window_drift(
    references: Mapping[str, Reference],
    columns: Mapping[str, np.ndarray[Any, Any]],
    policy: Policy,
    *,
    prediction: tuple[Reference, np.ndarray[Any, Any]] | None = None,
    parallel: bool = True,
) -> WindowDrift:
    """Test every column of a window against its reference and judge the window.

    Columns are tested on a thread per core: the work is numpy's, which releases the GIL.
    """
    jobs = [(ref, columns[name]) for name, ref in references.items()]
    if prediction is not None:
        jobs.append(prediction)
    if parallel and len(jobs) > 1:
        results = list(_pool().map(lambda job: measure(job[0], job[1], policy), jobs))
    else:
        results = [measure(ref, column, policy) for ref, column in jobs]
    predicted = results.pop() if prediction is not None else None
    if predicted is not None:
        predicted = replace(predicted, feature="__prediction__")
    return judge([m for m in results if m is not None], predicted, policy)
