"""Reading a model spec from its YAML text: every error with its YAML path and line, and no
YAML that could exhaust the reader (alias bombs, deep nesting, huge documents)."""

from __future__ import annotations

from pathlib import Path

import yaml

from shared.contract.spec import ModelSpec
from shared.contract.specparse import FeatureCheck, SpecError, SpecIssue, parse_spec

MAX_SPEC_BYTES = 1_000_000
MAX_SPEC_NODES = 100_000  # values in the YAML once its aliases are expanded


def yaml_line(root: yaml.Node | None, loc: tuple[str | int, ...]) -> int | None:
    """The line of the YAML node at `loc`, or of the deepest node on the way there."""
    node, line = root, None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == str(part)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
        if node is None:
            break
        line = node.start_mark.line + 1
    return line


def expanded_size(root: yaml.Node | None) -> int:
    """How many values a YAML document holds once its aliases are expanded (an alias is a shared
    node: nine aliases of nine aliases of … make billions of values from a few lines)."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        if id(node) not in sizes:
            sizes[id(node)] = 1  # a node that contains itself counts once
            if isinstance(node, yaml.MappingNode):
                children = [part for pair in node.value for part in pair]
            elif isinstance(node, yaml.SequenceNode):
                children = list(node.value)
            else:
                children = []
            sizes[id(node)] = min(1 + sum(size(child) for child in children), 10 * MAX_SPEC_NODES)
        return sizes[id(node)]

    return size(root) if root is not None else 0


def load_spec(text: str, *, feature_check: FeatureCheck | None = None) -> ModelSpec:
    """Parse and validate a spec from YAML (or JSON) text; raises SpecError. With `feature_check`,
    the Feast features it names are checked against the feature store too."""
    if len(text.encode()) > MAX_SPEC_BYTES:
        raise SpecError([SpecIssue("(root)", f"the spec is over {MAX_SPEC_BYTES} bytes")])
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        if expanded_size(root) > MAX_SPEC_NODES:
            raise SpecError(
                [SpecIssue("(root)", f"the YAML expands to over {MAX_SPEC_NODES} values (aliases of aliases?)")]
            )
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise SpecError(
            [SpecIssue("(root)", f"not YAML: {getattr(exc, 'problem', exc)}", mark.line + 1 if mark else None)]
        ) from None
    except RecursionError:
        raise SpecError([SpecIssue("(root)", "the YAML nests too deeply")]) from None
    return parse_spec(data, line_of=lambda loc: yaml_line(root, loc), feature_check=feature_check)


def load_spec_checked(text: str, feast_repo: Path) -> ModelSpec:
    """load_spec, and a spec that names Feast features checked against the Feast registry of the
    repo at `feast_repo` (unknown views or features are SpecErrors with their YAML path, and so is
    a platform with no Feast repo); raises shared.runtime.feast.FeatureStoreError when that
    registry cannot be read."""
    spec = load_spec(text)
    if spec.feast is None:
        return spec
    from shared.runtime import feast

    try:
        check = feast.feature_check(feast_repo)
    except feast.FeatureStoreMissing as exc:  # a spec this deployment cannot take: the spec's fault to name
        raise SpecError([SpecIssue("feast", f"this platform has no Feast to look features up in: {exc}")]) from None
    return load_spec(text, feature_check=check)
