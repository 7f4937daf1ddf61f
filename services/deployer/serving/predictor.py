"""What every protocol's predict route shares: rows routed one by one (or pinned to a named
version), checked against the answering version's schema, predicted in micro-batches, logged,
mirrored to a shadow. The protocols (`/v1`, Open Inference Protocol V2, MLflow's scoring protocol)
only turn their bodies into rows and the outcome into their answers; a refusal is `Refused`, which
each renders in its own error shape."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from services.deployer import domain
from services.deployer.serving.features import FeatureLookups
from services.deployer.serving.metrics import Metrics
from services.deployer.serving.predlog import PredictionLog, Served
from services.deployer.serving.routing import Engine, Host, Live, NotServed, OverBudget
from shared.runtime.feast import FeatureStoreError
from shared.runtime.served import InputError, Row, check_rows
from shared.runtime.settings import Settings

log = logging.getLogger("modelbus.serving")

MAX_JSON_DEPTH = 32
MAX_ERRORS = 50
INLINE_PARSE_BYTES = 64 * 1024  # a body larger than this is parsed in a worker thread, not on the loop
T = TypeVar("T")
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


_DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def dumps(payload: Any) -> bytes:
    """Compact JSON bytes (UTF-8; numpy scalars and arrays as numbers, NaN as null)."""
    return orjson.dumps(payload, default=str, option=_DUMPS_OPTIONS)


@dataclass(frozen=True)
class Answer:
    """An HTTP answer of a predict route."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    media_type: str = "application/json"


class Refused(Exception):
    """A request refused: the status, every reason, and the kind counted in the error metric."""

    def __init__(self, status: int, errors: list[str] | str, kind: str) -> None:
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        if len(self.errors) > MAX_ERRORS:
            self.errors = [*self.errors[:MAX_ERRORS], f"(and {len(self.errors) - MAX_ERRORS} more)"]
        super().__init__("; ".join(self.errors))
        self.status = status
        self.kind = kind


def too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether JSON nests deeper than `limit`; cheap, so it runs before parsing. Brackets are
    counted as they come first (C speed); only a body that seems too deep is looked at again with
    its strings taken out, so a bracket inside a string never refuses it."""
    if not _depth_over(body.translate(None, _NOT_BRACKETS), limit):
        return False
    return _depth_over(_STRINGS.sub(b"", body).translate(None, _NOT_BRACKETS), limit)


def too_many_values(body: bytes, limit: int) -> bool:
    """Whether a JSON or CSV body holds more than `limit` values, by its commas (C speed); only a
    body that seems to is counted again with its strings taken out."""
    if body.count(b",") < limit:
        return False
    return _STRINGS.sub(b"", body).count(b",") >= limit


def _depth_over(brackets: bytes, limit: int) -> bool:
    for _ in range(limit):
        if not brackets:
            return False
        peeled = brackets.replace(b"[]", b"").replace(b"{}", b"")
        if peeled == brackets:
            return False  # unbalanced (or brackets in strings): the parser or the precise look decides
        brackets = peeled
    return bool(brackets)


def decode(body: bytes | str, what: str = "body") -> Any:
    """Parse a JSON body, or refuse it (400) saying why: not JSON, or nested too deeply."""
    raw = body.encode() if isinstance(body, str) else body
    if too_deep(raw):
        raise Refused(400, f"{what} nests JSON deeper than {MAX_JSON_DEPTH} levels", "bad-json")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass  # not strict JSON: the standard parser says why, or reads Infinity and NaN, refused later by name
    try:
        return json.loads(raw)
    except RecursionError:
        raise Refused(400, f"{what} nests JSON deeper than {MAX_JSON_DEPTH} levels", "bad-json") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise Refused(400, f"{what} is not JSON: {exc}", "bad-json") from None


@dataclass(frozen=True)
class Target:
    """Whom a request asks: a model's live routing, or one version of it by name (pinned)."""

    model: str
    live: Live | None
    pinned: Engine | None = None

    @property
    def engines(self) -> dict[int, Engine]:
        """The engines that may answer."""
        if self.pinned is not None:
            return {self.pinned.loaded.version: self.pinned}
        assert self.live is not None
        return self.live.engines

    @property
    def primary(self) -> Engine:
        """The engine that describes the model: the pinned one, else the one with most traffic."""
        if self.pinned is not None:
            return self.pinned
        assert self.live is not None
        share = max(domain.traffic(self.live.rollout), key=lambda s: (s.percent, s.version))
        return self.live.engines.get(share.version) or next(iter(self.live.engines.values()))


@dataclass(frozen=True)
class Outcome:
    """What a request's rows got: one answer per row (request id, version, role, prediction and,
    for a classifier, probabilities by class name)."""

    target: Target
    request_id: str
    answers: list[dict[str, Any]]
    record: Callable[[], None] = lambda: None  # logs the answers (and mirrors the shadow) when `serve` did not


