"""Two pictures the console draws on the server: a version's lineage as a graph (SVG, each node a
link to its page) and a trace's waterfall (each span placed on the trace's time line)."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Any

from markupsafe import Markup

from shared.contract import views

COLUMN, ROW, WIDTH, HEIGHT = 178, 44, 150, 30
MAX_PER_COLUMN = 6
PALETTE = ("#2456c9", "#1b7a3a", "#a15c00", "#7b3fb5", "#b00020", "#00788a", "#5d6678", "#c2185b")


@dataclass(frozen=True)
class Node:
    """One box of the lineage graph."""

    kind: str
    label: str
    href: str
    detail: str = ""


def lineage_nodes(lineage: views.Lineage, ui: str) -> list[list[Node]]:
    """The graph's columns, left to right: dataset → run → version → evaluations → rollouts →
    drift → alerts (an empty column is left out)."""
    v = lineage.version
    model = f"{ui}/models/{v.model}"
    here = f"{model}/versions/{v.version}"
    run = lineage.run
    drifts = [h for h in lineage.history if h.kind == "DriftDetected"]
    alerts = [h for h in lineage.history if h.kind.startswith("Alert")]
    columns: list[list[Node]] = [
        [Node("dataset", f"{v.dataset}@{v.dataset_version}", f"{ui}/datasets/{v.dataset}/{v.dataset_version}")],
        [Node("run", run.run_id if run else v.run_id, f"{here}#run", run.status if run else "")],
        [Node("version", f"{v.model} v{v.version}", here, v.status)],
        [
            Node("evaluation", e.decision, f"{here}#gates", f"vs v{e.champion_version}" if e.champion_version else "")
            for e in lineage.evaluations
        ],
        [
            Node("rollout", f"{r.from_state} → {r.to_state}", f"{model}#rollout-card", r.reason)
            for r in lineage.rollouts
        ],
        [Node("drift", h.summary, f"{model}#drift", h.occurred_at.strftime("%H:%M:%S")) for h in drifts],
        [Node("alert", h.summary, f"{ui}/alerts?model={v.model}", h.kind) for h in alerts],
    ]
    shown = []
    for column in columns:
        if len(column) > MAX_PER_COLUMN:
            rest = len(column) - MAX_PER_COLUMN + 1
            column = [*column[: MAX_PER_COLUMN - 1], Node(column[0].kind, f"+{rest} more", column[-1].href)]
        if column:
            shown.append(column)
    return shown


def _short(text: str, limit: int = 22) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def lineage_svg(columns: list[list[Node]]) -> Markup:
    """The lineage graph as inline SVG: boxes by column, arrows from each column to the next."""
    rows = max((len(c) for c in columns), default=1)
    width, height = COLUMN * len(columns), ROW * rows + 24
    place = {
        (i, j): (i * COLUMN + 4, 20 + j * ROW + (rows - len(column)) * ROW / 2)
        for i, column in enumerate(columns)
        for j, _ in enumerate(column)
    }
    parts = [
        f'<svg class="lineage" id="lineage" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        'role="img" aria-label="lineage graph">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" markerHeight="6" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#aab2c0"/></marker></defs>',
    ]
    for i, column in enumerate(columns):
        kind = column[0].kind
        parts.append(f'<text x="{i * COLUMN + 4}" y="12" class="muted" font-size="11">{escape(kind)}</text>')
        if i + 1 < len(columns):
            after = columns[i + 1]
            for j in range(len(column)):
                # Fan out from one node or into one; otherwise row to row (no thicket of arrows).
                ends = range(len(after)) if len(column) == 1 else [min(j, len(after) - 1)]
                for k in ends:
                    x1, y1 = place[(i, j)]
                    x2, y2 = place[(i + 1, k)]
                    start, end = (x1 + WIDTH, y1 + HEIGHT / 2), (x2 - 2, y2 + HEIGHT / 2)
                    parts.append(f'<line x1="{start[0]:.0f}" y1="{start[1]:.0f}" x2="{end[0]:.0f}" y2="{end[1]:.0f}"/>')
    for i, column in enumerate(columns):
        for j, node in enumerate(column):
            x, y = place[(i, j)]
            title = escape(f"{node.kind}: {node.label}" + (f" ({node.detail})" if node.detail else ""))
            parts.append(
                f'<a class="node" data-kind="{escape(node.kind)}" href="{escape(node.href)}"><title>{title}</title>'
                f'<rect x="{x:.0f}" y="{y:.0f}" width="{WIDTH}" height="{HEIGHT}"/>'
                f'<text x="{x + 8:.0f}" y="{y + 19:.0f}">{escape(_short(node.label))}</text></a>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704  # nosec B704 - every piece of text in it is escaped above


@dataclass(frozen=True)
class SpanRow:
    """One span as the waterfall lays it out."""

    service: str
    name: str
    depth: int
    left: float
    width: float
    duration: int
    color: str


def waterfall(trace: dict[str, Any]) -> tuple[list[SpanRow], list[str], int, list[dict[str, str]]]:
    """A Jaeger trace (its /api/traces answer) as rows in start order, indented by depth; with the
    services in it, its length in µs, and the traces it follows from (a retrain's cause)."""
    spans = trace.get("spans") or []
    processes = trace.get("processes") or {}
    service_of = {s["spanID"]: processes.get(s["processID"], {}).get("serviceName", "?") for s in spans}
    parent = {
        s["spanID"]: next((r["spanID"] for r in s.get("references", []) if r["refType"] == "CHILD_OF"), None)
        for s in spans
    }
    start = min((s["startTime"] for s in spans), default=0)
    end = max((s["startTime"] + s["duration"] for s in spans), default=start + 1)
    total = max(end - start, 1)
    services = sorted(set(service_of.values()))
    colors = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(services)}

    def depth(span_id: str) -> int:
        seen, found = 0, parent.get(span_id)
        while found is not None and found in parent and seen < 50:
            seen, found = seen + 1, parent.get(found)
        return seen

    rows = [
        SpanRow(
            service=service_of[s["spanID"]],
            name=s["operationName"],
            depth=depth(s["spanID"]),
            left=100 * (s["startTime"] - start) / total,
            width=max(100 * s["duration"] / total, 0.2),
            duration=s["duration"],
            color=colors[service_of[s["spanID"]]],
        )
        for s in sorted(spans, key=lambda s: s["startTime"])
    ]
    ids = {s["spanID"] for s in spans}
    links = [
        {"trace": r["traceID"], "span": s["operationName"]}
        for s in spans
        for r in s.get("references", [])
        if r["refType"] == "FOLLOWS_FROM" and r["spanID"] not in ids
    ]
    return rows, services, total, links
