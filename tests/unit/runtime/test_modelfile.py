"""Model files never run code: the trainer's own files load, and a file that names anything else
(a type, a function, a node kind) is refused before any of it is imported or run.

The crafted files are what an attacker would upload: a real skops file of a pipeline of
FunctionTransformers whose schema is rewritten to name the callables of the attack."""

from __future__ import annotations

import builtins
import importlib
import io
import json
import pkgutil
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
import yaml
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from services.trainer.domain import build_pipeline, estimator_class
from shared.contract.spec import ESTIMATORS
from shared.ops.example_data import purchases_frame
from shared.runtime.features import prepare
from shared.runtime.modelfile import ALLOWED_FUNCTIONS, ALLOWED_TYPES, UntrustedArtifact, audit, load_model
from shared.runtime.specfile import load_spec
from tests.support.craft import EXEC_CHAIN, crafted, function_nodes, payload, template

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = yaml.safe_load((ROOT / "schemas/examples/derived-features.yaml").read_text())
# The packages whose every name the old prefix rule trusted, and the usual gadgets besides.
PACKAGES = ("builtins", "numpy", "scipy", "sklearn", "collections", "xgboost", "lightgbm")
GADGETS = ("os", "subprocess", "shutil", "importlib", "functools", "operator", "pickle", "runpy", "code", "pydoc")


def trained(estimator: str, *, classes: int) -> tuple[Any, pd.DataFrame]:
    """A pipeline as the trainer builds it for `estimator`, fitted on a little example data."""
    task = ESTIMATORS[estimator]
    params = {"n_estimators": 5} if "n_estimators" in estimator_class(estimator)().get_params() else {}
    metric = "roc_auc" if task == "classification" else "r2"
    doc = {
        **{k: v for k, v in EXAMPLE.items() if k != "contract"},
        "task": task,
        "candidates": [{"estimator": estimator, "params": params}],
        "selection_metric": metric,
        "gates": [{"metric": metric, "min": 0.0}],
    }
    spec = load_spec(yaml.safe_dump(doc))
    frame = purchases_frame(300, seed=3)
    x = prepare(frame, spec.features)
    if task == "regression":
        y = frame["total_spend"] * 0.3 + frame["transaction_count"]
    else:
        y = frame["churned"] if classes == 2 else frame["transaction_count"] % classes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_pipeline(spec, spec.candidates[0]).fit(x, y), x


CASES = [(e, 2) for e in ESTIMATORS] + [(e, 3) for e, task in ESTIMATORS.items() if task == "classification"]


@pytest.mark.parametrize(("estimator", "classes"), CASES, ids=[f"{e.rsplit('.', 1)[1]}-{c}" for e, c in CASES])
def test_what_the_trainer_writes_for_every_allowed_estimator_loads_and_predicts_the_same(
    tmp_path: Path, estimator: str, classes: int
) -> None:
    pipeline, x = trained(estimator, classes=classes)
    for fitted in (pipeline, pipeline.steps[-1][1]):  # the pipeline, and a plain estimator
        path = tmp_path / "model.skops"
        sio.dump(fitted, path)
        rows = x if fitted is pipeline else pipeline[:-1].transform(x)
        assert np.array_equal(load_model(path).predict(rows[:20]), fitted.predict(rows[:20]))


# ---------------------------------------------------------------- crafted files


def attack(marker: Path) -> pd.DataFrame:
    """The row the attack predicts on: its first cell is code that makes the marker file."""
    return pd.DataFrame({"a": [payload(str(marker))]})


def attempt(tmp_path: Path, chain: list[str]) -> str:
    """Load a crafted file and predict on the attack's row: 'refused', or what happened."""
    marker = tmp_path / "ran"
    path = tmp_path / "model.skops"
    path.write_bytes(crafted(chain))
    try:
        model = load_model(path)
    except UntrustedArtifact:
        assert not marker.exists(), f"{chain}: refused, but only after running"
        return "refused"
    try:
        model.predict(attack(marker))
    except Exception as exc:
        return f"loaded, predict failed: {type(exc).__name__}"
    finally:
        assert not marker.exists(), f"{chain}: the file ran code"
    return "loaded"


def test_the_crafted_attack_is_real_it_runs_code_where_its_names_are_trusted_by_prefix(tmp_path: Path) -> None:
    data = crafted(EXEC_CHAIN)
    named = sio.get_untrusted_types(data=data)
    assert all(name.startswith(("numpy.", "builtins.")) for name in named), "the old rule trusted every one"
    marker = tmp_path / "ran"
    with pytest.raises(TypeError):  # exec returns None to the classifier: after it ran
        sio.loads(data, trusted=named).predict(attack(marker))
    assert marker.exists()