class Predictor:
    """The predict routes' work, for every protocol and both the fast ASGI front and FastAPI."""

    def __init__(self, settings: Settings, host: Host, metrics: Metrics, predictions: PredictionLog) -> None:
        self.settings = settings
        self.host = host
        self.metrics = metrics
        self.predictions = predictions
        self.features = FeatureLookups(settings.feast_repo, metrics)

    def count(self, refused: Refused, model: str) -> Refused:
        """Count a refusal in the error metric; returns it."""
        self.metrics.errors.labels(model, refused.kind).inc()
        return refused

    async def target(self, name: str, version: int | None = None, protocol: str = "v1") -> Target:
        """The live routing of a model, or the named version (loaded on its first request)."""
        if version is None:
            live = self.host.live.get(name)
            if live is None and name in self.host.problems:  # rolled out, but it could not be loaded
                raise Refused(503, self.host.problems[name], "not-loaded")
            if live is None:
                served = sorted(self.host.live)
                raise Refused(404, f"no model named {name!r} is served here (served: {served})", "unknown-model")
            return Target(name, live)
        try:
            engine = await self.host.engine(name, version)
        except OverBudget as exc:
            raise Refused(503, str(exc), "over-budget") from None
        except NotServed as exc:
            raise Refused(404, str(exc), "unknown-version") from None
        self.metrics.pinned.labels(name, str(version), protocol).inc()
        return Target(name, self.host.live.get(name), engine)

    async def parse(self, body: bytes, target: Target | None, work: Callable[[], T]) -> T:
        """Run a body's parsing: inline when the body is small (microseconds), else in a worker
        thread once the body is known to hold no more values than the target's rows can (a parser
        holds the interpreter while it builds values, whichever thread it runs on; counting commas
        takes a millisecond per 4 MiB)."""
        if len(body) <= INLINE_PARSE_BYTES:
            return work()
        if target is not None:
            budget = self.value_budget(target)
            if too_many_values(body, budget):
                raise Refused(
                    413,
                    f"the body holds more than {budget} values; {self.settings.serving_max_rows} rows"
                    f" (MODELBUS_SERVING_MAX_ROWS) of {target.model}'s features hold fewer",
                    "too-large",
                )
        return await asyncio.to_thread(work)

    def value_budget(self, target: Target) -> int:
        """The most values (JSON values, CSV cells) a body for `target` may hold: two per feature
        and row at the row limit (room for keys, shapes and names), and a thousand more."""
        widest = max((len(e.loaded.features) for e in target.engines.values()), default=1)
        return self.settings.serving_max_rows * (widest + 1) * 2 + 1000

    def check_row_count(self, count: int) -> None:
        """Refuse (413) more rows than MODELBUS_SERVING_MAX_ROWS, before any work per row."""
        if count > self.settings.serving_max_rows:
            raise Refused(
                413,
                f"{count} rows exceed the limit of {self.settings.serving_max_rows} (MODELBUS_SERVING_MAX_ROWS)",
                "too-large",
            )

    def request_id(self, given: str | None) -> str:
        """The request id: the caller's, checked, or a new one."""
        if given is None or given == "":
            return uuid.uuid4().hex
        if len(given) > 128:
            raise Refused(400, "the request id is longer than 128 characters", "bad-request-id")
        return given

    async def serve(
        self,
        target: Target,
        rows: list[Any],
        request_id: str,
        *,
        single: bool = False,
        where: str = "instances",
        label: Callable[[int, str], str] | None = None,
        ids: list[str] | None = None,
        keys: list[str | None] | None = None,
        log_now: bool = True,
    ) -> Outcome:
        """Predict rows for a target, or raise Refused listing every bad field.

        `ids` names each row's request id (else the request's, numbered), `keys` the key each row
        is routed by when the rollout's sticky field is absent from it (else its request id); with
        `log_now` false the answers are logged only when the outcome's `record` is called (a
        stream's scorer records them once its transaction committed)."""
        began = time.perf_counter()
        name = target.model
        if not rows:
            raise Refused(422, "the request has no rows", "bad-shape")
        self.check_row_count(len(rows))
        if ids is None:
            ids = [request_id] if single else [f"{request_id}-{i}" for i in range(len(rows))]
        live, pinned = target.live, target.pinned
        if pinned is not None:
            routes = [domain.Route(pinned.loaded.version, "stable")] * len(rows)
        else:
            assert live is not None
            routes = [live.route(row, (keys and keys[i]) or ids[i]) for i, row in enumerate(rows)]
        engines = target.engines
        groups: dict[int, list[int]] = {}
        for index, chosen in enumerate(routes):
            groups.setdefault(chosen.version, []).append(index)
        rows = await self._with_store_features(target, rows, groups, where)
        checked: dict[int, list[Row]] = {}
        errors: list[str] = []
        for version, indices in groups.items():
            features = engines[version].loaded.features
            if single:
                try:
                    checked[version] = check_rows(features, rows, where=where, label=label)
                except InputError as exc:
                    errors.extend(exc.errors)
                continue
            try:  # every row fine (the usual case): one pass; else row by row, naming each bad field
                checked[version] = check_rows(features, [rows[index] for index in indices], where=where)
                continue
            except InputError:
                checked[version] = []
            for index in indices:
                try:
                    checked.setdefault(version, []).extend(
                        check_rows(
                            features,
                            [rows[index]],
                            where=f"{where}[{index}]",
                            label=(lambda _, f, i=index: label(i, f)) if label else None,  # type: ignore[misc]
                        )
                    )
                except InputError as exc:
                    errors.extend(exc.errors)
        if errors:
            raise Refused(422, errors, "invalid-features")
        futures = [(v, engines[v].batcher.submit(checked[v])) for v in groups]
        try:
            outcomes = {v: await f for v, f in futures}
        except Exception as exc:
            log.exception("%s: prediction failed", name)
            raise Refused(500, f"prediction failed: {type(exc).__name__}: {exc}", "model-error") from None
        role = "pinned" if pinned is not None else None
        answers: list[dict[str, Any]] = [{} for _ in rows]
        for version, indices in groups.items():
            labels, probabilities = outcomes[version].labels, outcomes[version].probabilities
            engine = engines[version]
            for k, index in enumerate(indices):
                answer: dict[str, Any] = {
                    "request_id": ids[index],
                    "version": version,
                    "role": role or routes[index].role,
                    "prediction": labels[k],
                }
                if probabilities is not None and engine.loaded.classes is not None:
                    answer["probabilities"] = dict(zip(engine.class_names, probabilities[k], strict=False))
                answers[index] = answer
        elapsed = time.perf_counter() - began
        for version, indices in groups.items():
            self.metrics.latency.labels(name, str(version)).observe(elapsed)
            self.metrics.requests.labels(name, str(version), role or routes[indices[0]].role).inc(len(indices))
        if pinned is None:  # an operator's check of a named version is not rollout evidence
            assert live is not None
            record = functools.partial(self._log, live, rows, groups, checked, answers, routes, elapsed)
            if not log_now:
                return Outcome(target, request_id, answers, record)
            record()
        return Outcome(target, request_id, answers)

    async def _with_store_features(
        self, target: Target, rows: list[Any], groups: dict[int, list[int]], where: str
    ) -> list[Any]:
        """The rows with the Feast features of the versions that answer them (a copy when any were
        looked up); raises Refused: 422 for rows that cannot be served, 503 when the store is away."""
        wanted = [(target.engines[v].loaded, indices) for v, indices in groups.items()]
        wanted = [(loaded, indices) for loaded, indices in wanted if loaded.features_from]
        if not wanted:
            return rows
        rows = list(rows)
        errors: list[str] = []
        for loaded, indices in wanted:
            try:
                errors += await self.features.enrich(loaded, rows, indices, where)
            except FeatureStoreError as exc:
                raise Refused(503, str(exc), "feature-store-down") from None
        if errors:
            raise Refused(422, errors, "missing-entity")
        return rows

    def _log(
        self,
        live: Live,
        rows: list[Any],
        groups: dict[int, list[int]],
        checked: dict[int, list[Row]],
        answers: list[dict[str, Any]],
        routes: list[domain.Route],
        elapsed: float,
    ) -> None:
        served_at = time.time()
        logged_rows: list[dict[str, Any]] = list(rows)
        for version, indices in groups.items():
            loaded = live.engines[version].loaded
            if loaded.derived:  # the derived features the model saw, logged beside the raw ones
                for index, values in zip(indices, loaded.derived_values(checked[version]), strict=True):
                    logged_rows[index] = {**rows[index], **values}
        for index, answer in enumerate(answers):
            self.predictions.add(live.model, Served(live, logged_rows[index], answer, elapsed * 1000, served_at))
        mirrored = [i for i, r in enumerate(routes) if r.shadow is not None and r.shadow in live.engines]
        if mirrored:
            asyncio.get_running_loop().create_task(self.shadow(live, rows, mirrored, routes, answers, served_at))

    async def shadow(
        self,
        live: Live,
        rows: list[Any],
        mirrored: list[int],
        routes: list[domain.Route],
        answers: list[dict[str, Any]],
        at: float,
    ) -> None:
        """Predict with the shadow version and log it; its answers are compared, never returned."""
        version = routes[mirrored[0]].shadow
        assert version is not None
        engine = live.engines[version]
        try:
            checked = check_rows(engine.loaded.features, [rows[i] for i in mirrored], where="shadow")
            predicted = await engine.batcher.submit(checked)
        except Exception as exc:
            self.metrics.errors.labels(live.model, "shadow").inc()
            log.info("%s: shadow v%d could not predict: %s", live.model, version, exc)
            return
        labels, probabilities = predicted.labels, predicted.probabilities
        classes = engine.loaded.classes
        for k, index in enumerate(mirrored):
            agreed = labels[k] == answers[index]["prediction"]
            self.metrics.shadow.labels(live.model, str(version), str(agreed).lower()).inc()
            answer: dict[str, Any] = {
                "request_id": answers[index]["request_id"],
                "version": version,
                "role": "shadow",
                "prediction": labels[k],
            }
            if probabilities is not None and classes is not None:
                answer["probabilities"] = dict(zip(engine.class_names, probabilities[k], strict=False))
            self.predictions.add(live.model, Served(live, rows[index], answer, 0.0, at))
