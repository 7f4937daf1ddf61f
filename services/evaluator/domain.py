"""The evaluator's rules: every gate with its numbers, and the decision.

Pure: fitted models, the test split and measured latencies in; gate results and a decision out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from shared.contract.events import GateResult
from shared.contract.spec import METRICS, ModelSpec
from shared.runtime.features import prepare
from shared.runtime.gates import Timing, gate, latency_gates, sanity_gates
from shared.runtime.latency import Latency
from shared.runtime.metrics import evaluate


@dataclass(frozen=True)
class Verdict:
    """What the evaluation found."""

    gates: list[GateResult]
    metrics: dict[str, float]
    champion_metrics: dict[str, float]
    decision: str
    test_rows: int

    @property
    def passed(self) -> bool:
        """Every gate passed."""
        return all(g.passed for g in self.gates)


def metric_gates(spec: ModelSpec, metrics: dict[str, float], champion: dict[str, float] | None) -> list[GateResult]:
    """The spec's metric gates: absolute bounds, and regression against the champion on the same rows."""
    found: list[GateResult] = []
    for rule in spec.gates:
        value = metrics.get(rule.metric)
        higher = METRICS[rule.metric].higher_is_better
        if rule.min is not None:
            found.append(gate(f"min_{rule.metric}", rule.metric, value, rule.min, ">="))
        if rule.max is not None:
            found.append(gate(f"max_{rule.metric}", rule.metric, value, rule.max, "<="))
        for kind, allowed in (("absolute", rule.max_regression), ("relative", rule.max_relative_regression)):
            if allowed is None:
                continue
            name = f"{rule.metric}_vs_champion_{kind}"
            if champion is None or rule.metric not in champion:
                found.append(
                    GateResult(
                        name=name,
                        metric=rule.metric,
                        value=None,
                        threshold=allowed,
                        comparator="<=",
                        passed=True,
                        detail="no champion to compare with",
                    )
                )
                continue
            base = champion[rule.metric]
            loss = (base - value if higher else value - base) if value is not None else None
            if kind == "relative" and loss is not None:
                loss = loss / abs(base) if base else (0.0 if loss <= 0 else float("inf"))
            found.append(
                gate(name, rule.metric, loss, allowed, "<=", f"candidate {value:.4g} vs champion {base:.4g}")
                if value is not None
                else gate(name, rule.metric, None, allowed, "<=")
            )
    return found


def fairness_gate(spec: ModelSpec, model: Any, test: pd.DataFrame) -> list[GateResult]:
    """Demographic parity or equal opportunity difference across the segment's groups, if configured."""
    fairness = spec.evaluation.fairness
    if fairness is None or spec.task != "classification":
        return []
    name = f"fairness_{fairness.metric}_{fairness.segment}"
    if fairness.segment not in test.columns:
        return [gate(name, fairness.metric, None, fairness.max_difference, "<=", f"no column {fairness.segment!r}")]
    positive = list(model.classes_)[-1]
    predicted = pd.Series(model.predict(prepare(test, spec.features)), index=test.index) == positive
    groups = test[fairness.segment].astype(str)
    if fairness.metric == "equal_opportunity":
        actual = test[spec.target] == positive
        rates = predicted[actual].groupby(groups[actual]).mean()
    else:
        rates = predicted.groupby(groups).mean()
    if len(rates) < 2:
        return [gate(name, fairness.metric, None, fairness.max_difference, "<=", "fewer than two groups")]
    detail = ", ".join(f"{k}: {v:.3f}" for k, v in rates.items())
    return [gate(name, fairness.metric, float(rates.max() - rates.min()), fairness.max_difference, "<=", detail)]


def importances(model: Any) -> np.ndarray[Any, Any] | None:
    """Feature importances of the pipeline's estimator (tree importances or |coefficients|), if it has them."""
    estimator = model.steps[-1][1] if hasattr(model, "steps") else model
    if hasattr(estimator, "feature_importances_"):
        return np.asarray(estimator.feature_importances_, dtype=float)
    if hasattr(estimator, "coef_"):
        coef = np.abs(np.asarray(estimator.coef_, dtype=float))
        mean: np.ndarray[Any, Any] = coef.mean(axis=0) if coef.ndim > 1 else coef
        return mean
    return None


def importance_gate(spec: ModelSpec, model: Any, champion: Any | None) -> list[GateResult]:
    """Correlation of feature importances with the champion's, when configured and both have them."""
    wanted = spec.evaluation.min_importance_correlation
    if wanted is None or champion is None:
        return []
    mine, theirs = importances(model), importances(champion)
    if mine is None or theirs is None or mine.shape != theirs.shape or mine.size < 2:
        return [
            GateResult(
                name="importance_stability",
                metric="importance_correlation",
                value=None,
                threshold=wanted,
                comparator=">=",
                passed=True,
                detail="not comparable (an estimator without importances, or other features)",
            )
        ]
    correlation = float(np.corrcoef(mine, theirs)[0, 1])
    return [gate("importance_stability", "importance_correlation", correlation, wanted, ">=")]


def judge(
    spec: ModelSpec,
    model: Any,
    test: pd.DataFrame,
    latency: Timing | Latency,
    *,
    champion: Any | None = None,
) -> Verdict:
    """Every gate on the test split, the champion measured on the same rows, and the decision."""
    x, y = prepare(test, spec.features), test[spec.target]
    metrics = evaluate(spec.task, model, x, y)
    champion_metrics = evaluate(spec.task, champion, x, y) if champion is not None else {}
    gates = [
        *metric_gates(spec, metrics, champion_metrics or None),
        *sanity_gates(spec, model, x),
        *latency_gates(spec, latency),
        *fairness_gate(spec, model, test),
        *importance_gate(spec, model, champion),
    ]
    passed = all(g.passed for g in gates)
    decision = ("held-for-review" if spec.require_approval else "approved") if passed else "rejected"
    return Verdict(
        gates=gates, metrics=metrics, champion_metrics=champion_metrics, decision=decision, test_rows=len(test)
    )


def rejected_for(reason: str, name: str = "artifact_integrity") -> Verdict:
    """A verdict for a model that could not be evaluated at all (e.g. its bytes are not what was recorded)."""
    gate = GateResult(name=name, metric="sha256", value=None, threshold=0, comparator=">=", passed=False, detail=reason)
    return Verdict(gates=[gate], metrics={}, champion_metrics={}, decision="rejected", test_rows=0)
