"""Canary analysis on evidence: how a canary's window compares with the stable version's, and what
the deployer should do. Pure: values in, values out.

The evidence, strongest first:
  1. **Live error on labels.** During a canary the stable version also scores the canary's
     requests (a shadow copy, never returned), so once labels arrive both versions' errors are known
     on the same requests: a **paired** comparison of per-request loss (paired t interval). Where a
     request was scored by one version only, the two versions' labelled requests of the same time
     slice are compared instead (Welch's t interval). The difference is candidate minus stable:
     error rate for a classifier, mean absolute error as a share of the stable's for a regressor.
     Beyond `max_metric_drop` with confidence: roll back; within it with confidence: pass; an
     interval that straddles it: hold.
  2. **Broken candidates**, which need no labels: missing (NaN) predictions, constant predictions
     where the stable version varies, probabilities outside [0, 1], p99 latency beyond the ratio.
  3. **Estimated performance (CBPE)** of both versions from their calibrations, when labels are
     absent: the candidate's estimated accuracy below the stable's by more than `max_metric_drop`.
  4. **Prediction distance** (Jensen-Shannon) from the stable version: a reason to roll back only
     when neither labels nor estimates speak and the stable version's own window did not drift; a
     stale, drifted stable *should* predict differently from a candidate that learnt the new world.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import stats

from services.monitor import drift
from shared.contract.spec import Rollout

PREDICTION_DISTANCE = 0.1
CONFIDENCE = 0.95
MIN_LABELLED = 30  # labelled requests per side (or pairs) before labels judge
MIN_ROWS_FOR_CONSTANT = 30
Outcome = Literal["pass", "fail", "undecided", "reported"]
Verdict = Literal["advance", "hold", "rollback"]


@dataclass(frozen=True)
class Summary:
    """What canary analysis reads of one version's window."""

    rows: int
    latency_p99_ms: float
    prediction_shares: dict[str, float]  # a classifier's predicted classes
    latency_p99_bounds: tuple[float, float] | None = None  # its distribution-free 95 % interval
    prediction_deciles: list[float] = field(default_factory=list)  # a regressor's predicted values
    distinct_predictions: int = 0
    estimated: dict[str, float] = field(default_factory=dict)  # CBPE: accuracy, roc_auc
    missing_share: float = 0.0  # predictions that are NaN or empty
    out_of_range_share: float = 0.0  # rows with a probability outside [0, 1]
    drifted: bool = False  # the window drifted from the version's reference

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "latency_p99_ms": self.latency_p99_ms,
            "latency_p99_bounds": list(self.latency_p99_bounds) if self.latency_p99_bounds else None,
            "prediction_shares": self.prediction_shares,
            "prediction_deciles": self.prediction_deciles,
            "distinct_predictions": self.distinct_predictions,
            "estimated": self.estimated,
            "missing_share": self.missing_share,
            "out_of_range_share": self.out_of_range_share,
            "drifted": self.drifted,
        }

    @classmethod
    def from_dict(cls, found: dict[str, Any]) -> Summary:
        return cls(
            rows=int(found["rows"]),
            latency_p99_ms=float(found["latency_p99_ms"]),
            latency_p99_bounds=_bounds(found.get("latency_p99_bounds")),
            prediction_shares=dict(found.get("prediction_shares", {})),
            prediction_deciles=list(found.get("prediction_deciles", [])),
            distinct_predictions=int(found.get("distinct_predictions", len(found.get("prediction_shares", {})))),
            estimated=dict(found.get("estimated", {})),
            missing_share=float(found.get("missing_share", 0.0)),
            out_of_range_share=float(found.get("out_of_range_share", 0.0)),
            drifted=bool(found.get("drifted", False)),
        )


@dataclass(frozen=True)
class Comparison:
    """One line of a verdict's evidence."""

    metric: str
    candidate: float | None
    stable: float | None
    threshold: float
    outcome: Outcome
    test: str
    low: float | None = None
    high: float | None = None
    candidate_samples: int | None = None
    stable_samples: int | None = None
    note: str = ""  # what the reason adds, in words

    @property
    def passed(self) -> bool:
        """Within the threshold, or not a reason either way (undecided is not passed)."""
        return self.outcome in ("pass", "reported")


# ---------------------------------------------------------------- live error on labels


@dataclass(frozen=True)
class Labelled:
    """Labelled requests of one time slice: (request id, prediction, label) per version."""

    candidate: list[tuple[str, str, str]]
    stable: list[tuple[str, str, str]]


def losses(task: str, rows: Sequence[tuple[str, str, str]]) -> dict[str, float]:
    """Per-request loss: 0/1 error for a classifier, absolute error for a regressor (unparsable: skipped)."""
    found = {}
    for request_id, prediction, label in rows:
        if task == "classification":
            found[request_id] = float(prediction != label)
            continue
        try:
            found[request_id] = abs(float(prediction) - float(label))
        except ValueError:
            continue
    return {k: v for k, v in found.items() if math.isfinite(v)}


