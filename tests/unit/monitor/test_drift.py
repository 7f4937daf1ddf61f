"""Drift statistics: exact against scipy, fast within its bound, verdicts that neither miss nor cry wolf."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from services.monitor import drift
from shared.contract.events import CategoricalProfile, NumericProfile


def numeric_reference(
    values: np.ndarray, *, sample: int = 1000, seed: int = 0, name: str = "x"
) -> drift.NumericReference:
    """A reference built the way the trainer profiles a column (quantile bins, a seeded sample)."""
    rng = np.random.default_rng(seed)
    edges = np.unique(np.quantile(values, np.linspace(0, 1, 11)))
    counts, _ = np.histogram(values, bins=edges)
    profile = NumericProfile(
        count=values.size,
        null_fraction=0.0,
        mean=float(values.mean()),
        std=float(values.std()),
        min=float(values.min()),
        max=float(values.max()),
        bin_edges=edges.tolist(),
        bin_fractions=(counts / counts.sum()).tolist(),
        sample=rng.choice(values, size=min(sample, values.size), replace=False).tolist(),
    )
    return drift.NumericReference.from_profile(name, profile)


CASES: dict[str, Any] = {
    "continuous": lambda rng, n: rng.normal(0, 1, n),
    "shifted": lambda rng, n: rng.normal(0.3, 1.2, n),
    "integers with ties": lambda rng, n: rng.poisson(3, n).astype(float),
    "heavy tail": lambda rng, n: rng.lognormal(0, 1.5, n),
    "beyond the reference": lambda rng, n: rng.normal(5, 1, n),
    "on the reference's own points": None,  # drawn from the reference sample: ties at every value, both ends
}


def current(case: str, reference: drift.NumericReference, rng: np.random.Generator, n: int) -> np.ndarray:
    make = CASES[case]
    if make is None:
        return np.concatenate([rng.choice(reference.sample, n - 2), reference.sample[[0, -1]]])
    return make(rng, n)


@pytest.mark.parametrize("case", list(CASES))
def test_ks_from_counts_is_exact_and_equals_scipy(case: str) -> None:
    rng = np.random.default_rng(1)
    reference = numeric_reference(CASES["integers with ties" if "ties" in case else "continuous"](rng, 20_000))
    window = current(case, reference, rng, 30_000)
    expected = stats.ks_2samp(reference.sample, window, method="asymp")
    d = drift.ks_statistic(reference, drift.count(reference, window))
    assert d == pytest.approx(expected.statistic, abs=1e-12)
    assert drift.ks_exact(reference, window) == pytest.approx(expected.statistic, abs=1e-12)
    assert drift.ks_p_value(d, reference.sample.size, window.size) == pytest.approx(expected.pvalue, abs=1e-9)


@pytest.mark.parametrize("case", list(CASES))
def test_fast_wasserstein_is_within_its_reported_bound_of_scipy(case: str) -> None:
    rng = np.random.default_rng(2)
    reference = numeric_reference(CASES["integers with ties" if "ties" in case else "continuous"](rng, 20_000))
    window = current(case, reference, rng, 30_000)
    expected = stats.wasserstein_distance(reference.sample, window)
    fast, bound = drift.wasserstein_fast(reference, drift.count(reference, window))
    assert drift.wasserstein_exact(reference, window) == pytest.approx(expected, abs=1e-9)
    assert fast - 1e-9 <= expected <= fast + bound + 1e-9, (fast, bound, expected)
    assert bound / reference.std <= 0.01, "a tenth of the default threshold at most: small enough to decide on"


def test_categorical_statistics_equal_scipy() -> None:
    reference = np.array([500.0, 300.0, 200.0, 0.0])
    window = np.array([450.0, 320.0, 180.0, 50.0])
    statistic, p, v = drift.chi2_two_rows(reference, window)
    table = np.vstack([reference, window])[:, (reference + window) > 0]
    expected = stats.chi2_contingency(table, correction=False)
    assert statistic == pytest.approx(expected.statistic, abs=1e-9)
    assert p == pytest.approx(expected.pvalue, abs=1e-9)
    balanced = np.vstack([table[0] / table[0].sum(), table[1] / table[1].sum()]) * 1000
    assert v == pytest.approx(np.sqrt(stats.chi2_contingency(balanced, correction=False).statistic / 2000), abs=1e-12)
    assert drift.jensen_shannon(reference, window) == pytest.approx(
        jensenshannon(reference / reference.sum(), window / window.sum(), base=2), abs=1e-9
    )
    shares_r, shares_w = reference / reference.sum(), window / window.sum()
    clipped_r, clipped_w = np.clip(shares_r, 1e-4, None), np.clip(shares_w, 1e-4, None)
    assert drift.psi(shares_r, shares_w) == pytest.approx(
        float(np.sum((clipped_w - clipped_r) * np.log(clipped_w / clipped_r))), abs=1e-12
    )


def test_benjamini_hochberg_rejects_the_step_up_set() -> None:
    # 0.013 misses its own step (0.0125) but is rejected with the larger ones that pass theirs.
    assert drift.benjamini_hochberg([0.013, 0.024, 0.9, 0.036], 0.05) == [True, True, False, True]
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = rng.uniform(0, 0.2, 12) ** 2
        assert drift.benjamini_hochberg(p.tolist(), 0.05) == (stats.false_discovery_control(p) <= 0.05).tolist()


def references(rng: np.random.Generator) -> dict[str, drift.Reference]:
    found: dict[str, drift.Reference] = {
        f"n{i}": numeric_reference(rng.normal(i, 1 + i / 10, 50_000), seed=i, name=f"n{i}") for i in range(8)
    }
    found["c0"] = drift.CategoricalReference.from_profile(
        "c0", CategoricalProfile(count=50_000, null_fraction=0, frequencies={"a": 0.5, "b": 0.3, "c": 0.2})
    )
    return found


def window(
    refs: dict[str, drift.Reference], rng: np.random.Generator, rows: int, shifted: set[str]
) -> dict[str, np.ndarray]:
    columns: dict[str, np.ndarray] = {}
    for i in range(8):
        name = f"n{i}"
        columns[name] = rng.normal(i + (0.6 if name in shifted else 0), 1 + i / 10, rows)
    shares = [0.2, 0.3, 0.5] if "c0" in shifted else [0.5, 0.3, 0.2]
    columns["c0"] = rng.choice(3, size=rows, p=shares)
    return columns


@pytest.mark.parametrize("rows", [300, 5_000])
def test_same_distribution_windows_flag_no_more_than_the_false_positive_rate(rows: int) -> None:
    rng = np.random.default_rng(3)
    refs = references(rng)
    policy = drift.Policy()
    flagged = 0
    for _ in range(200):
        judged = drift.window_drift(refs, window(refs, rng, rows, set()), policy)
        flagged += sum(f.drifted for f in judged.features)
    assert flagged / (200 * len(refs)) <= policy.p_value, flagged


@pytest.mark.parametrize("rows", [1_000, 5_000, 500_000])
def test_injected_shifts_are_found_and_only_they(rows: int) -> None:
    rng = np.random.default_rng(4)
    refs = references(rng)
    shifted = {"n2", "n5", "c0"}
    judged = drift.window_drift(refs, window(refs, rng, rows, shifted), drift.Policy(drifted_share=0.3))
    assert {f.feature for f in judged.features if f.drifted} == shifted
    assert judged.dataset_drift and judged.drifted_share == pytest.approx(3 / 9)
    expected_tests = {"ks", "chi2"} if rows <= 1000 else {"wasserstein", "jensenshannon"}
    assert {f.test for f in judged.features} == expected_tests


def test_a_practically_identical_distribution_is_not_flagged_at_half_a_million_rows_even_by_ks() -> None:
    rng = np.random.default_rng(5)
    refs = references(rng)
    columns = window(refs, rng, 500_000, set())
    columns["n1"] = columns["n1"] + 0.2  # real but small: the p-value alone would call it drift
    policy = drift.Policy(tests={"n1": "ks"})
    judged = drift.window_drift(refs, columns, policy)
    n1 = next(f for f in judged.features if f.feature == "n1")
    assert n1.test == "ks" and n1.p_value is not None and n1.p_value < 0.001
    assert n1.score < policy.min_effect and not n1.drifted and not judged.dataset_drift


def test_every_test_a_spec_may_name_is_registered_for_the_kinds_of_column_it_applies_to() -> None:
    from typing import get_args

    assert set(get_args(drift.Test)) == set(drift.NUMERIC_TESTS) | set(drift.CATEGORICAL_TESTS)
    assert set(drift.NUMERIC_TESTS) == {"ks", "wasserstein", "psi", "jensenshannon"}
    assert set(drift.CATEGORICAL_TESTS) == {"chi2", "psi", "jensenshannon"}