def test_the_attack_of_the_report_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    chain = EXEC_CHAIN
    assert attempt(tmp_path, chain) == "refused"
    with pytest.raises(UntrustedArtifact, match=re.escape("the function builtins.exec")):
        audit(crafted(chain))


def callables() -> list[str]:
    """Every public callable of the packages the old prefix rule trusted (every submodule that
    imports), and of the usual gadget modules: dotted names, sorted."""
    found: set[str] = set()
    modules = [importlib.import_module(name) for name in (*PACKAGES, *GADGETS)]
    for package in [m for m in modules if hasattr(m, "__path__")]:
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if any(part.startswith("_") or part in ("tests", "testing", "conftest") for part in info.name.split(".")):
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    modules.append(importlib.import_module(info.name))
            except Exception:  # noqa: S112 - a submodule that needs an optional dependency
                continue
    for module in modules:
        for name, value in vars(module).items():
            if not name.startswith("_") and callable(value):
                found.add(f"{module.__name__}.{name}")
    for name in dir(builtins):
        if callable(getattr(builtins, name)):
            found.add(f"builtins.{name}")
    return sorted(found)


CALLABLES = callables()


def test_every_callable_of_the_once_trusted_packages_is_refused_unless_listed(tmp_path: Path) -> None:
    outcomes = {name: attempt(tmp_path, [name]) for name in CALLABLES}
    loaded = {name for name, outcome in outcomes.items() if outcome != "refused"}
    assert loaded <= ALLOWED_FUNCTIONS, f"loaded though not listed: {sorted(loaded - ALLOWED_FUNCTIONS)[:10]}"
    assert len(CALLABLES) > 5_000, f"only {len(CALLABLES)} callables found"
    assert loaded, "the listed numeric functions still load"
    print(f"{len(CALLABLES)} callables tried: {len(CALLABLES) - len(loaded)} refused, {len(loaded)} loaded")


def test_a_type_outside_the_list_is_refused_even_from_sklearn(tmp_path: Path) -> None:
    schema, members = template()
    schema["__module__"], schema["__class__"] = "sklearn.ensemble._bagging", "BaggingClassifier"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("schema.json", json.dumps(schema))
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(UntrustedArtifact, match=re.escape("sklearn.ensemble._bagging.BaggingClassifier")):
        audit(out.getvalue())
    assert "sklearn.pipeline.Pipeline" in ALLOWED_TYPES


@seed(33)
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(chain=st.lists(st.sampled_from(CALLABLES), min_size=1, max_size=3))
def test_no_chain_of_callables_runs_the_attack(tmp_path_factory: pytest.TempPathFactory, chain: list[str]) -> None:
    folder = tmp_path_factory.mktemp("chain")
    outcome = attempt(folder, [*chain, "builtins.exec"])
    assert outcome == "refused"


def test_a_node_kind_the_trainer_never_writes_is_refused_whatever_it_names() -> None:
    schema, _ = template()
    node = next(function_nodes(schema))
    node["__loader__"], node["__module__"], node["__class__"] = "ReduceNode", "numpy", "float64"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("schema.json", json.dumps(schema))
    with pytest.raises(UntrustedArtifact, match=r"numpy.float64 \(a ReduceNode, which is never loaded\)"):
        audit(out.getvalue())
    del node["__class__"]
    with pytest.raises(UntrustedArtifact, match="a node without its kind, module and class"):
        with zipfile.ZipFile(out := io.BytesIO(), "w") as archive:
            archive.writestr("schema.json", json.dumps(schema))
        audit(out.getvalue())


def test_an_array_member_that_holds_a_pickle_is_refused_before_loading() -> None:
    schema, members = template()
    name = next(iter(members))
    pickled = io.BytesIO()
    np.save(pickled, np.array([print, "x"], dtype=object), allow_pickle=True)  # a pickle inside the .npy
    members[name] = pickled.getvalue()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("schema.json", json.dumps(schema))
        for member, data in members.items():
            archive.writestr(member, data)
    with pytest.raises(UntrustedArtifact, match="holds Python objects"):
        audit(out.getvalue())


def test_a_skops_file_whose_arrays_unpack_past_the_limit_is_refused_before_any_is_read() -> None:
    schema, members = template()
    name = next(iter(members))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("schema.json", json.dumps(schema))
        for member, data in members.items():
            archive.writestr(member, data)
        zeros = io.BytesIO()
        np.save(zeros, np.zeros(2**20))  # 8 MiB of zeros: about 8 KB stored
        archive.writestr(f"{name}.big.npy", zeros.getvalue())
    assert len(out.getvalue()) < 64 * 1024
    with pytest.raises(UntrustedArtifact, match=r"unpacks to \d+ bytes; the limit is 4194304"):
        audit(out.getvalue(), max_bytes=4 * 2**20)
    assert audit(out.getvalue(), max_bytes=16 * 2**20), "under the limit, the same file is audited"