def _interval(mean: float, se: float, dof: float) -> tuple[float, float]:
    if se == 0 or not math.isfinite(se):
        return mean, mean
    half = float(stats.t.ppf((1 + CONFIDENCE) / 2, dof)) * se
    return mean - half, mean + half


def live_error(task: str, labelled: Labelled, policy: Rollout) -> Comparison | None:
    """The labelled comparison of candidate and stable, or None with too few labels.

    Paired where both versions scored the same requests, else Welch's two-sample interval."""
    candidate, stable = losses(task, labelled.candidate), losses(task, labelled.stable)
    both = sorted(set(candidate) & set(stable))
    regressor = task != "classification"
    metric = "live_mae_increase" if regressor else "live_error_rate_increase"
    if len(both) >= MIN_LABELLED:
        c = np.array([candidate[k] for k in both])
        s = np.array([stable[k] for k in both])
        diff = c - s
        low, high = _interval(float(diff.mean()), float(diff.std(ddof=1)) / math.sqrt(diff.size), diff.size - 1)
        test, c_mean, s_mean, n_c, n_s = "paired-t", float(c.mean()), float(s.mean()), diff.size, diff.size
        mean = float(diff.mean())
    elif len(candidate) >= MIN_LABELLED and len(stable) >= MIN_LABELLED:
        c, s = np.array(list(candidate.values())), np.array(list(stable.values()))
        vc, vs = c.var(ddof=1) / c.size, s.var(ddof=1) / s.size
        se = math.sqrt(vc + vs)
        dof = (vc + vs) ** 2 / ((vc**2 / (c.size - 1)) + (vs**2 / (s.size - 1))) if vc + vs > 0 else 1.0
        mean = float(c.mean() - s.mean())
        low, high = _interval(mean, se, dof)
        test, c_mean, s_mean, n_c, n_s = "welch-t", float(c.mean()), float(s.mean()), c.size, s.size
    else:
        return None
    scale = s_mean if regressor else 1.0  # a regressor's excess MAE, as a share of the stable's
    if regressor and scale <= 0:
        scale = 1.0
    mean, low, high = mean / scale, low / scale, high / scale
    threshold = policy.max_metric_drop
    outcome: Outcome = "fail" if low > threshold else "pass" if high <= threshold else "undecided"
    return Comparison(
        metric, c_mean, s_mean, threshold, outcome, test, low, high, candidate_samples=n_c, stable_samples=n_s
    )


# ---------------------------------------------------------------- label-free evidence


def broken(candidate: Summary, stable: Summary, policy: Rollout) -> list[Comparison]:
    """The checks a candidate must pass with or without labels."""
    found = [
        Comparison(
            "missing_predictions",
            candidate.missing_share,
            stable.missing_share,
            0.0,
            "fail" if candidate.missing_share > stable.missing_share else "pass",
            "broken-check",
            candidate_samples=candidate.rows,
            stable_samples=stable.rows,
        ),
        Comparison(
            "probabilities_out_of_range",
            candidate.out_of_range_share,
            0.0,
            0.0,
            "fail" if candidate.out_of_range_share > 0 else "pass",
            "broken-check",
            candidate_samples=candidate.rows,
        ),
    ]
    constant = (
        candidate.rows >= MIN_ROWS_FOR_CONSTANT
        and candidate.distinct_predictions <= 1
        and stable.distinct_predictions > 1
    )
    found.append(
        Comparison(
            "distinct_predictions",
            float(candidate.distinct_predictions),
            float(stable.distinct_predictions),
            2.0,
            "fail" if constant else "pass",
            "broken-check",
            candidate_samples=candidate.rows,
            stable_samples=stable.rows,
        )
    )
    found.append(latency(candidate, stable, policy))
    return found


def latency(candidate: Summary, stable: Summary, policy: Rollout) -> Comparison:
    """The candidate's p99 against the stable's: within `max_latency_ratio` of it, or at most
    `latency_slack_ms` above it. A p99 of a few hundred requests rests on its few slowest ones, so
    a rollback needs the candidate's whole 95 % interval (order statistics, no distribution
    assumed) beyond what the stable's interval allows; a point estimate past the limit with an
    interval that reaches back under it is noise on a busy machine, not a regression."""
    low, _ = candidate.latency_p99_bounds or (candidate.latency_p99_ms, candidate.latency_p99_ms)
    _, high = stable.latency_p99_bounds or (stable.latency_p99_ms, stable.latency_p99_ms)
    allowed = max(policy.max_latency_ratio * max(high, 1.0), high + policy.latency_slack_ms)
    return Comparison(
        "latency_p99_ms",
        candidate.latency_p99_ms,
        stable.latency_p99_ms,
        policy.max_latency_ratio,
        "fail" if low > allowed else "pass",
        "quantile-interval",
        note=f"its 95% interval from {low:.4g} ms, at most {allowed:.4g} ms allowed",
        candidate_samples=candidate.rows,
        stable_samples=stable.rows,
    )


