"""The console's charts as plotly figures (plain JSON: `data` and `layout`), built from what the
registry, the monitor and Prometheus answer. The page hands each to plotly.js, served from the
`plotly` package; nothing here runs in the browser but that."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from shared.contract import views

Figure = dict[str, Any]
FONT = {"family": "system-ui, sans-serif", "size": 12}
MAX_LINES = 12  # versions drawn as lines of their own on the rollout timeline


def _layout(title: str, **extra: Any) -> dict[str, Any]:
    return {
        "title": {"text": title, "font": {"size": 14}},
        "font": FONT,
        "margin": {"l": 56, "r": 16, "t": 36, "b": 40},
        "height": 300,
        "hovermode": "closest",
        "legend": {"orientation": "h", "y": -0.2},
        **extra,
    }


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def metric_across_versions(versions: Sequence[views.ModelVersion], metric: str) -> Figure:
    """The selection metric of each version (validation split), oldest version first."""
    ordered = sorted(versions, key=lambda v: v.version)
    return {
        "data": [
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": metric,
                "x": [f"v{v.version}" for v in ordered],
                "y": [_number(v.metrics.get(metric)) for v in ordered],
                "text": [v.status for v in ordered],
                "hovertemplate": "%{x}: %{y:.4f} (%{text})<extra></extra>",
            }
        ],
        "layout": _layout(f"{metric} across versions", xaxis={"type": "category"}),
    }


def rollout_timeline(steps: Sequence[views.RolloutStep]) -> Figure:
    """The rollout timeline, oldest first: a row of markers with one point per transition (the
    transition and its reason on hover), and each version's traffic share as a step line drawn
    through the transitions where its share changed."""
    ordered = sorted(steps, key=lambda s: s.occurred_at)
    when = [s.occurred_at.isoformat() for s in ordered]
    shares: dict[int, list[float]] = {}
    for index, step in enumerate(ordered):
        for share in step.traffic:
            if share.get("role") != "shadow":
                line = shares.setdefault(int(share["version"]), [0.0] * len(ordered))
                line[index] += float(share["percent"])
    data: list[dict[str, Any]] = [
        {
            "type": "scatter",
            "mode": "markers",
            "name": "transitions",
            "x": when,
            "y": [102] * len(ordered),
            "marker": {"symbol": "diamond", "size": 8, "color": "#1d2330"},
            "text": [
                f"v{s.candidate_version} {s.from_state} → {s.to_state} ({s.actor})<br>{_wrap(s.reason)}"
                for s in ordered
            ],
            "hovertemplate": "%{text}<br>%{x}<extra></extra>",
        }
    ]
    if len(shares) > MAX_LINES:  # the newest versions each a line, the older ones summed into one
        older = sorted(shares)[: len(shares) - MAX_LINES + 1]
        folded = [shares.pop(v) for v in older]
        summed = [sum(line[i] for line in folded) for i in range(len(ordered))]
    else:
        older, summed = [], []
    lines: list[tuple[str, list[float]]] = [(f"v{v}", line) for v, line in sorted(shares.items())]
    if older:
        lines.insert(0, (f"v{older[0]}-v{older[-1]}", summed))
    for name, line in lines:
        keep = [i for i, value in enumerate(line) if i == 0 or value != line[i - 1] or i == len(line) - 1]
        data.append(
            {
                "type": "scatter",
                "mode": "lines",
                "line": {"shape": "hv"},
                "name": name,
                "x": [when[i] for i in keep],
                "y": [line[i] for i in keep],
                "hovertemplate": "%{y:.0f} %<extra>" + name + "</extra>",
            }
        )
    layout = _layout("Traffic share per version", yaxis={"title": {"text": "% of requests"}, "range": [0, 106]})
    return {"data": data, "layout": layout}


def _wrap(text: str, width: int = 80) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + len(word) > width:
            lines.append(line)
            line = ""
        line = f"{line} {word}".strip()
    return "<br>".join([*lines, line])


def drift_heatmap(windows: Sequence[dict[str, Any]]) -> Figure:
    """Drift score per feature per window, one heatmap row per version and feature (p-values on
    hover), with each version's windows that drifted as a dataset marked in a row of their own.
    Rows sit at numbers labelled by tick text: plotly's heatmaps cannot share a category axis."""
    data: list[dict[str, Any]] = []
    labels: list[str] = []
    for version in sorted({w["version"] for w in windows}):
        mine = [w for w in windows if w["version"] == version]
        features = sorted({f["feature"] for w in mine for f in w["features"]}, reverse=True)
        by_window = [{f["feature"]: f for f in w["features"]} for w in mine]
        drifted = [w for w in mine if w["dataset_drift"]]
        first = len(labels)
        labels += [f"v{version} {name}" for name in features] + [f"v{version} dataset drift"]
        data.append(
            {
                "type": "heatmap",
                "name": f"v{version}",
                "x": [w["ended_at"] for w in mine],
                "y": list(range(first, first + len(features))),
                "z": [[_rounded(row.get(name, {}).get("score")) for row in by_window] for name in features],
                "customdata": [
                    [_rounded(row.get(name, {}).get("p_value"), 6) for row in by_window] for name in features
                ],
                "text": [
                    ["drifted" if row.get(name, {}).get("drifted") else "" for row in by_window] for name in features
                ],
                "hovertemplate": "score %{z:.3f}, p %{customdata:.2g} %{text}<br>%{x}<extra>v"
                + str(version)
                + "</extra>",
                "colorscale": "YlOrRd",
                "reversescale": True,
                "zmin": 0,
                "zmax": 1,
                "showscale": not data,
                "colorbar": {"title": {"text": "score"}},
            }
        )
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": f"v{version} dataset drift",
                "x": [w["ended_at"] for w in drifted],
                "y": [len(labels) - 1] * len(drifted),
                "marker": {"symbol": "triangle-down", "size": 9, "color": "#b00020"},
                "text": [f"{_fmt(w['drifted_share'])} of features drifted ({w['rows']} rows)" for w in drifted],
                "hovertemplate": "%{text}<br>%{x}<extra></extra>",
            }
        )
    ticks = {"tickmode": "array", "tickvals": list(range(len(labels))), "ticktext": labels, "automargin": True}
    layout = _layout(
        "Drift per feature and window",
        height=max(260, 70 + 24 * len(labels)),
        yaxis={**ticks, "range": [-0.5, len(labels) - 0.5], "zeroline": False},
        showlegend=False,
    )
    return {"data": data, "layout": layout}


