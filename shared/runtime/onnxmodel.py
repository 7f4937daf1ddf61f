"""An ONNX graph behind scikit-learn's face: `predict`, `predict_proba` and `classes_` on frames of
prepared features, and a row path for serving.

Two input layouts are read: one input per feature, named as the feature, shaped `[N]` or `[N, 1]`
(the trainer's export, and skl2onnx's from a DataFrame); or one numeric input of shape `[N, F]` in
feature order (skl2onnx's from a matrix). A classifier has a label output and a probability
output, either a `[N, C]` tensor or ZipMap's list of maps; its class labels are read from the
graph's classifier or ZipMap node.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from shared.runtime.features import MISSING

Layout = Literal["columns", "matrix"]
CLASSIFIER_OPS = ("ZipMap", "TreeEnsembleClassifier", "LinearClassifier", "SVMClassifier")
NUMPY_OF = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.object_,
}


class OnnxModelError(ValueError):
    """A graph that cannot serve the named features (a missing input, an unreadable file)."""


@dataclass(frozen=True)
class Port:
    """One input of the graph: its name, element type and shape."""

    name: str
    type: str
    shape: tuple[int | str | None, ...]

    @property
    def numeric(self) -> bool:
        """Whether it takes numbers (not strings)."""
        return self.type != "tensor(string)"


def session_of(path: Path) -> Any:
    """An ONNX Runtime session on one thread (serving runs many side by side)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise OnnxModelError(f"the ONNX file does not load: {type(exc).__name__}: {str(exc)[:300]}") from None


def inputs_of(session: Any) -> list[Port]:
    """The graph's inputs."""
    return [Port(i.name, i.type, tuple(i.shape)) for i in session.get_inputs()]


def class_labels(path: Path) -> list[Any] | None:
    """The class labels a classifier graph declares (on its classifier or ZipMap node), if any."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    for node in graph.node:
        if node.op_type not in CLASSIFIER_OPS:
            continue
        for attribute in node.attribute:
            # ONNX-ML spells integer labels classlabels_int64s (ZipMap, TreeEnsembleClassifier) or
            # classlabels_ints (LinearClassifier, SVMClassifier).
            if attribute.name in ("classlabels_int64s", "classlabels_ints") and attribute.ints:
                return [int(v) for v in attribute.ints]
            if attribute.name == "classlabels_strings" and attribute.strings:
                return [v.decode() for v in attribute.strings]
    return None


def onnx_name(feature: str) -> str:
    """How skl2onnx names a feature's input (characters outside [\\w+] become _)."""
    return re.sub(r"[^\w+]", "_", feature)


def layout_of(ports: Sequence[Port], features: Sequence[str], *, all_numeric: bool = True) -> Layout:
    """How the graph takes the features; OnnxModelError naming what does not fit."""
    names = {p.name for p in ports}
    if set(features) <= names and len(ports) == len(features):
        return "columns"
    if len(ports) == 1 and ports[0].numeric and all_numeric:
        width = ports[0].shape[1] if len(ports[0].shape) == 2 else None
        if isinstance(width, int) and width != len(features):
            raise OnnxModelError(
                f"the ONNX input {ports[0].name!r} takes {width} columns, not {len(features)} features"
            )
        return "matrix"
    missing = sorted(set(features) - names)
    extra = sorted(names - set(features))
    raise OnnxModelError(
        "the ONNX inputs do not match the features"
        + (f"; features without an input: {', '.join(missing)}" if missing else "")
        + (f"; inputs that are not features: {', '.join(extra)}" if extra else "")
    )


