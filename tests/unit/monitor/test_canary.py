"""Canary analysis on evidence: with labels, a paired interval of the two versions' live error on
the same requests decides (roll back only when worse beyond the threshold with confidence, hold
while the interval is too wide); without labels, a broken candidate or a worse calibrated estimate
rolls back, and the distance from a drifted stable version is reported, never a reason."""

from __future__ import annotations

import numpy as np
import pytest

from services.monitor import canary
from shared.contract.spec import Rollout

POLICY = Rollout(max_metric_drop=0.05)


def summary(**changes: object) -> canary.Summary:
    found = {
        "rows": 500,
        "latency_p99_ms": 2.0,
        "prediction_shares": {"0": 0.6, "1": 0.4},
        "distinct_predictions": 2,
    }
    return canary.Summary(**{**found, **changes})  # type: ignore[arg-type]


def labelled(candidate_error: float, stable_error: float, rows: int, *, seed: int = 1) -> canary.Labelled:
    """Both versions scored the same `rows` requests; each is wrong at its own rate."""
    rng = np.random.default_rng(seed)
    ids = [f"r{i}" for i in range(rows)]
    truth = rng.integers(0, 2, rows)

    def answers(error: float) -> list[tuple[str, str, str]]:
        wrong = rng.random(rows) < error
        return [(i, str(t ^ int(w)), str(t)) for i, t, w in zip(ids, truth, wrong, strict=True)]

    return canary.Labelled(candidate=answers(candidate_error), stable=answers(stable_error))


def judged(candidate: canary.Summary, stable: canary.Summary, evidence: canary.Labelled | None) -> tuple[str, str]:
    comparisons = canary.compare(candidate, stable, POLICY, task="classification", labelled=evidence)
    return canary.verdict(comparisons, candidate.rows, POLICY.min_samples)


def test_a_candidate_better_on_labels_advances_though_it_predicts_unlike_a_drifted_stable() -> None:
    candidate = summary(prediction_shares={"0": 0.1, "1": 0.9})
    stable = summary(drifted=True)
    comparisons = canary.compare(candidate, stable, POLICY, task="classification", labelled=labelled(0.1, 0.3, 2000))
    live = next(c for c in comparisons if c.metric == "live_error_rate_increase")
    assert live.test == "paired-t" and live.outcome == "pass"
    # The candidate errs 0.2 less often: the interval of the difference lies below zero, around -0.2.
    assert live.low is not None and live.high is not None and live.low < -0.2 < live.high < -0.1
    assert (live.candidate_samples, live.stable_samples) == (2000, 2000)
    distance = next(c for c in comparisons if c.metric == "prediction_distance")
    assert distance.candidate is not None and distance.candidate > canary.PREDICTION_DISTANCE
    assert distance.outcome == "reported"
    outcome, reason = canary.verdict(comparisons, candidate.rows, POLICY.min_samples)
    assert outcome == "advance" and "paired-t" in reason and "95% CI" in reason


def test_a_candidate_worse_on_labels_beyond_the_threshold_is_rolled_back() -> None:
    outcome, reason = judged(summary(), summary(), labelled(0.35, 0.1, 2000))
    assert outcome == "rollback" and reason.startswith("canary worse than stable: live_error_rate_increase")


def test_too_few_labels_for_a_narrow_interval_hold() -> None:
    outcome, reason = judged(summary(), summary(), labelled(0.2, 0.15, 60))
    assert outcome == "hold" and reason.startswith("interval too wide to decide")


def test_requests_scored_by_one_version_only_are_compared_as_two_samples() -> None:
    both = labelled(0.1, 0.1, 800)
    apart = canary.Labelled(candidate=both.candidate[:400], stable=[(f"s{i}", p, t) for i, p, t in both.stable[400:]])
    found = canary.live_error("classification", apart, POLICY)
    assert found is not None and found.test == "welch-t"
    assert (found.candidate_samples, found.stable_samples) == (400, 400) and found.outcome == "pass"


