"""Validating a spec given as plain data: every problem at once, each named by its YAML path (and
line, when the text is at hand), beyond what the model's own types check (metrics of the right
task, constructor arguments, rollout steps, features named twice)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from shared.contract.spec import ESTIMATORS, MAX_FITS, METRICS, ModelSpec, estimator_params


@dataclass(frozen=True)
class SpecIssue:
    """One thing wrong with a spec."""

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.path} (line {self.line})" if self.line else self.path
        return f"{where}: {self.message}"


class SpecError(ValueError):
    """A spec was refused; `issues` names every error by its YAML path."""

    def __init__(self, issues: list[SpecIssue]) -> None:
        self.issues = issues
        super().__init__("invalid spec:\n" + "\n".join(f"  - {issue}" for issue in issues))


def yaml_path(loc: tuple[str | int, ...]) -> str:
    """('candidates', 0, 'params', 'C') -> candidates[0].params.C"""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(root)"


Loc = tuple[str | int, ...]
LineOf = Callable[[Loc], int | None]


def _no_line(loc: Loc) -> int | None:
    return None


_UNION_TAGS = {"Choice", "Range", "function-after[_bounded(), Range]"}


def _clean_loc(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    # pydantic adds union member names to the location (search.C.Range); a YAML path has none.
    return tuple(p for p in loc if not (isinstance(p, str) and p in _UNION_TAGS))


def _pydantic_issues(exc: ValidationError, line_of: LineOf) -> list[SpecIssue]:
    seen: dict[str, SpecIssue] = {}
    for error in exc.errors(include_url=False):
        loc = _clean_loc(tuple(error["loc"]))
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key (not part of the spec format)"
        elif error["type"] == "literal_error" and loc[-1:] == ("estimator",):
            short = ", ".join(path.rsplit(".", 1)[1] for path in ESTIMATORS)
            message = f"{error['input']!r} is not on the estimator allowlist (sklearn's {short})"
        path = yaml_path(loc)
        # A union reports one error per member; the first is enough to name the problem.
        seen.setdefault(path, SpecIssue(path, message, line_of(loc)))
    return list(seen.values())


def _cross_issues(spec: ModelSpec) -> list[tuple[tuple[str | int, ...], str]]:
    problems: list[tuple[tuple[str | int, ...], str]] = []
    names = [f.name for f in spec.features]
    for i, feature in enumerate(spec.features):
        if names.index(feature.name) != i:
            problems.append((("features", i, "name"), f"feature {feature.name!r} is listed twice"))
        if feature.name == spec.target:
            problems.append((("features", i, "name"), "the target cannot also be a feature"))
    for column in spec.contract.columns:
        if column not in names and column != spec.target:
            problems.append((("contract", "columns", column), "not a feature nor the target"))
    for metric_loc, metric in [
        (("selection_metric",), spec.selection_metric),
        *[(("gates", i, "metric"), g.metric) for i, g in enumerate(spec.gates)],
        *(
            [(("monitoring", "performance", "metric"), spec.monitoring.performance.metric)]
            if spec.monitoring.performance.metric
            else []
        ),
    ]:
        info = METRICS.get(metric)
        if info is None:
            problems.append((metric_loc, f"unknown metric {metric!r}; known: {', '.join(sorted(METRICS))}"))
        elif info.task != spec.task:
            problems.append((metric_loc, f"{metric} is a {info.task} metric; this model does {spec.task}"))
    fits = 0
    for i, candidate in enumerate(spec.candidates):
        task = ESTIMATORS[candidate.estimator]
        if task != spec.task:
            problems.append((("candidates", i, "estimator"), f"{candidate.estimator} is a {task} estimator"))
            continue
        known = estimator_params(candidate.estimator)
        for part in ("params", "search"):
            for param in getattr(candidate, part):
                if param not in known:
                    problems.append(((("candidates", i, part, param)), f"not a parameter of {candidate.estimator}"))
        for param in set(candidate.params) & set(candidate.search):
            problems.append((("candidates", i, "search", param), "also fixed in params; keep one"))
        fits += (spec.search.iterations * spec.search.cv) if candidate.search else 1
    if fits > MAX_FITS:
        problems.append((("search",), f"{fits} fits across candidates exceed the bound of {MAX_FITS}"))
    steps = spec.rollout.steps
    for i, step in enumerate(steps):
        if not 0 < step <= 100:
            problems.append((("rollout", "steps", i), f"{step} is not a percentage in (0, 100]"))
        elif i and step <= steps[i - 1]:
            problems.append((("rollout", "steps", i), "steps must increase"))
    if steps[-1] != 100:
        problems.append((("rollout", "steps"), "the last step must be 100"))
    for tested in spec.monitoring.drift.tests:
        if tested not in names and tested != "__prediction__":
            problems.append((("monitoring", "drift", "tests", tested), "not a feature"))
    return problems


def parse_spec(data: Any, *, line_of: LineOf | None = None) -> ModelSpec:
    """Validate a spec given as plain data; raises SpecError naming every problem (with its line,
    when `line_of` finds the line of a path in the text the data came from)."""
    line_of = line_of or _no_line
    if not isinstance(data, dict):
        raise SpecError([SpecIssue("(root)", f"a spec is a mapping, got {type(data).__name__}")])
    try:
        spec = ModelSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_pydantic_issues(exc, line_of)) from None
    problems = _cross_issues(spec)
    if problems:
        raise SpecError([SpecIssue(yaml_path(loc), message, line_of(loc)) for loc, message in problems])
    return spec
