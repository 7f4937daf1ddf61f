"""Opening model files safely: skops with an allowlist of exact types, ONNX through ONNX Runtime,
never pickle.

A skops file is a zip of `.npy` arrays and a `schema.json` naming, node by node, the type (or
function) it rebuilds. Every name is checked against the lists below before skops reads anything:
no prefix is trusted, a function only when it is a pure numeric one, and a node kind (a bound
method, a `functools.partial`, a `__reduce__`) only when the trainer's own files use it.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

# The classes a model file may rebuild: what the trainer builds for every estimator of the spec's
# allowlist (pipeline, preprocessing, the fitted estimators and their inner trees, losses and
# binning; tests/unit/runtime/test_modelfile.py trains each and loads it), the neighbours'
# search trees and distances, the containers and numbers skops stores them with, and modelbus'
# own derived-feature step (plain data: the spec's operations).
ALLOWED_TYPES = frozenset(
    {
        "builtins.bool",
        "builtins.bytearray",
        "builtins.bytes",
        "builtins.dict",
        "builtins.float",
        "builtins.int",
        "builtins.list",
        "builtins.slice",
        "builtins.str",
        "builtins.tuple",
        "collections.OrderedDict",
        "collections.defaultdict",
        "numpy.bool_",
        "numpy.dtype",
        "numpy.float16",
        "numpy.float32",
        "numpy.float64",
        "numpy.int8",
        "numpy.int16",
        "numpy.int32",
        "numpy.int64",
        "numpy.ndarray",
        "numpy.str_",
        "numpy.uint8",
        "numpy.uint16",
        "numpy.uint32",
        "numpy.uint64",
        "numpy.random._generator.Generator",
        "numpy.random.mtrand.RandomState",
        "lightgbm.basic.Booster",
        "lightgbm.sklearn.LGBMClassifier",
        "lightgbm.sklearn.LGBMRegressor",
        "shared.runtime.derive.DeriveFeatures",
        "sklearn._loss._loss.CyHalfBinomialLoss",
        "sklearn._loss._loss.CyHalfMultinomialLoss",
        "sklearn._loss._loss.CyHalfSquaredError",
        "sklearn._loss.link.IdentityLink",
        "sklearn._loss.link.Interval",
        "sklearn._loss.link.LogitLink",
        "sklearn._loss.link.MultinomialLogit",
        "sklearn._loss.loss.HalfBinomialLoss",
        "sklearn._loss.loss.HalfMultinomialLoss",
        "sklearn._loss.loss.HalfSquaredError",
        "sklearn.compose._column_transformer.ColumnTransformer",
        "sklearn.dummy.DummyClassifier",
        "sklearn.dummy.DummyRegressor",
        "sklearn.ensemble._forest.ExtraTreesClassifier",
        "sklearn.ensemble._forest.ExtraTreesRegressor",
        "sklearn.ensemble._forest.RandomForestClassifier",
        "sklearn.ensemble._forest.RandomForestRegressor",
        "sklearn.ensemble._gb.GradientBoostingClassifier",
        "sklearn.ensemble._gb.GradientBoostingRegressor",
        "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
        "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
        "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingRegressor",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.impute._base.SimpleImputer",
        "sklearn.linear_model._base.LinearRegression",
        "sklearn.linear_model._coordinate_descent.ElasticNet",
        "sklearn.linear_model._coordinate_descent.Lasso",
        "sklearn.linear_model._logistic.LogisticRegression",
        "sklearn.linear_model._ridge.Ridge",
        "sklearn.metrics._dist_metrics.ChebyshevDistance64",
        "sklearn.metrics._dist_metrics.EuclideanDistance64",
        "sklearn.metrics._dist_metrics.ManhattanDistance64",
        "sklearn.metrics._dist_metrics.MinkowskiDistance64",
        "sklearn.naive_bayes.GaussianNB",
        "sklearn.neighbors._ball_tree.BallTree",
        "sklearn.neighbors._classification.KNeighborsClassifier",
        "sklearn.neighbors._kd_tree.KDTree",
        "sklearn.neighbors._regression.KNeighborsRegressor",
        "sklearn.pipeline.Pipeline",
        "sklearn.preprocessing._data.StandardScaler",
        "sklearn.preprocessing._encoders.OneHotEncoder",
        "sklearn.preprocessing._function_transformer.FunctionTransformer",
        "sklearn.preprocessing._label.LabelEncoder",
        "sklearn.tree._classes.DecisionTreeClassifier",
        "sklearn.tree._classes.DecisionTreeRegressor",
        "sklearn.tree._classes.ExtraTreeClassifier",
        "sklearn.tree._classes.ExtraTreeRegressor",
        "sklearn.tree._tree.Tree",
        "xgboost.core.Booster",
        "xgboost.sklearn.XGBClassifier",
        "xgboost.sklearn.XGBRegressor",
    }
)
# The functions a file may reference (a FunctionTransformer's func): element-wise numeric
# functions of numpy, which read an array and return a new one.
ALLOWED_FUNCTIONS = frozenset(
    f"numpy.{name}"
    for name in (
        "abs", "absolute", "arcsinh", "cbrt", "exp", "exp2", "expm1", "fabs", "log", "log10", "log1p", "log2",
        "negative", "reciprocal", "sign", "sqrt", "square", "tanh",
    )
)  # fmt: skip
# How skops rebuilds each node. Bound methods, functools.partial, operator functions and
# __reduce__ calls are refused whatever they name: the trainer's files never hold one.
ALLOWED_LOADERS = frozenset(
    {
        "BytearrayNode",
        "BytesNode",
        "DTypeNode",
        "DefaultDictNode",
        "DictNode",
        "FunctionNode",
        "JsonNode",
        "ListNode",
        "LossNode",
        "NdArrayNode",
        "ObjectNode",
        "RandomGeneratorNode",
        "RandomStateNode",
        "SliceNode",
        "TreeNode",
        "TupleNode",
        "TypeNode",
    }
)


def preload() -> None:
    """Import what loading and running an allowed file needs (the modules of the allowed types,
    skops, ONNX Runtime, parquet): a warm sandbox does it once, so that each forked child only
    opens its file."""
    import importlib

    for module in sorted({name.rpartition(".")[0] for name in ALLOWED_TYPES}):
        importlib.import_module(module)
    importlib.import_module("skops.io")
    importlib.import_module("onnxruntime")
    importlib.import_module("pyarrow.parquet")


class UntrustedArtifact(ValueError):
    """A model file that names a type, function or node kind outside the allowlists; nothing of it
    was loaded."""


def named(schema: Any) -> Iterator[tuple[str, str]]:
    """(node kind, dotted name) of every node of a skops schema; UntrustedArtifact for a node
    that does not say both (skops could not rebuild it, and nothing here may guess)."""
    pending = [schema]
    while pending:
        node = pending.pop()
        if isinstance(node, list):
            pending.extend(node)
        elif isinstance(node, dict):
            if "__loader__" in node or "__class__" in node or "__module__" in node:
                loader, module, name = node.get("__loader__"), node.get("__module__"), node.get("__class__")
                if not all(isinstance(part, str) for part in (loader, module, name)):
                    raise UntrustedArtifact("the model file has a node without its kind, module and class")
                yield str(loader), f"{module}.{name}"
            pending.extend(node.values())


def refusals(schema: Any) -> list[str]:
    """What in a skops schema is outside the allowlists, readably (empty: all of it is allowed)."""
    found: set[str] = set()
    for loader, name in named(schema):
        if loader not in ALLOWED_LOADERS:
            found.add(f"{name} (a {loader}, which is never loaded)")
        elif loader == "FunctionNode":
            if name not in ALLOWED_FUNCTIONS:
                found.add(f"the function {name}")
        elif name not in ALLOWED_TYPES:
            found.add(f"the type {name}")
    return sorted(found)


MAX_UNPACKED_BYTES = 2 * 1024**3  # what a skops file's members may unpack to, together
MAX_MEMBERS = 100_000
MAX_SCHEMA_BYTES = 64 * 1024**2


def _check_sizes(archive: zipfile.ZipFile, max_bytes: int) -> None:
    """Refuse a file whose members would unpack to more than `max_bytes` (a zip bomb), before any
    is read: the sizes are the archive's own, and zipfile stops a member at its declared size."""
    members = archive.infolist()
    if len(members) > MAX_MEMBERS:
        raise UntrustedArtifact(f"the model file holds {len(members)} members; the limit is {MAX_MEMBERS}")
    total = sum(info.file_size for info in members)
    if total > max_bytes:
        raise UntrustedArtifact(f"the model file unpacks to {total} bytes; the limit is {max_bytes}")
    schema = next((info for info in members if info.filename == "schema.json"), None)
    if schema is not None and schema.file_size > MAX_SCHEMA_BYTES:
        raise UntrustedArtifact(
            f"the model file's schema.json is {schema.file_size} bytes; the limit is {MAX_SCHEMA_BYTES}"
        )


