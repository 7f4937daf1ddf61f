"""Validating a spec given as plain data: every problem at once, each named by its YAML path (and
line, when the text is at hand), beyond what the model's own types check (metrics of the right
task, constructor arguments, rollout steps, features named twice)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, get_args

from pydantic import ValidationError

from shared.contract.spec import (
    DATE_OPS,
    ESTIMATORS,
    MAX_FITS,
    METRICS,
    NARY_OPS,
    DerivedOp,
    ModelSpec,
    estimator_params,
)


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
            message = f"{error['input']!r} is not on the estimator allowlist ({short})"
        elif error["type"] == "literal_error" and loc[:1] == ("derived",) and loc[-1:] == ("op",):
            message = f"unknown operation {error['input']!r}; known: {', '.join(get_args(DerivedOp))}"
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
    problems += _derived_issues(spec)
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
    if spec.feast is not None:
        if not spec.feast_refs():
            problems.append((("feast",), "no feature names a Feast feature (feature_view:feature)"))
        for i, feature in enumerate(spec.features):
            if ":" in feature.name and not all(feature.name.split(":", 1)):
                problems.append((("features", i, "name"), "a Feast feature is named feature_view:feature"))
        for column in (spec.feast.entity, spec.feast.event_timestamp):
            if ":" in column or column == spec.target:
                problems.append((("feast",), f"{column!r} must be a plain column of the dataset"))
    for tested in spec.monitoring.drift.tests:
        if tested not in names and tested != "__prediction__":
            problems.append((("monitoring", "drift", "tests", tested), "not a feature"))
    return problems


# Given a Feast reference (feature_view:feature) and its declared type: None if the feature store
# has it, else what is wrong. Supplied where a Feast registry is at hand (the contract reads none).
FeatureCheck = Callable[[str, str], str | None]


def parse_spec(data: Any, *, line_of: LineOf | None = None, feature_check: FeatureCheck | None = None) -> ModelSpec:
    """Validate a spec given as plain data; raises SpecError naming every problem (with its line,
    when `line_of` finds the line of a path in the text the data came from). With `feature_check`,
    each Feast reference is checked against the feature store."""
    line_of = line_of or _no_line
    if not isinstance(data, dict):
        raise SpecError([SpecIssue("(root)", f"a spec is a mapping, got {type(data).__name__}")])
    try:
        spec = ModelSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_pydantic_issues(exc, line_of)) from None
    problems = _cross_issues(spec)
    if feature_check is not None and not problems:
        for i, feature in enumerate(spec.features):
            if feature.name in spec.feast_refs():
                wrong = feature_check(feature.name, feature.type)
                if wrong:
                    problems.append((("features", i, "name"), wrong))
    if problems:
        raise SpecError([SpecIssue(yaml_path(loc), message, line_of(loc)) for loc, message in problems])
    return spec


def _refers_back(spec: ModelSpec, start: int, target: str) -> list[str] | None:
    """The chain from derived feature `start` back to `target`, if its inputs lead there."""
    by_name = {d.name: d for d in spec.derived}
    seen: set[str] = set()

    def walk(name: str, chain: list[str]) -> list[str] | None:
        if name == target:
            return chain
        if name in seen or name not in by_name:
            return None
        seen.add(name)
        for inner in by_name[name].of:
            found = walk(inner, [*chain, inner])
            if found is not None:
                return found
        return None

    return walk(spec.derived[start].name, [spec.derived[start].name])


def _derived_issues(spec: ModelSpec) -> list[tuple[tuple[str | int, ...], str]]:
    """Derived features: unique names, known and earlier inputs of the right type, no cycle."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    kinds = {f.name: f.type for f in spec.features}
    order = {d.name: i for i, d in enumerate(spec.derived)}
    for i, item in enumerate(spec.derived):
        at: tuple[str | int, ...] = ("derived", i)
        if item.name in kinds or item.name == spec.target or order[item.name] != i:
            problems.append(((*at, "name"), f"{item.name!r} is already a feature, the target or a derived feature"))
        arity = len(item.of)
        if item.op in NARY_OPS and (arity < 2 or (item.op in ("ratio", "difference") and arity != 2)):
            wanted = "two" if item.op in ("ratio", "difference") else "two or more"
            problems.append(((*at, "of"), f"{item.op} takes {wanted} inputs, not {arity}"))
        elif item.op not in NARY_OPS and arity != 1:
            problems.append(((*at, "of"), f"{item.op} takes one input, not {arity}"))
        for j, name in enumerate(item.of):
            where = (*at, "of", j)
            if name == spec.target:
                problems.append((where, "the target cannot feed a feature (it is not known at serving time)"))
                continue
            if name == item.name:
                problems.append((where, f"{item.name!r} refers to itself"))
                continue
            if name not in kinds and name in order and order[name] > i:
                chain = _refers_back(spec, order[name], item.name)
                cycle = f"; a cycle: {' → '.join([item.name, *chain])}" if chain else ""
                problems.append(
                    (where, f"{name!r} is derived later (derived features use raw ones and those before){cycle}")
                )
                continue
            kind = kinds.get(name, "numeric" if name in order else None)  # a raw feature wins a clash
            if kind is None:
                problems.append((where, f"unknown feature {name!r}"))
            elif item.op in DATE_OPS and kind != "datetime":
                problems.append((where, f"{item.op} needs a datetime feature; {name!r} is {kind}"))
            elif item.op not in DATE_OPS and item.op != "is_missing" and kind != "numeric":
                problems.append((where, f"{item.op} needs numeric inputs; {name!r} is {kind}"))
        if item.op == "days_since" and item.against != "now" and kinds.get(item.against) != "datetime":
            problems.append(((*at, "against"), f"{item.against!r} is not a datetime feature (or 'now')"))
        if item.op == "clip" and item.min is None and item.max is None:
            problems.append((at, "clip needs min, max or both"))
        if item.op == "clip" and item.min is not None and item.max is not None and item.min > item.max:
            problems.append(((*at, "min"), f"min ({item.min:g}) is greater than max ({item.max:g})"))
        edges = item.edges or []
        if item.op == "bucketize" and (not edges or any(b <= a for a, b in itertools.pairwise(edges))):
            problems.append(((*at, "edges"), "bucketize needs one or more strictly increasing edges"))
    return problems