def quantile_bounds(values: np.ndarray, q: float = 0.99, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """A distribution-free interval for the q-quantile of `values`' population: the order
    statistics at the binomial ranks (Conover, *Practical Nonparametric Statistics*, 3.2). Its low
    end lies above the true quantile at most (1 - confidence) / 2 of the time; with too few rows
    for the high rank (under about 370 for the p99) the high end is the largest value."""
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    n = ordered.size
    tail = (1 - confidence) / 2
    lower = int(stats.binom.ppf(tail, n, q))  # ranks counted from 1: x(lower) .. x(upper)
    upper = int(stats.binom.ppf(1 - tail, n, q)) + 1
    return float(ordered[max(lower, 1) - 1]), float(ordered[min(upper, n) - 1])


def _bounds(found: Any) -> tuple[float, float] | None:
    return (float(found[0]), float(found[1])) if found else None


def estimated(candidate: Summary, stable: Summary, policy: Rollout) -> Comparison | None:
    """Estimated accuracy (CBPE) of the candidate against the stable's, when both have one."""
    c, s = candidate.estimated.get("accuracy"), stable.estimated.get("accuracy")
    if c is None or s is None:
        return None
    drop = s - c
    return Comparison(
        "estimated_accuracy",
        c,
        s,
        policy.max_metric_drop,
        "fail" if drop > policy.max_metric_drop else "pass",
        "cbpe",
        candidate_samples=candidate.rows,
        stable_samples=stable.rows,
    )


def distance(candidate: Summary, stable: Summary, decisive: bool) -> Comparison:
    """How differently the two versions predict: the Jensen-Shannon distance of a classifier's
    predicted classes, or for a regressor the largest gap between the two versions' deciles over
    the stable's 10-90 % range."""
    if candidate.prediction_deciles and stable.prediction_deciles:
        c, s = np.array(candidate.prediction_deciles), np.array(stable.prediction_deciles)
        spread = float(s[-1] - s[0]) or 1.0
        found, test = float(np.abs(c - s).max()) / spread, "decile-gap"
    else:
        classes = sorted(set(candidate.prediction_shares) | set(stable.prediction_shares))
        p = np.array([stable.prediction_shares.get(k, 0.0) for k in classes])
        q = np.array([candidate.prediction_shares.get(k, 0.0) for k in classes])
        found, test = (drift.jensen_shannon(p, q) if p.sum() and q.sum() else 0.0), "jensen-shannon"
    outcome: Outcome = ("pass" if found <= PREDICTION_DISTANCE else "fail") if decisive else "reported"
    return Comparison(
        "prediction_distance",
        found,
        0.0,
        PREDICTION_DISTANCE,
        outcome,
        test,
        candidate_samples=candidate.rows,
        stable_samples=stable.rows,
    )


# ---------------------------------------------------------------- the verdict


def compare(
    candidate: Summary, stable: Summary, policy: Rollout, *, task: str, labelled: Labelled | None
) -> list[Comparison]:
    """Every comparison behind a verdict, the decisive ones and those only reported."""
    found = broken(candidate, stable, policy)
    on_labels = live_error(task, labelled, policy) if labelled is not None else None
    if on_labels is not None:
        found.append(on_labels)
    guessed = estimated(candidate, stable, policy)
    if guessed is not None:
        found.append(guessed if on_labels is None else dataclasses.replace(guessed, outcome="reported"))
    decisive = on_labels is None and guessed is None and not stable.drifted
    found.append(distance(candidate, stable, decisive))
    return found


def _said(c: Comparison) -> str:
    value = f"{c.metric} {c.candidate:.4g} vs {c.stable:.4g}" if c.candidate is not None else c.metric
    if c.low is not None and c.high is not None:
        value += f" (difference {CONFIDENCE:.0%} CI [{c.low:+.4f}, {c.high:+.4f}], {c.test}, n={c.candidate_samples})"
    if c.note:
        value += f" ({c.note}, n={c.candidate_samples})"
    return value


def verdict(comparisons: Sequence[Comparison], samples: int, min_samples: int) -> tuple[Verdict, str]:
    """(advance | hold | rollback, why): a failed comparison rolls back; an undecided one, or too
    few samples, holds; else advance. The reason always says what the labels showed, when the
    window had enough of them, and that there were none otherwise."""
    on_labels = next((c for c in comparisons if c.test in ("paired-t", "welch-t")), None)
    labels = f"on labels: {_said(on_labels)}, {on_labels.outcome}" if on_labels is not None else "no labels yet"
    failed = [c for c in comparisons if c.outcome == "fail"]
    if failed:
        also = f"; {labels}" if on_labels not in failed else ""
        return "rollback", "canary worse than stable: " + "; ".join(_said(c) for c in failed) + also
    undecided = [c for c in comparisons if c.outcome == "undecided"]
    if undecided:
        also = f"; {labels}" if on_labels not in undecided else ""
        return "hold", "interval too wide to decide: " + "; ".join(_said(c) for c in undecided) + also
    if samples < min_samples:
        return "hold", f"{samples} canary samples, {min_samples} needed ({labels})"
    if on_labels is not None:
        return "advance", "canary not worse than stable on labels: " + _said(on_labels)
    return "advance", f"canary within every threshold over {samples} samples (no labels yet)"