def audit(data: bytes, max_bytes: int = MAX_UNPACKED_BYTES) -> list[str]:
    """Every type a skops file names, once its schema has been checked against the allowlists;
    UntrustedArtifact naming what is not allowed. Reads the schema as JSON: nothing is imported.
    Its members (the schema, the .npy arrays) may unpack to `max_bytes` at most."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            _check_sizes(archive, max_bytes)
            schema = json.loads(archive.read("schema.json"))
            pickled = [name for name in archive.namelist() if name.endswith(".npy") and _holds_objects(archive, name)]
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise UntrustedArtifact(f"not a skops file: {exc}") from None
    if pickled:
        raise UntrustedArtifact(f"the model file's array {pickled[0]} holds Python objects (a pickle); none is loaded")
    refused = refusals(schema)
    if refused:
        shown = ", ".join(refused[:5]) + (f" and {len(refused) - 5} more" if len(refused) > 5 else "")
        raise UntrustedArtifact(f"the model file names what modelbus does not load: {shown}")
    return sorted({name for _, name in named(schema)})


def _holds_objects(archive: zipfile.ZipFile, name: str) -> bool:
    """Whether an .npy member's header declares Python objects (stored as a pickle), read from
    the header alone."""
    import numpy as np

    with archive.open(name) as member:
        version = np.lib.format.read_magic(member)
        header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        _, _, dtype = header(member)
    return bool(dtype.hasobject)


def load_model(path: Path, max_bytes: int = MAX_UNPACKED_BYTES) -> Any:
    """Load a skops file whose every node is on the allowlists and whose members unpack to
    `max_bytes` at most (UntrustedArtifact otherwise)."""
    import skops.io as sio

    data = path.read_bytes()
    return sio.loads(data, trusted=audit(data, max_bytes))


def load_predictor(
    folder: Path,
    *,
    features: Sequence[str],
    numeric: Sequence[bool],
    task: Literal["classification", "regression"],
    classes: list[Any] | None = None,
) -> Any:
    """A version's model from the files in `folder`: the skops pipeline when there is one, else its
    ONNX graph behind the same predict / predict_proba / classes_."""
    if (folder / "model.skops").exists():
        return load_model(folder / "model.skops")
    from shared.runtime.onnxmodel import OnnxModel

    return OnnxModel.open(folder / "model.onnx", features=features, numeric=numeric, task=task, classes=classes)
