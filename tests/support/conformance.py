"""The standards' own API documents run against modelbus with Schemathesis: the Open Inference
Protocol's REST document on serving, Alertmanager's API v2 on the alerter. The documents come from
the packages that ship them (`../shared/conformance-specs/get`, written once into
.modelbus/specs); a fixed seed and case budget keep a run short and repeatable.

Every generated case (positive and negative) is sent and checked for server errors, documented
status codes, content types, response headers and response schemas, and negative data being
refused. A failure is either a listed deliberate difference (with its reason) or a failure of the
run. With a `reference` server (the real Alertmanager), each case goes to both and only what the
reference passes counts against modelbus.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as fixed_seed
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup

ROOT = Path(__file__).resolve().parents[2]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


def specs() -> Path:
    """The folder holding oip_rest.json and alertmanager_v2.json, written by the conformance
    script the first time (`MODELBUS_CONFORMANCE_GET`, else ../shared/conformance-specs/get)."""
    folder = ROOT / ".modelbus" / "specs"
    if (folder / "oip_rest.json").is_file() and (folder / "alertmanager_v2.json").is_file():
        return folder
    script = Path(os.environ.get("MODELBUS_CONFORMANCE_GET", ROOT.parent / "shared" / "conformance-specs" / "get"))
    if not script.is_file():
        raise FileNotFoundError(
            f"the conformance documents are not in {folder} and {script} does not exist: "
            "set MODELBUS_CONFORMANCE_GET to the script that writes them"
        )
    made = subprocess.run(["bash", str(script), str(folder)], capture_output=True, text=True, timeout=600, check=False)
    if made.returncode != 0:
        raise RuntimeError(f"{script} failed: {made.stdout}{made.stderr}")
    return folder


def oip_document() -> dict[str, Any]:
    """MLServer's OIP REST document, its one non-JSON-Schema type read as what it means: tensor
    data declared `"type": "bytes"` (not a JSON Schema type, so no infer request would be made)
    is a string of bytes."""
    document: dict[str, Any] = json.loads((specs() / "oip_rest.json").read_text())

    def read(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: ("string" if k == "type" and v == "bytes" else read(v)) for k, v in node.items()}
        return [read(item) for item in node] if isinstance(node, list) else node

    return read(document)  # type: ignore[no-any-return]


def alertmanager_document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads((specs() / "alertmanager_v2.json").read_text())
    return document


@dataclass(frozen=True)
class Difference:
    """A failure modelbus answers on purpose: the operations (a regular expression on the label,
    `POST /v2/models/{model_name}/infer`), the check, and why."""

    operations: str
    check: str
    reason: str
    message: str = ""  # a regular expression the failure's message must match too

    def covers(self, operation: str, check: str, message: str) -> bool:
        return (
            check == self.check
            and re.search(self.operations, operation) is not None
            and re.search(self.message, message) is not None
        )


@dataclass
class Report:
    """What a run did: cases sent, checks made, server errors, and the failures (operation, check,
    message) split into deliberate and unexplained ones."""

    name: str
    cases: int = 0
    checks: int = 0
    server_errors: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    deliberate: Counter[tuple[str, str]] = field(default_factory=Counter)
    unexplained: list[tuple[str, str, str]] = field(default_factory=list)
    passed_by_reference: int = 0

    def summary(self) -> str:
        kinds = ", ".join(f"{status}: {count}" for status, count in sorted(self.statuses.items()))
        lines = [
            f"{self.name}: {self.cases} cases, {self.checks} checks, {self.server_errors} server errors,"
            f" {len(self.unexplained)} failures, {sum(self.deliberate.values())} deliberate differences"
            f" (answers {kinds})"
        ]
        lines += [f"  deliberate: {op} {check} x{n}" for (op, check), n in sorted(self.deliberate.items())]
        if self.passed_by_reference:
            lines.append(f"  {self.passed_by_reference} failures the reference server fails too (not counted)")
        lines += [f"  FAILED {op} {check}: {message[:300]}" for op, check, message in self.unexplained[:20]]
        return "\n".join(lines)


def _failures(case: Any, response: requests.Response, headers: dict[str, str]) -> list[tuple[str, str]]:
    """(check, message) of every check the response fails."""
    try:
        case.validate_response(response, checks=CHECKS, headers=headers)
    except FailureGroup as group:  # a BaseExceptionGroup of the failed checks
        return [(_check_name(f), str(getattr(f, "message", f))) for f in group.exceptions]
    return []


CHECK_OF = {
    "ServerError": "not_a_server_error",
    "ContentTypeServerError": "not_a_server_error",
    "UndefinedStatusCode": "status_code_conformance",
    "UndefinedContentType": "content_type_conformance",
    "MissingContentType": "content_type_conformance",
    "MalformedMediaType": "content_type_conformance",
    "MissingHeaders": "response_headers_conformance",
    "JsonSchemaError": "response_schema_conformance",
    "MalformedJson": "response_schema_conformance",
    "ContentDeserializationError": "response_schema_conformance",
    "AcceptedNegativeData": "negative_data_rejection",
}


def _check_name(failure: Any) -> str:
    """The check a failure comes from, by its kind."""
    return CHECK_OF.get(type(failure).__name__, type(failure).__name__)


def run(
    name: str,
    document: dict[str, Any],
    base_url: str,
    *,
    headers: dict[str, str],
    examples: int,
    seed: int,
    deliberate: list[Difference],
    choose: dict[str, list[str]] | None = None,
    skip: str | None = None,
    reference: str | None = None,
) -> Report:
    """Run every operation of `document` against `base_url`, `examples` positive and `examples`
    negative cases each. `choose`: values a path parameter takes half the time (a served model's
    name), so that cases reach more than 404s; `skip`: operations (regular expression) left out."""
    schema = schemathesis.openapi.from_dict(document)
    report = Report(name)
    http = requests.Session()
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # the documents are valid: no Err
        if skip and re.search(skip, operation.label):
            continue

        def checker(operation: Any) -> Callable[[Any, st.DataObject], None]:
            def check(case: Any, data: st.DataObject) -> None:
                for parameter, values in (choose or {}).items():
                    if case.path_parameters and parameter in case.path_parameters and data.draw(st.booleans()):
                        case.path_parameters[parameter] = data.draw(st.sampled_from(values))
                response = case.call(base_url=base_url, session=http, headers=headers, timeout=30)
                report.cases += 1
                report.checks += len(CHECKS)
                report.statuses[response.status_code] += 1
                report.server_errors += response.status_code >= 500
                failures = _failures(case, response, headers)
                if failures and reference is not None:
                    theirs = case.call(base_url=reference, session=http, timeout=30)
                    failed_there = {name for name, _ in _failures(case, theirs, {})}
                    report.passed_by_reference += sum(name in failed_there for name, _ in failures)
                    failures = [(name, message) for name, message in failures if name not in failed_there]
                for name, message in failures:
                    known = next((d for d in deliberate if d.covers(operation.label, name, message)), None)
                    if known is not None:
                        report.deliberate[(operation.label, name)] += 1
                    else:
                        report.unexplained.append((operation.label, name, message))

            return check

        modes = [GenerationMode.POSITIVE]
        if list(operation.body):  # path parameters are any string: only a body can be wrong
            modes.append(GenerationMode.NEGATIVE)
        strategy = st.one_of(*(operation.as_strategy(generation_mode=mode) for mode in modes))
        cases = settings(
            max_examples=2 * examples,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )(given(case=strategy, data=st.data())(checker(operation)))
        fixed_seed(seed)(cases)()
    return report
