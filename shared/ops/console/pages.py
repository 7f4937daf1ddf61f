"""The console's pages: models, a model, a version, a dataset, alerts, dead letters, a trace, and
search. Each reads the services through their APIs with the viewer's own token; a service that
does not answer is named on the page."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable
from typing import Any, TypeVar

from fastapi import FastAPI, Request, Response
from fastapi.responses import RedirectResponse

from shared.contract import views
from shared.contract.refs import parse_ref
from shared.ops.console import auth, charts, drawings
from shared.ops.console.app import Console
from shared.ops.console.sources import Unavailable

T = TypeVar("T")
TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
SPARK_WINDOWS = 30
LIVE_STATES = ("canary", "shadow", "promoted", "rolled-back", "paused", "pending")


async def _soft(problems: list[str], default: T, work: Awaitable[T]) -> T:
    """A source's answer, or `default` with the reason added to the page's problems."""
    try:
        return await work
    except (Unavailable, LookupError) as exc:
        problems.append(str(exc))
        return default


def _latency_queries(model: str) -> dict[str, str]:
    bucket = f'modelbus_serving_request_seconds_bucket{{model="{model}"}}'
    return {
        "p50": f"histogram_quantile(0.5, sum by (le) (rate({bucket}[1m])))",
        "p99": f"histogram_quantile(0.99, sum by (le) (rate({bucket}[1m])))",
    }


def _throughput_queries(model: str) -> dict[str, str]:
    return {"predictions/s": f'sum by (version) (rate(modelbus_serving_predictions_total{{model="{model}"}}[1m]))'}


def add_pages(api: FastAPI, console: Console) -> None:
    """Register the read pages under /ui."""
    ui = auth.PREFIX

    @api.get(ui, include_in_schema=False)
    async def root() -> Response:
        return RedirectResponse(f"{ui}/", status_code=307)

    @api.get(f"{ui}/", include_in_schema=False)
    async def models_page(request: Request) -> Response:
        who = await console.who(request)
        if who is None:
            return console.login(request)
        token, problems = console.sessions.token_of(request) or "", list[str]()
        reads = Reads(console, token)
        try:
            summaries = await reads.models()
            histories = await asyncio.gather(*(reads.history(m.name, 20) for m in summaries))
            specs = dict(
                zip(
                    [m.name for m in summaries],
                    await asyncio.gather(*(reads.spec(m.name) for m in summaries)),
                    strict=True,
                )
            )
        except Unavailable as exc:
            return console.refuse(request, who, 503, "The registry did not answer", str(exc))
        firing = await _soft(problems, [], console.sources.alerts(token, status="firing", limit=1000))
        windows = await asyncio.gather(
            *(_soft(problems, {}, console.sources.windows(token, m.name, SPARK_WINDOWS)) for m in summaries)
        )
        rows, figures = [], {}
        for index, (summary, (steps, events), history) in enumerate(zip(summaries, histories, windows, strict=True), 1):
            last = steps[0] if steps else None
            drift = next((e for e in events if e.kind == "DriftDetected"), None)
            metric = _live_metric(specs[summary.name])
            rows.append(
                {
                    "name": summary.name,
                    "task": summary.task,
                    "versions": summary.latest_version,
                    "champion": summary.aliases.get("champion"),
                    "traffic": last.traffic if last else [],
                    "state": f"{last.to_state} (v{last.candidate_version})" if last else None,
                    "drift": {"when": drift.occurred_at.strftime("%Y-%m-%d %H:%M"), "summary": drift.summary}
                    if drift
                    else None,
                    "alerts": sum(1 for a in firing if a.get("model") == summary.name),
                    "metric": metric,
                }
            )
            shown = _of_version(history.get("windows", []), summary.aliases.get("champion"))
            if shown:
                figures[f"spark-{index}"] = charts.sparkline(shown, metric)
        return console.render(request, "models.html", who, figures=figures, problems=_unique(problems), models=rows)

    @api.get(f"{ui}/models/{{name}}", include_in_schema=False)
    async def model_page(request: Request, name: str) -> Response:
        who = await console.who(request)
        if who is None:
            return console.login(request)
        token, problems = console.sessions.token_of(request) or "", list[str]()
        reads = Reads(console, token)
        try:
            summary = await reads.model(name)
            versions, (steps, events), spec = await asyncio.gather(
                reads.versions(name), reads.history(name, 1000), reads.spec(name)
            )
        except LookupError:
            return console.refuse(request, who, 404, "No such model", f"model {name!r} does not exist")
        except Unavailable as exc:
            return console.refuse(request, who, 503, "The registry did not answer", str(exc))
        selection = spec.get("selection_metric") if spec else None
        metrics = sorted({m for v in versions for m in v.metrics}, key=lambda m: (m != selection, m))
        history, latency, throughput = await asyncio.gather(
            _soft(problems, {"windows": [], "baselines": {}}, console.sources.windows(token, name)),
            _soft(problems, {}, console.sources.series(_latency_queries(name))),
            _soft(problems, {}, console.sources.series(_throughput_queries(name))),
        )
        windows = history.get("windows", [])
        live = _live_metric(spec)
        figures = {
            "metric": charts.metric_across_versions(versions, selection or (metrics[0] if metrics else "")),
            "rollout": charts.rollout_timeline(steps),
            "drift-chart": charts.drift_heatmap(windows),
            "performance-chart": charts.live_performance(windows, history.get("baselines", {}), live),
            "latency": charts.prometheus_lines("Serving latency (Prometheus)", latency, "ms", scale=1000),
            "throughput": charts.prometheus_lines("Predictions per second (Prometheus)", throughput, "per s"),
        }
        return console.render(
            request,
            "model.html",
            who,
            figures=figures,
            problems=_unique(problems),
            model=summary,
            versions=versions,
            metrics=metrics[:8],
            selection=selection,
            steps=steps,
            events=events[:100],
            state=f"{steps[0].to_state} (v{steps[0].candidate_version})" if steps else None,
            windows=len(windows),
            drifted=sum(1 for w in windows if w["dataset_drift"]),
            ledger=history.get("ledger"),
        )

    @api.get(f"{ui}/models/{{name}}/versions/{{version}}", include_in_schema=False)
    async def version_page(request: Request, name: str, version: str) -> Response:
        who = await console.who(request)
        if who is None:
            return console.login(request)
        try:
            ref = parse_ref(f"{name}@{version}")
        except ValueError as exc:
            return console.refuse(request, who, 400, "Not a version", str(exc))
        try:
            lineage = await Reads(console, console.sessions.token_of(request) or "").lineage(
                name, str(ref).partition("@")[2] or "latest"
            )
        except LookupError:
            return console.refuse(request, who, 404, "No such version", f"{ref} does not exist")
        except Unavailable as exc:
            return console.refuse(request, who, 503, "The registry did not answer", str(exc))
        found = lineage.version
        candidates = (
            lineage.run.candidates if lineage.run and lineage.run.candidates else found.manifest.get("candidates", [])
        )
        return console.render(
            request,
            "version.html",
            who,
            v=found,
            evaluations=lineage.evaluations,
            candidates=[c for c in candidates if isinstance(c, dict)],
            manifest=json.dumps(found.manifest, indent=2, sort_keys=True),
            lineage_svg=drawings.lineage_svg(drawings.lineage_nodes(lineage, ui)),
        )

    @api.get(f"{ui}/datasets/{{name}}/{{version}}", include_in_schema=False)
    async def dataset_page(request: Request, name: str, version: str) -> Response:
        who = await console.who(request)
        if who is None:
            return console.login(request)
        try:
            found = await Reads(console, console.sessions.token_of(request) or "").dataset(name, version)
        except LookupError:
            return console.refuse(request, who, 404, "No such dataset version", f"{name}@{version} is not recorded")
        except Unavailable as exc:
            return console.refuse(request, who, 503, "The registry did not answer", str(exc))
        return console.render(request, "dataset.html", who, d=found)

    @api.get(f"{ui}/alerts", include_in_schema=False)
    async def alerts_page(request: Request, model: str | None = None) -> Response:
        who = await console.who(request)
        if who is None:
            return console.login(request)
        token, problems = console.sessions.token_of(request) or "", list[str]()
        scope = {"model": model} if model else {}
        firing, resolved, silences = await asyncio.gather(
            _soft(problems, [], console.sources.alerts(token, status="firing", limit=500, **scope)),
            _soft(problems, [], console.sources.alerts(token, status="resolved", limit=100, **scope)),
            _soft(problems, [], console.sources.silences(token)),
        )
        return console.render(
            request,
            "alerts.html",
            who,
            problems=_unique(problems),
            model=model,
            firing=firing,
            resolved=resolved,
            silences=silences,
            operator=auth.may(who, "operator"),
        )

    @api.get(f"{ui}/dead-letters", include_in_schema=False)
    async def dead_letters_page(request: Request) -> Response:
        who = await console.who(request)
        if who is None:
            return console.login(request)
        problems: list[str] = []
        shown = await _soft(problems, [], Reads(console, console.sessions.token_of(request) or "").dead_letters())
        return console.render(
            request,
            "dead_letters.html",
            who,
            problems=problems,
            letters=shown[:500],
            operator=auth.may(who, "operator"),
        )

    @api.get(f"{ui}/traces/{{trace_id}}", include_in_schema=False)
    async def trace_page(request: Request, trace_id: str) -> Response:
        who = await console.who(request)
        if who is None:
            return console.login(request)
        if not TRACE_ID.match(trace_id):
            return console.refuse(request, who, 400, "Not a trace id", "A trace id is 32 lowercase hex digits.")
        try:
            trace = await console.sources.trace(trace_id)
        except LookupError as exc:
            return console.refuse(request, who, 404, "No such trace", str(exc))
        except Unavailable as exc:
            return console.refuse(request, who, 503, "The trace store did not answer", str(exc))
        spans, services, total, links = drawings.waterfall(trace)
        return console.render(
            request, "trace.html", who, trace_id=trace_id, spans=spans, services=services, total_us=total, links=links
        )

    @api.get(f"{ui}/search", include_in_schema=False)
    async def search(request: Request, q: str = "") -> Response:
        who = await console.who(request)
        if who is None:
            return console.login(request)
        text = q.strip()
        if TRACE_ID.match(text.lower()):
            return RedirectResponse(f"{ui}/traces/{text.lower()}", status_code=303)
        model, _, version = text.partition("@")
        try:
            found = await Reads(console, console.sessions.token_of(request) or "").models(model) if model else []
        except Unavailable as exc:
            return console.refuse(request, who, 503, "The registry did not answer", str(exc))
        exact = [m for m in found if m.name == model]
        if exact and version:
            return RedirectResponse(f"{ui}/models/{model}/versions/{version}", status_code=303)
        if exact or len(found) == 1:
            return RedirectResponse(f"{ui}/models/{(exact or found)[0].name}", status_code=303)
        message = f"{len(found)} models match {text!r}: " + ", ".join(m.name for m in found[:50]) if found else ""
        return console.refuse(
            request, who, 404, "Nothing found", message or f"No model, version or trace matches {text!r}."
        )


class Reads:
    """The registry's answers as its own types, with one viewer's token."""

    def __init__(self, console: Console, token: str) -> None:
        self.get = console.sources.registry
        self.token = token

    async def models(self, contains: str | None = None) -> list[views.ModelSummary]:
        found = await self.get(self.token, "/v1/models", **({"q": contains} if contains else {}))
        return [views.ModelSummary.model_validate(m) for m in found]

    async def model(self, name: str) -> views.ModelSummary:
        return views.ModelSummary.model_validate(await self.get(self.token, f"/v1/models/{name}"))

    async def versions(self, name: str) -> list[views.ModelVersion]:
        found = await self.get(self.token, f"/v1/models/{name}/versions", limit=1000)
        return [views.ModelVersion.model_validate(v) for v in found]

    async def history(self, name: str, limit: int) -> tuple[list[views.RolloutStep], list[views.HistoryItem]]:
        found = await self.get(self.token, f"/v1/models/{name}/history", limit=limit)
        steps = [views.RolloutStep.model_validate(r) for r in found["rollouts"]]
        return steps, [views.HistoryItem.model_validate(e) for e in found["events"]]

    async def spec(self, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = (await self.get(self.token, f"/v1/models/{name}/spec"))["spec"]
        except LookupError:
            return None
        return found

    async def lineage(self, name: str, ref: str) -> views.Lineage:
        return views.Lineage.model_validate(await self.get(self.token, f"/v1/models/{name}/versions/{ref}/lineage"))

    async def dataset(self, name: str, version: str) -> views.DatasetVersion:
        return views.DatasetVersion.model_validate(await self.get(self.token, f"/v1/datasets/{name}/{version}"))

    async def dead_letters(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await self.get(self.token, "/v1/dead-letters")
        return found


def _live_metric(spec: dict[str, Any] | None) -> str:
    """The metric a model is watched on live: its monitoring metric, else its selection metric."""
    if not spec:
        return "accuracy"
    watched = ((spec.get("monitoring") or {}).get("performance") or {}).get("metric")
    return str(watched or spec.get("selection_metric") or "accuracy")


def _of_version(windows: list[dict[str, Any]], version: int | None) -> list[dict[str, Any]]:
    """The windows of one version (all of them if it has none), in time order."""
    mine = [w for w in windows if w["version"] == version] or windows
    return sorted(mine, key=lambda w: w["ended_at"])


def _unique(problems: list[str]) -> list[str]:
    return list(dict.fromkeys(problems))