def _rounded(value: Any, digits: int = 4) -> float | None:
    number = _number(value)
    return None if number is None else float(f"{number:.{digits}g}")


def _fmt(value: Any) -> str:
    number = _number(value)
    if number is None:
        return "-"
    return f"{number:.2e}" if 0 < abs(number) < 1e-3 else f"{number:.3f}"


def live_performance(windows: Sequence[dict[str, Any]], baselines: dict[str, dict[str, float]], metric: str) -> Figure:
    """Realised accuracy (labelled rows) and the estimated metric per window, against each
    version's validation figure."""
    data: list[dict[str, Any]] = []
    for version in sorted({w["version"] for w in windows}):
        mine = [w for w in windows if w["version"] == version]
        x = [w["ended_at"] for w in mine]
        estimated = [_number((w.get("estimated") or {}).get(metric)) for w in mine]
        if any(e is not None for e in estimated):
            data.append(
                {"type": "scatter", "mode": "lines", "name": f"v{version} estimated {metric}", "x": x, "y": estimated}
            )
        realised = [_number((w.get("realised") or {}).get("accuracy")) for w in mine]
        if any(r is not None for r in realised):
            data.append(
                {"type": "scatter", "mode": "markers", "name": f"v{version} realised accuracy", "x": x, "y": realised}
            )
        baseline = _number((baselines.get(str(version)) or {}).get(metric))
        if baseline is not None and x:
            data.append(
                {
                    "type": "scatter",
                    "mode": "lines",
                    "line": {"dash": "dot"},
                    "name": f"v{version} validation {metric}",
                    "x": [x[0], x[-1]],
                    "y": [baseline, baseline],
                }
            )
    return {"data": data, "layout": _layout(f"Live {metric} against validation")}


def sparkline(windows: Sequence[dict[str, Any]], metric: str) -> Figure:
    """A model's live metric over its last windows, realised where labelled, estimated otherwise."""
    y = [
        _number((w.get("realised") or {}).get("accuracy") if metric == "accuracy" and w.get("realised") else None)
        or _number((w.get("estimated") or {}).get(metric))
        for w in windows
    ]
    return {
        "data": [{"type": "scatter", "mode": "lines", "x": [w["ended_at"] for w in windows], "y": y, "hoverinfo": "y"}],
        "layout": {
            "height": 36,
            "width": 140,
            "margin": {"l": 0, "r": 0, "t": 2, "b": 2},
            "xaxis": {"visible": False},
            "yaxis": {"visible": False},
            "showlegend": False,
        },
        "config": {"staticPlot": True},
    }


def prometheus_lines(title: str, answers: dict[str, list[dict[str, Any]]], unit: str, scale: float = 1.0) -> Figure:
    """Prometheus range answers (name -> result list) as lines, one per name and series."""
    data = []
    for name, series in answers.items():
        for one in series:
            labels = {k: v for k, v in one["metric"].items() if k not in ("__name__", "instance", "job")}
            suffix = " ".join(f"{k}={v}" for k, v in sorted(labels.items()))
            points = [(float(t), float(v)) for t, v in one["values"] if v not in ("NaN", "+Inf", "-Inf")]
            data.append(
                {
                    "type": "scatter",
                    "mode": "lines",
                    "name": f"{name} {suffix}".strip(),
                    "x": [_iso(t) for t, _ in points],
                    "y": [v * scale for _, v in points],
                }
            )
    return {"data": data, "layout": _layout(title, yaxis={"title": {"text": unit}})}


def _iso(seconds: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, UTC).isoformat()
