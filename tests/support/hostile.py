"""Hostile input against a running platform: bad events, data, artifacts, specs and HTTP requests.

Each case must get a readable rejection (a dead letter with its reason, TrainingFailed naming the
problem, an evaluation rejected for its checksum, a 4xx naming what was wrong), and every process
must stay up and keep working. Used by tests/e2e/test_hostile.py and bench/reliability.py.

    corpus = Corpus(settings, tokens, file_root, say)
    await corpus.prepare()          # a model trained, approved and served, to aim requests at
    outcomes = await corpus.run()   # one Outcome per case
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
from aiokafka import AIOKafkaProducer

from shared.contract import topics
from shared.contract.envelope import decode
from shared.contract.events import DataArrived, ModelEvaluated, ModelRegistered, ModelTrained, TrainingFailed
from shared.ops.demo import FEATURES, Timings, demo_spec
from shared.ops.example_data import churn_frame
from shared.ops.platform import Platform
from shared.ops.tools import read_all, read_dead_letters
from shared.runtime.artifacts import ArtifactStore
from shared.runtime.broker import aiokafka_options, ensure_topics
from shared.runtime.bus import publish_events
from shared.runtime.settings import Settings
from tests.support import logins, stalls, trust

Say = Callable[[str], None]
ROOT = Path(__file__).resolve().parents[2]
GOOD_SHA = "a" * 64


def infinite(before: bytes, row: dict[str, Any], feature: str, after: bytes, literal: bytes = b"Infinity") -> bytes:
    """A body with one feature's value a non-finite JSON number (`Infinity`, `1e999`)."""
    text = json.dumps({**row, feature: 12345.678})
    return before + text.encode().replace(b"12345.678", literal) + after


@dataclass(frozen=True)
class Outcome:
    """What one hostile case got."""

    case: str
    family: str
    expected: str
    observed: str
    passed: bool


@dataclass(frozen=True)
class RawEvent:
    """A message as a careless or hostile producer might send it."""

    name: str
    topic: str
    value: bytes | None
    headers: dict[str, bytes]
    consumers: tuple[str, ...]  # the groups that must dead-letter it
    reason: str  # a phrase the dead letter's reason must hold


def headers(event_type: str, **override: bytes | None) -> dict[str, bytes]:
    """CloudEvents headers as a producer writes them, with some replaced (None: left out)."""
    base: dict[str, bytes | None] = {
        "ce_id": uuid.uuid4().hex.encode(),
        "ce_source": b"hostile",
        "ce_type": f"io.modelbus.{event_type}".encode(),
        "ce_specversion": b"1.0",
        "ce_time": datetime.now(UTC).isoformat().encode(),
        "content-type": b"application/json",
    }
    base.update(override)
    return {k: v for k, v in base.items() if v is not None}