@dataclass
class OnnxModel:
    """A loaded graph that predicts like a fitted scikit-learn model."""

    session: Any
    features: tuple[str, ...]
    numeric: tuple[bool, ...]
    task: Literal["classification", "regression"]
    classes: list[Any] | None = None
    layout: Layout = field(init=False)

    def __post_init__(self) -> None:
        self.ports = inputs_of(self.session)
        names = {p.name for p in self.ports}
        # Each feature's input: its own name, or skl2onnx's spelling of it (feature_view:feature
        # becomes feature_view_feature).
        self.inputs = tuple(f if f in names or onnx_name(f) not in names else onnx_name(f) for f in self.features)
        self.layout = layout_of(self.ports, self.inputs, all_numeric=all(self.numeric))
        self._by_name = {p.name: p for p in self.ports}
        self._outputs = [o.name for o in self.session.get_outputs()]
        self.classes_ = np.asarray(self.classes) if self.classes is not None else None

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        features: Sequence[str],
        numeric: Sequence[bool],
        task: Literal["classification", "regression"],
        classes: list[Any] | None = None,
    ) -> OnnxModel:
        """Load the graph at `path` for these features (classes read from the graph when not given)."""
        if task == "classification" and classes is None:
            classes = class_labels(path)
        return cls(session_of(path), tuple(features), tuple(numeric), task, classes)

    # ------------------------------------------------------------ feeding

    def _column(self, name: str, values: Sequence[Any]) -> np.ndarray[Any, Any]:
        port = self._by_name[name]
        dtype = NUMPY_OF.get(port.type, np.float32)
        array: np.ndarray[Any, Any] = np.asarray(values, dtype=dtype)
        return array.reshape(-1, 1) if len(port.shape) != 1 else array

    def feed_rows(self, rows: Sequence[Sequence[Any]]) -> dict[str, np.ndarray[Any, Any]]:
        """The graph's inputs from rows of prepared values in feature order."""
        if self.layout == "matrix":
            port = self.ports[0]
            return {port.name: np.array(rows, dtype=NUMPY_OF.get(port.type, np.float32))}
        inputs: dict[str, np.ndarray[Any, Any]] = {}
        numeric = [j for j, flag in enumerate(self.numeric) if flag]
        if numeric and all(self._by_name[self.inputs[j]].type == "tensor(float)" for j in numeric):
            # One float32 block, column-major: each feature's [n, 1] input is a contiguous view of it.
            picked = rows if len(numeric) == len(self.features) else [[row[j] for j in numeric] for row in rows]
            block = np.asfortranarray(np.array(picked, dtype=np.float32))
            for position, j in enumerate(numeric):
                column = block[:, position : position + 1]
                inputs[self.inputs[j]] = column.ravel() if len(self._by_name[self.inputs[j]].shape) == 1 else column
            rest = [j for j in range(len(self.features)) if j not in set(numeric)]
        else:
            rest = list(range(len(self.features)))
        for j in rest:
            inputs[self.inputs[j]] = self._column(self.inputs[j], [row[j] for row in rows])
        return inputs

    def feed_frame(self, frame: pd.DataFrame) -> dict[str, np.ndarray[Any, Any]]:
        """The graph's inputs from a frame of prepared features."""
        if self.layout == "matrix":
            port = self.ports[0]
            return {port.name: frame[list(self.features)].to_numpy(dtype=NUMPY_OF.get(port.type, np.float32))}
        return {
            port: self._column(port, frame[name].to_numpy())
            for name, port in zip(self.features, self.inputs, strict=True)
        }

    # ------------------------------------------------------------ reading the outputs

    def _decode(self, outputs: list[Any]) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any] | None]:
        labels = np.asarray(outputs[0]).ravel()
        if self.task == "regression":
            return labels.astype(np.float64), None
        if len(outputs) < 2:
            return labels, None
        scores = outputs[1]
        if isinstance(scores, list):  # ZipMap: one {class: probability} per row
            keys = list(self.classes) if self.classes is not None else list(scores[0]) if scores else []
            probabilities = np.array([[row[k] for k in keys] for row in scores], dtype=np.float64)
        else:
            probabilities = np.asarray(scores, dtype=np.float64)
        return labels, probabilities

    def run_rows(self, rows: Sequence[Sequence[Any]]) -> tuple[list[Any], list[list[float]] | None]:
        """Predictions and class probabilities for rows of prepared values (serving's path)."""
        labels, probabilities = self._decode(self.session.run(self._outputs, self.feed_rows(rows)))
        return labels.tolist(), probabilities.tolist() if probabilities is not None else None

    def run_frame(self, x: pd.DataFrame) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any] | None]:
        """Labels (or values) and class probabilities for a frame of prepared features, in one run."""
        return self._decode(self.session.run(self._outputs, self.feed_frame(x)))

    def predict(self, x: pd.DataFrame) -> np.ndarray[Any, Any]:
        """Labels (classifier) or values (regressor) for a frame of prepared features."""
        return self._decode(self.session.run(self._outputs, self.feed_frame(x)))[0]

    @property
    def has_probabilities(self) -> bool:
        """Whether the graph gives class probabilities (a classifier's second output)."""
        return self.task == "classification" and len(self._outputs) >= 2

    def predict_proba(self, x: pd.DataFrame) -> np.ndarray[Any, Any]:
        """Class probabilities, in `classes_` order."""
        probabilities = self._decode(self.session.run(self._outputs, self.feed_frame(x)))[1]
        if probabilities is None:
            raise AttributeError("this graph has no probability output")
        return probabilities

    def blank_row(self) -> list[Any]:
        """A row of missing values, to warm the graph up."""
        return [math.nan if flag else MISSING for flag in self.numeric]