def test_a_regressor_is_judged_on_its_excess_mean_absolute_error_as_a_share_of_the_stables() -> None:
    rng = np.random.default_rng(3)
    truth = rng.normal(100, 10, 1000)
    rows = [f"r{i}" for i in range(1000)]
    good = [(r, str(t + e), str(t)) for r, t, e in zip(rows, truth, rng.normal(0, 5, 1000), strict=True)]
    bad = [(r, str(t + e), str(t)) for r, t, e in zip(rows, truth, rng.normal(0, 10, 1000), strict=True)]
    found = canary.live_error("regression", canary.Labelled(candidate=bad, stable=good), POLICY)
    assert found is not None and found.metric == "live_mae_increase" and found.outcome == "fail"
    assert found.low is not None and 0.7 < found.low  # about twice the stable's error


@pytest.mark.parametrize(
    ("candidate", "metric"),
    [
        (summary(prediction_shares={"1": 1.0}, distinct_predictions=1), "distinct_predictions"),
        (summary(missing_share=0.2), "missing_predictions"),
        (summary(out_of_range_share=0.01), "probabilities_out_of_range"),
        (summary(latency_p99_ms=40.0), "latency_p99_ms"),
    ],
)
def test_a_broken_candidate_is_rolled_back_without_labels(candidate: canary.Summary, metric: str) -> None:
    outcome, reason = judged(candidate, summary(), None)
    assert outcome == "rollback" and metric in reason


def test_without_labels_a_worse_calibrated_estimate_rolls_back_and_an_equal_one_advances() -> None:
    stable = summary(estimated={"accuracy": 0.9})
    assert judged(summary(estimated={"accuracy": 0.8}), stable, None)[0] == "rollback"
    assert judged(summary(estimated={"accuracy": 0.89}), stable, None)[0] == "advance"


def test_prediction_distance_rolls_back_only_when_nothing_else_speaks_and_stable_did_not_drift() -> None:
    far = summary(prediction_shares={"0": 0.05, "1": 0.95})
    assert judged(far, summary(), None)[0] == "rollback"
    assert judged(far, summary(drifted=True), None)[0] == "advance"


def test_once_labels_speak_a_worse_estimate_is_reported_not_decisive() -> None:
    candidate, stable = summary(estimated={"accuracy": 0.8}), summary(estimated={"accuracy": 0.9})
    assert judged(candidate, stable, None)[0] == "rollback", "without labels the estimate decides"
    comparisons = canary.compare(candidate, stable, POLICY, task="classification", labelled=labelled(0.1, 0.1, 2000))
    guessed = next(c for c in comparisons if c.test == "cbpe")
    assert (guessed.outcome, guessed.candidate, guessed.stable) == ("reported", 0.8, 0.9)
    assert canary.verdict(comparisons, candidate.rows, POLICY.min_samples)[0] == "advance"


def test_the_p99_interval_puts_its_low_end_above_the_true_quantile_at_most_as_often_as_stated() -> None:
    """The low end is what a rollback rests on: above the true p99 at most 2.5 % of the time."""
    rng = np.random.default_rng(7)
    true_p99 = float(np.log(100.0))  # exponential(1): P(X > ln 100) = 1 %
    bounds = [canary.quantile_bounds(rng.exponential(1.0, 300)) for _ in range(4000)]
    too_high = sum(low > true_p99 for low, _ in bounds) / len(bounds)
    held = sum(low <= true_p99 <= high for low, high in bounds) / len(bounds)
    assert too_high <= 0.03
    assert held >= 0.92  # at 300 rows the high end is the largest value, which misses 0.99^300 = 4.9 %


def test_a_few_slow_requests_in_a_busy_window_do_not_roll_back_but_a_slower_version_does() -> None:
    rng = np.random.default_rng(3)
    stable_ms = rng.normal(2.0, 0.2, 300)
    hiccups = np.concatenate([rng.normal(2.0, 0.2, 295), [7.4, 7.6, 8.1, 8.8, 9.0]])  # five scheduling stalls
    slower = rng.normal(9.0, 0.5, 300)

    def window(latency: np.ndarray) -> canary.Summary:
        return summary(
            latency_p99_ms=float(np.percentile(latency, 99)), latency_p99_bounds=canary.quantile_bounds(latency)
        )

    stable = window(stable_ms)
    assert window(hiccups).latency_p99_ms - stable.latency_p99_ms > 5.0, "the point estimate alone would roll back"
    assert judged(window(hiccups), stable, None)[0] == "advance"
    outcome, reason = judged(window(slower), stable, None)
    assert outcome == "rollback" and "latency_p99_ms" in reason and "95% interval from" in reason