def body(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


@dataclass
class Corpus:
    """The hostile cases, aimed at one platform (its topic prefix, ports and tokens)."""

    settings: Settings
    tokens: dict[str, str]  # role -> token
    file_root: Path  # a root in MODELBUS_FILE_ROOTS of the platform
    say: Say = print
    model: str = field(default_factory=lambda: f"hostile-{uuid.uuid4().hex[:6]}")
    outcomes: list[Outcome] = field(default_factory=list)

    # ------------------------------------------------------------ set-up

    @property
    def registry(self) -> str:
        return f"http://127.0.0.1:{self.settings.registry_port}"

    @property
    def serving(self) -> str:
        return f"http://127.0.0.1:{self.settings.serving_port}"

    @property
    def alerter(self) -> str:
        return f"http://127.0.0.1:{self.settings.alerter_port}"

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def group(self, service: str) -> str:
        return f"{self.settings.topic_prefix}.{service}"

    async def prepare(self, timeout: float = 600) -> None:
        """Apply a spec and train, approve and serve its first version."""
        demo = demo_spec(self.model, Timings(bake_seconds=1.0))
        # Every dataset version is trained on (the bad ones must fail, the good ones succeed).
        spec = demo.model_copy(
            update={"monitoring": demo.monitoring.model_copy(update={"retrain_on": ["data", "drift", "performance"]})}
        )
        async with httpx.AsyncClient(timeout=30) as http:
            answer = await http.post(
                f"{self.registry}/v1/specs",
                json={"spec_yaml": spec.model_dump_json(), "reason": "hostile corpus"},
                headers=self.auth("admin"),
            )
            answer.raise_for_status()
            await self.publish_data("v1", self.upload("v1.csv", churn_frame(5000, seed=7).to_csv(index=False)))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{self.serving}/v1/models/{self.model}")).status_code == 200:
                        self.say(f"[hostile] {self.model} v1 serves")
                        return
                await asyncio.sleep(1)
        raise TimeoutError(f"{self.model} v1 was not served within {timeout:.0f} s")

    def upload(self, name: str, content: str | bytes) -> tuple[str, str]:
        """Put a dataset file on the S3 server: (uri, sha256)."""
        data = content.encode() if isinstance(content, str) else content
        stored = ArtifactStore(self.settings).put_bytes(f"datasets/{self.model}/{name}", data)
        return stored.uri, stored.sha256

    async def publish_data(self, version: str, where: tuple[str, str | None]) -> None:
        uri, sha = where
        arrived = DataArrived(dataset=self.model, version=version, uri=uri, sha256=sha, format="csv")
        await publish_events(self.settings, arrived, source="hostile")

    # ------------------------------------------------------------ the run

    async def run(self) -> list[Outcome]:
        for family, phase in (
            ("event", self.events),
            ("spec", self.specs),
            ("http", self.requests),
            ("data", self.data),
            ("artifact", self.artifacts),
            ("trust", self.trust),
            ("stall", self.stalls),
            ("session", self.sessions),
        ):
            began = len(self.outcomes)
            await phase()
            done = self.outcomes[began:]
            self.say(f"[hostile] {family}: {sum(o.passed for o in done)}/{len(done)} rejected as expected")
        return self.outcomes

    def record(self, case: str, family: str, expected: str, observed: str, passed: bool) -> None:
        self.outcomes.append(Outcome(case, family, expected, observed, passed))

    async def trust(self) -> None:
        """The attacks of the trust model (tests/support/trust.py): the bus's ACLs, the consumers'
        own checks, model files that would run code."""
        folder = self.file_root.parent / "trust"
        folder.mkdir(exist_ok=True)
        await trust.run(self, folder)

    async def stalls(self) -> None:
        """Requests and connections that would hold an HTTP edge's loop or its connections
        (tests/support/stalls.py), each timed by the target's /healthz meanwhile."""
        await stalls.run(self)

    async def sessions(self) -> None:
        """The console's sessions (tests/support/logins.py): the cookie, cross-site logins, logout,
        guessing tokens."""
        await logins.run(self)

    # ------------------------------------------------------------ events

    def raw_events(self) -> list[RawEvent]:
        data = {"dataset": self.model, "version": "x", "uri": "s3://modelbus-artifacts/x.csv", "format": "csv"}
        arrived = headers("DataArrived")
        both = ("registry", "trainer")
        big = body({**data, "description": "x" * (self.settings.max_message_bytes + 10)})
        return [
            RawEvent("malformed JSON", topics.DATA_ARRIVED, b'{"dataset": ', arrived, both, "body is not JSON"),
            RawEvent("JSON array", topics.DATA_ARRIVED, b"[1, 2]", headers("DataArrived"), both, "JSON object"),
            RawEvent(
                "wrong type",
                topics.DATA_ARRIVED,
                body({**data, "row_count": "many"}),
                headers("DataArrived"),
                both,
                "row_count",
            ),
            RawEvent(
                "missing field",
                topics.DATA_ARRIVED,
                body({k: v for k, v in data.items() if k != "uri"}),
                headers("DataArrived"),
                both,
                "uri",
            ),
            RawEvent(
                "unknown event type",
                topics.DATA_ARRIVED,
                body(data),
                headers("DataExploded"),
                both,
                "unknown event type",
            ),
            RawEvent(
                "event type of another topic",
                topics.DATA_ARRIVED,
                body(data),
                headers("ModelTrained"),
                both,
                "does not belong on this topic",
            ),
            RawEvent(
                "schema_version from the future",
                topics.DATA_ARRIVED,
                body({**data, "schema_version": "9.0"}),
                headers("DataArrived"),
                both,
                "schema_version",
            ),
            RawEvent("non-UTF-8 body", topics.DATA_ARRIVED, b"\xff\xfe{}", headers("DataArrived"), both, "UTF-8"),
            RawEvent("oversized body", topics.DATA_ARRIVED, big, headers("DataArrived"), both, "the limit is"),
            RawEvent(
                "wrong content type",
                topics.DATA_ARRIVED,
                body(data),
                headers("DataArrived", **{"content-type": b"text/csv"}),
                both,
                "content-type",
            ),
            RawEvent(
                "no ce_id header",
                topics.DATA_ARRIVED,
                body(data),
                headers("DataArrived", ce_id=None),
                both,
                "missing CloudEvents header(s): ce_id",
            ),
            RawEvent(
                "CloudEvents 0.3",
                topics.DATA_ARRIVED,
                body(data),
                headers("DataArrived", ce_specversion=b"0.3"),
                both,
                "ce_specversion",
            ),
            RawEvent(
                "non-UTF-8 header",
                topics.DATA_ARRIVED,
                body(data),
                headers("DataArrived", ce_source=b"\xc3\x28"),
                both,
                "not UTF-8",
            ),
            RawEvent("no body", topics.DATA_ARRIVED, None, headers("DataArrived"), both, "no body"),
            RawEvent(
                "bad ce_time",
                topics.DATA_ARRIVED,
                body(data),
                headers("DataArrived", ce_time=b"yesterday"),
                both,
                "ce_time",
            ),
            RawEvent(
                "digest not hex",
                topics.DATA_ARRIVED,
                body({**data, "sha256": "z" * 64}),
                headers("DataArrived"),
                both,
                "sha256",
            ),
            RawEvent(
                "dataset name with a path",
                topics.DATA_ARRIVED,
                body({**data, "dataset": "../../etc"}),
                headers("DataArrived"),
                both,
                "dataset",
            ),
            RawEvent(
                "negative row count",
                topics.DATA_ARRIVED,
                body({**data, "row_count": -5}),
                headers("DataArrived"),
                both,
                "row_count",
            ),
            RawEvent(
                "rollout command for an unknown model",
                topics.ROLLOUT_COMMANDED,
                body({"model": f"{self.model}-none", "command": "promote", "actor": "mallory", "reason": "why not"}),
                headers("RolloutCommanded"),
                ("deployer",),
                f"{self.model}-none",
            ),
            RawEvent(
                "unknown rollout command",
                topics.ROLLOUT_COMMANDED,
                body({"model": self.model, "command": "obliterate", "actor": "mallory", "reason": "x"}),
                headers("RolloutCommanded"),
                ("deployer",),
                "command",
            ),
            RawEvent(
                "labels that are not a list",
                topics.LABELS_ARRIVED,
                body({"model": self.model, "labels": "all true"}),
                headers("LabelsArrived"),
                ("monitor",),
                "labels",
            ),
            RawEvent(
                "prediction columns of unequal length",
                topics.PREDICTIONS_LOGGED,
                body(self.uneven_predictions()),
                headers("PredictionsLogged"),
                ("monitor",),
                "one value per request_id",
            ),
        ]

    def uneven_predictions(self) -> dict[str, Any]:
        now = datetime.now(UTC).isoformat()
        return {
            "model": self.model,
            "batch_id": "uneven",
            "request_id": ["a", "b"],
            "model_version": [1],
            "role": ["stable", "stable"],
            "prediction": [1, 0],
            "latency_ms": [0.1, 0.1],
            "served_at": [now, now],
            "features": {"tenure_months": [1.0, 2.0]},
        }

    async def events(self) -> None:
        cases = self.raw_events()
        producer = AIOKafkaProducer(**aiokafka_options(self.settings), max_request_size=4 * 1024 * 1024)
        await producer.start()
        try:
            for case in cases:
                await producer.send_and_wait(
                    self.settings.topic(case.topic),
                    case.value,
                    key=f"hostile:{case.name}".encode(),
                    headers=list(case.headers.items()),
                )
        finally:
            await producer.stop()
        wanted = {(case.name, self.group(c)) for case in cases for c in case.consumers}
        letters: dict[tuple[str, str], str] = {}
        deadline = time.monotonic() + 120
        while wanted - set(letters) and time.monotonic() < deadline:
            await asyncio.sleep(2)
            for stored in await read_dead_letters(self.settings):
                key = base64.b64decode(stored.letter.original_key_b64 or "").decode(errors="replace")
                if key.startswith("hostile:"):
                    letters[(key.removeprefix("hostile:"), stored.letter.consumer)] = stored.letter.reason
        for case in cases:
            got = {c: letters.get((case.name, self.group(c))) for c in case.consumers}
            passed = all(reason is not None and case.reason in reason for reason in got.values())
            observed = "; ".join(f"{c}: {r}" if r else f"{c}: no dead letter" for c, r in got.items())
            self.record(case.name, "event", f"dead-lettered by {', '.join(case.consumers)}", observed[:300], passed)

    # ------------------------------------------------------------ specs

    async def specs(self) -> None:
        example = (ROOT / "schemas/examples/model-spec.yaml").read_text().replace("model: churn", "model: hostile-spec")
        bomb = ["_b0: &a0 [x, x, x, x, x, x, x, x, x]"]
        bomb += [f"_b{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
        cases = [
            (
                "disallowed estimator",
                example.replace("sklearn.linear_model.LogisticRegression", "os.system"),
                "candidates[0].estimator",
            ),
            (
                "code in a string field",
                example.replace("target: churned", "target: __import__('os').system('id')"),
                "target",
            ),
            (
                "absurd search space",
                example.replace(
                    "search: {method: random, iterations: 8, cv: 3}", "search: {iterations: 100000, cv: 50}"
                ),
                "search",
            ),
            (
                "YAML alias bomb",
                example.replace("    params: {max_iter: 500}", "    params:\n      " + "\n      ".join(bomb)),
                "(root)",
            ),
            ("not YAML", "model: [unclosed\n", "(root)"),
            ("unknown key", example + "\nrm_rf: true\n", "rm_rf"),
            ("negative bake time", example.replace("bake_seconds: 30", "bake_seconds: -1"), "rollout.bake_seconds"),
            ("model name with a path", example.replace("model: hostile-spec", "model: ../../etc"), "model"),
        ]
        async with httpx.AsyncClient(timeout=30) as http:
            for name, text, path in cases:
                answer = await http.post(
                    f"{self.registry}/v1/specs",
                    json={"spec_yaml": text, "reason": "hostile"},
                    headers=self.auth("admin"),
                )
                paths = [e.get("path") for e in answer.json().get("errors", [])] if answer.status_code == 422 else []
                passed = answer.status_code == 422 and any(p == path or str(p).startswith(path) for p in paths)
                self.record(name, "spec", f"422 naming {path}", f"{answer.status_code} {answer.text[:200]}", passed)

    # ------------------------------------------------------------ HTTP

    async def requests(self) -> None:
        predict = f"{self.serving}/v1/models/{self.model}:predict"
        row = churn_frame(1, seed=5)[FEATURES].astype(object).to_dict("records")[0]
        rollout = f"{self.registry}/v1/models/{self.model}/rollout/pause"
        infer = f"{self.serving}/v2/models/{self.model}/infer"
        invocations = f"{self.serving}/v1/models/{self.model}/invocations"
        js = {"content-type": "application/json"}
        nested = b'{"instances": ' + b"[" * 1000 + b"]" * 1000 + b"}"
        columns = [
            {"name": k, "shape": [1], "datatype": "BYTES" if isinstance(v, str) else "FP64", "data": [v]}
            for k, v in sorted(row.items(), key=lambda item: item[0] != "tenure_months")
            if k != "senior"  # in the example data, not among the demo model's features
        ]
        Call = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]
        cases: list[tuple[str, Call, set[int], str]] = [
            (
                "predict: bad JSON",
                lambda h: h.post(predict, content=b"{instances: [", headers={"content-type": "application/json"}),
                {400},
                "JSON",
            ),
            (
                "predict: wrong feature type",
                lambda h: h.post(predict, json={"instances": [{**row, "tenure_months": "forever"}]}),
                {422},
                "tenure_months",
            ),
            (
                "predict: missing features",
                lambda h: h.post(predict, json={"instances": [{"plan": "basic"}]}),
                {422},
                "tenure_months",
            ),
            (
                "predict: instances not a list",
                lambda h: h.post(predict, json={"instances": "everything"}),
                {422},
                "instances",
            ),
            (
                "predict: huge batch",
                lambda h: h.post(predict, json={"instances": [row] * (self.settings.serving_max_rows + 1)}),
                {413, 422},
                str(self.settings.serving_max_rows),
            ),
            (
                "predict: body over the limit",
                lambda h: h.post(
                    predict,
                    content=b" " * (self.settings.serving_max_body_bytes + 1),
                    headers={"content-type": "application/json"},
                ),
                {413},
                "exceeds",
            ),
            (
                "predict: unknown model",
                lambda h: h.post(f"{self.serving}/v1/models/nobody:predict", json={"instances": [row]}),
                {404},
                "nobody",
            ),
            (
                "predict: Infinity",
                lambda h: h.post(predict, content=infinite(b'{"instance": ', row, "tenure_months", b"}"), headers=js),
                {422},
                "tenure_months: expected a finite number",
            ),
            (
                "predict: 1e999",
                lambda h: h.post(
                    predict, content=infinite(b'{"instance": ', row, "tenure_months", b"}", b"1e999"), headers=js
                ),
                {422},
                "tenure_months: expected a finite number",
            ),
            ("predict: JSON 1,000 deep", lambda h: h.post(predict, content=nested, headers=js), {400}, "deeper"),
            ("v2 infer: JSON 1,000 deep", lambda h: h.post(infer, content=nested, headers=js), {400}, "deeper"),
            (
                "v2 infer: shape disagrees with the data",
                lambda h: h.post(infer, json={"inputs": [{**columns[0], "shape": [5]}, *columns[1:]]}),
                {400},
                "shape [5] holds 5 values",
            ),
            (
                "v2 infer: unknown datatype",
                lambda h: h.post(infer, json={"inputs": [{**columns[0], "datatype": "FP8"}]}),
                {400},
                "unknown datatype",
            ),
            (
                "v2 infer: Infinity",
                lambda h: h.post(
                    infer,
                    content=json.dumps({"inputs": [{**columns[0], "data": [math.inf]}, *columns[1:]]}),
                    headers=js,
                ),
                {400},
                "expected a finite number",
            ),
            (
                "v2 infer: tensor over the limit",
                lambda h: h.post(infer, content=b" " * (self.settings.serving_max_body_bytes + 1), headers=js),
                {413},
                "exceeds",
            ),
            (
                "mlflow invocations: Infinity",
                lambda h: h.post(
                    invocations, content=infinite(b'{"dataframe_records": [', row, "monthly_charges", b"]}"), headers=js
                ),
                {400},
                "monthly_charges: expected a finite number",
            ),
            (
                "mlflow invocations: JSON 1,000 deep",
                lambda h: h.post(invocations, content=nested, headers=js),
                {400},
                "deeper",
            ),
            ("registry: no token", lambda h: h.post(rollout, json={"reason": "x"}), {401}, "token"),
            (
                "registry: forged token",
                lambda h: h.post(rollout, json={"reason": "x"}, headers={"Authorization": "Bearer forged-token"}),
                {401},
                "token",
            ),
            (
                "registry: viewer rolls back",
                lambda h: h.post(rollout, json={"reason": "x"}, headers=self.auth("viewer")),
                {403},
                "operator",
            ),
            (
                "registry: operator applies a spec",
                lambda h: h.post(
                    f"{self.registry}/v1/specs", json={"spec_yaml": "model: x"}, headers=self.auth("operator")
                ),
                {403},
                "admin",
            ),
            (
                "registry: bad JSON",
                lambda h: h.post(
                    rollout, content=b"{", headers={**self.auth("operator"), "content-type": "application/json"}
                ),
                {422},
                "JSON",
            ),
            (
                "registry: unknown model",
                lambda h: h.post(
                    f"{self.registry}/v1/models/nobody/rollout/pause",
                    json={"reason": "x"},
                    headers=self.auth("operator"),
                ),
                {404},
                "nobody",
            ),
            (
                "registry: body over the limit",
                lambda h: h.post(
                    f"{self.registry}/v1/specs",
                    content=b" " * (self.settings.api_max_body_bytes + 1),
                    headers={**self.auth("admin"), "content-type": "application/json"},
                ),
                {413},
                "over",
            ),
            (
                "registry: version that is not a number",
                lambda h: h.get(
                    f"{self.registry}/v1/models/{self.model}/versions/DROP TABLE", headers=self.auth("viewer")
                ),
                {400, 404, 422},
                "DROP TABLE",
            ),
            (
                "alerter: silence with a bad matcher",
                lambda h: h.post(
                    f"{self.alerter}/v1/silences",
                    json={"matchers": ["model=~("], "comment": "x", "duration_seconds": 60},
                    headers=self.auth("operator"),
                ),
                {422},
                "matcher",
            ),
            ("alerter: no token", lambda h: h.get(f"{self.alerter}/v1/alerts"), {401}, "token"),
        ]
        async with httpx.AsyncClient(timeout=30) as http:
            for name, call, statuses, phrase in cases:
                try:
                    answer = await call(http)
                    observed, passed = f"{answer.status_code} {answer.text[:200]}", answer.status_code in statuses
                    passed = passed and phrase.lower() in answer.text.lower()
                except httpx.HTTPError as exc:
                    observed, passed = f"no answer: {exc!r}", False
                expected = f"{' or '.join(map(str, sorted(statuses)))} naming {phrase!r}"
                self.record(name, "http", expected, observed, passed)

    # ------------------------------------------------------------ data

    async def data(self) -> None:
        frame = churn_frame(600, seed=9)

        def csv(changed: Any) -> tuple[str, str]:
            return self.upload(f"{uuid.uuid4().hex[:8]}.csv", changed.to_csv(index=False))

        nulls = frame.copy()
        nulls.loc[: len(nulls) // 2, "tenure_months"] = None
        single = frame.copy()
        single["churned"] = 0
        typed = frame.copy().astype({"monthly_charges": object})
        typed.loc[:, "monthly_charges"] = "lots"
        ranged = frame.copy()
        ranged.loc[:10, "tenure_months"] = 9999
        domain = frame.copy()
        domain.loc[:10, "plan"] = "platinum"
        outside = Path(self.file_root).parent / f"{self.model}-outside.csv"
        outside.write_text(frame.to_csv(index=False))
        link = self.file_root / f"{self.model}-link.csv"
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to(outside)
        good_uri, good_sha = csv(frame)
        cases: list[tuple[str, tuple[str, str | None], str]] = [
            ("CSV without a required column", csv(frame.drop(columns=["plan"])), "plan"),
            ("NaNs beyond the limit", csv(nulls), "tenure_months"),
            ("a single class", csv(single), "class"),
            ("text in a numeric column", csv(typed), "monthly_charges"),
            ("zero rows", csv(frame.head(0)), "rows"),
            ("values out of range", csv(ranged), "tenure_months"),
            ("category outside its domain", csv(domain), "plan"),
            ("not a CSV at all", self.upload("garbage.csv", bytes(range(256)) * 64), "csv"),
            ("file:// path traversal", (f"file://{self.file_root}/../../../etc/passwd", None), "out of their root"),
            ("file:// symlink escape", (f"file://{link}", None), "outside"),
            ("S3 bucket not allowed", ("s3://someone-elses-bucket/data.csv", None), "bucket"),
            ("digest mismatch", (good_uri, "0" * 64), "sha-256 mismatch"),
        ]
        del good_sha
        versions = {f"bad-{index}": case for index, case in enumerate(cases)}
        for version, (_, where, _) in versions.items():
            await self.publish_data(version, where)
        failures: dict[str, TrainingFailed] = {}
        deadline = time.monotonic() + 300
        while set(versions) - set(failures) and time.monotonic() < deadline:
            await asyncio.sleep(2)
            for record in await read_all(self.settings, topics.TRAINING_FAILED):
                event = decode(record.value, list(record.headers or ())).event
                if isinstance(event, TrainingFailed) and event.dataset == self.model:
                    failures[event.dataset_version] = event
        for version, (name, _, phrase) in versions.items():
            failed = failures.get(version)
            if failed is None:
                self.record(name, "data", f"TrainingFailed naming {phrase!r}", "no TrainingFailed", False)
                continue
            said = failed.reason + " " + " ".join(f"{v.column} {v.rule} {v.observed}" for v in failed.violations)
            passed = phrase.lower() in said.lower()
            self.record(name, "data", f"TrainingFailed naming {phrase!r}", f"{failed.stage}: {said[:250]}", passed)

    # ------------------------------------------------------------ artifacts

    async def artifacts(self) -> None:
        """A registered model whose bytes were changed after training: rejected unloaded."""
        trained = [
            e
            for r in await read_all(self.settings, topics.MODEL_TRAINED)
            if isinstance(e := decode(r.value, list(r.headers or ())).event, ModelTrained) and e.model == self.model
        ]
        original = trained[0]
        store = ArtifactStore(self.settings)
        forged = []
        for artifact in original.artifacts:
            stored = store.put_bytes(
                f"artifacts/hostile/{uuid.uuid4().hex}/{artifact.uri.rsplit('/', 1)[-1]}", b"not the model"
            )
            forged.append(artifact.model_copy(update={"uri": stored.uri}))  # the digest stays the original's
        tampered = original.model_copy(update={"run_id": f"tampered-{uuid.uuid4().hex[:8]}", "artifacts": forged})
        await publish_events(self.settings, tampered, source="hostile")
        verdict: ModelEvaluated | None = None
        deadline = time.monotonic() + 120
        while verdict is None and time.monotonic() < deadline:
            await asyncio.sleep(2)
            versions = [
                e.version
                for r in await read_all(self.settings, topics.MODEL_REGISTERED)
                if isinstance(e := decode(r.value, list(r.headers or ())).event, ModelRegistered)
                and e.run_id == tampered.run_id
            ]
            for record in await read_all(self.settings, topics.MODEL_EVALUATED):
                event = decode(record.value, list(record.headers or ())).event
                if isinstance(event, ModelEvaluated) and event.model == self.model and event.version in versions:
                    verdict = event
        expected = "ModelEvaluated rejected for its checksum"
        if verdict is None:
            self.record("tampered artifact", "artifact", expected, "no ModelEvaluated", False)
            return
        failed = [f"{g.name}: {g.detail}" for g in verdict.gates if not g.passed]
        said = f"{verdict.decision}; " + "; ".join(failed)
        passed = verdict.decision == "rejected" and any("checksum" in f for f in failed)
        self.record("tampered artifact", "artifact", expected, said[:250], passed)


def secret_files(folder: Path, settings: Settings, tokens: dict[str, str]) -> dict[str, str]:
    """The platform's secrets as mounted files, the way Kubernetes gives them: the API tokens in
    MODELBUS_SECRETS_DIR, the database password through MODELBUS_DATABASE_PASSWORD_FILE (the
    URL without it); the variables that point at them."""
    mounted = folder / "secrets"
    mounted.mkdir(exist_ok=True)
    (mounted / "MODELBUS_API_TOKENS").write_text(
        ",".join(f"{token}={role}:{role}-user" for role, token in tokens.items()) + "\n"
    )
    url = urlparse(settings.database_url)
    (folder / "database-password").write_text(f"{url.password or ''}\n")
    bare = url._replace(netloc=f"{url.username}@{url.hostname}:{url.port or 5432}").geturl()
    return {
        "MODELBUS_SECRETS_DIR": str(mounted),
        "MODELBUS_DATABASE_URL": bare,
        "MODELBUS_DATABASE_PASSWORD_FILE": str(folder / "database-password"),
    }


async def hostile_platform(base: Settings, folder: Path, say: Say = print) -> tuple[Platform, Corpus]:
    """A platform of its own (topics, logs, tokens, a file:// root) and the corpus aimed at it;
    the caller stops the platform and drops its topics."""
    root = folder / "data"
    root.mkdir(parents=True, exist_ok=True)
    tokens = {role: f"{role}-{secrets.token_hex(16)}" for role in ("viewer", "operator", "admin")}
    settings = base.model_copy(
        update={
            "topic_prefix": f"hostile-{uuid.uuid4().hex[:8]}", "stack_dir": folder, "file_roots": [root],
            "http_header_timeout_seconds": 3.0, "http_body_timeout_seconds": 4.0,  # slow clients cut sooner
        }
    )  # fmt: skip
    await ensure_topics(settings)
    platform = Platform(settings, say, console=True, extra_env={**secret_files(folder, settings, tokens), **{
        "MODELBUS_TOPIC_PREFIX": settings.topic_prefix,
        "MODELBUS_FILE_ROOTS": f'["{root}"]',
        "MODELBUS_OTLP_ENDPOINT": "",
        "MODELBUS_HTTP_HEADER_TIMEOUT_SECONDS": str(settings.http_header_timeout_seconds),
        "MODELBUS_HTTP_BODY_TIMEOUT_SECONDS": str(settings.http_body_timeout_seconds),
    }})  # fmt: skip
    platform.start()
    try:
        await platform.wait_ready()
    except Exception:
        platform.stop()
        raise
    return platform, Corpus(settings, tokens, root, say=say)


def table(outcomes: list[Outcome]) -> str:
    """The outcomes as a Markdown table."""
    lines = ["| case | family | expected | observed | ok |", "|---|---|---|---|---|"]
    for o in outcomes:
        observed = o.observed.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {o.case} | {o.family} | {o.expected} | {observed[:160]} | {'yes' if o.passed else 'NO'} |")
    return "\n".join(lines)
