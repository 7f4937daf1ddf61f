"""Importing a model trained elsewhere: each accepted format becomes a version's files with a
settled schema, a smoke test and a profile; each bad upload is refused whole, saying why."""

from __future__ import annotations

import io
import json
import re
import stat
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
import yaml
from sklearn.ensemble import RandomForestRegressor

from services.registry.importing import Prepared, Upload, prepare_import
from services.registry.sources import ImportRefused
from shared.ops.example_data import churn_frame
from shared.runtime.features import prepare
from shared.runtime.modelfile import load_predictor
from tests.support.notebook import CATEGORICAL, NUMERIC, train
from tests.support.specs import example_spec

SPEC = example_spec("imported")
LIMIT = 64 * 1024 * 1024


@pytest.fixture(scope="module")
def notebook(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A forest trained outside modelbus, saved as skops and ONNX, with reference and test rows."""
    folder = tmp_path_factory.mktemp("notebook")
    frame = churn_frame(3000, seed=11)
    model = train(frame, "churned", trees=20, seed=0)
    sio.dump(model, folder / "model.skops")
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    types = [(n, FloatTensorType([None, 1])) for n in NUMERIC] + [(n, StringTensorType([None, 1])) for n in CATEGORICAL]
    (folder / "model.onnx").write_bytes(to_onnx(model, initial_types=types, target_opset=17).SerializeToString())
    frame.iloc[:2000].to_csv(folder / "reference.csv", index=False)
    frame.iloc[2000:].to_parquet(folder / "test.parquet", index=False)
    return {
        "skops": folder / "model.skops",
        "onnx": folder / "model.onnx",
        "reference": folder / "reference.csv",
        "test": folder / "test.parquet",
    }


def upload(model: Path, notebook: dict[str, Path], *, reference: bool = True, test: bool = True) -> Upload:
    return Upload(
        model=model,
        model_name=model.name,
        reference=notebook["reference"] if reference else None,
        reference_name="reference.csv" if reference else "",
        test=notebook["test"] if test else None,
        test_name="test.parquet" if test else "",
        actor="ops",
    )


def run(up: Upload, tmp_path: Path) -> Prepared:
    return prepare_import(up, SPEC, run_id="import-test", work=tmp_path / "work", max_bytes=LIMIT)


def mlflow_folder(
    notebook: dict[str, Path], into: Path, *, flavors: dict[str, Any] | None = None, signature: bool = True
) -> Path:
    """An MLflow model folder as mlflow.sklearn.save_model(serialization_format='skops') writes it."""
    into.mkdir(parents=True)
    (into / "model.skops").write_bytes(notebook["skops"].read_bytes())
    columns = [{"type": "double", "name": n, "required": True} for n in NUMERIC]
    columns += [{"type": "string", "name": n, "required": True} for n in CATEGORICAL]
    mlmodel = {
        "flavors": flavors
        or {
            "python_function": {"loader_module": "mlflow.sklearn", "model_path": "model.skops"},
            "sklearn": {"pickled_model": "model.skops", "serialization_format": "skops", "sklearn_version": "1.9"},
        },
        "mlflow_version": "3.17.2",
        "model_uuid": "738a702117524e76a06b18cfe4c8a52f",
        "utc_time_created": "2026-12-03 07:32:17.117715",
    }
    if signature:
        mlmodel["signature"] = {"inputs": json.dumps(columns), "outputs": None}
    (into / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    return into


def zipped(folder: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w") as archive:
        for path in folder.rglob("*"):
            archive.write(path, f"{folder.name}/{path.relative_to(folder)}")
    return target


# ---------------------------------------------------------------- accepted


def test_a_skops_pipeline_imports_with_its_schema_smoke_test_profile_and_evaluation_rows(
    notebook: dict[str, Path], tmp_path: Path
) -> None:
    prepared = run(upload(notebook["skops"], notebook), tmp_path)
    assert [f.name for f in prepared.feature_schema] == NUMERIC + CATEGORICAL
    assert set(prepared.files) == {"model.skops", "model.onnx", "manifest.json", "test-split.parquet"}
    assert prepared.evaluated_on == "test"
    assert 0.5 < prepared.metrics["roc_auc"] <= 1
    assert set(prepared.profile.features) == set(NUMERIC + CATEGORICAL)
    assert prepared.profile.calibration is not None
    manifest = json.loads(prepared.files["manifest.json"].read_text())
    assert manifest["imported_from"]["format"] == "skops"
    assert manifest["imported_from"]["imported_by"] == "ops"
    assert manifest["classes"] == [0, 1]
    assert manifest["onnx"] == "ok"  # exported, and it agrees with the pipeline on the reference rows
    assert prepared.estimator == "sklearn.ensemble.RandomForestClassifier"
    assert len(pd.read_parquet(prepared.files["test-split.parquet"])) == 1000


def test_an_onnx_graph_imports_with_classes_from_the_graph_and_predicts_like_the_pipeline(
    notebook: dict[str, Path], tmp_path: Path
) -> None:
    prepared = run(upload(notebook["onnx"], notebook), tmp_path)
    assert prepared.source["schema_from"] == "ONNX inputs"
    assert set(prepared.files) == {"model.onnx", "manifest.json", "test-split.parquet"}
    features = list(SPEC.features)
    graph = load_predictor(
        prepared.files["model.onnx"].parent,
        features=[f.name for f in features],
        numeric=[f.type == "numeric" for f in features],
        task="classification",
    )
    pipeline = sio.load(notebook["skops"], trusted=sio.get_untrusted_types(file=notebook["skops"]))
    rows = prepare(pd.read_parquet(notebook["test"]), features)
    assert list(graph.classes_) == [0, 1]
    assert np.array_equal(graph.predict(rows), pipeline.predict(rows))
    assert np.max(np.abs(graph.predict_proba(rows) - pipeline.predict_proba(rows))) < 1e-5


def test_without_test_rows_evaluation_uses_the_reference_rows_and_says_so(
    notebook: dict[str, Path], tmp_path: Path
) -> None:
    prepared = run(upload(notebook["skops"], notebook, test=False), tmp_path)
    assert prepared.evaluated_on == "reference (no --test data given)"
    manifest = json.loads(prepared.files["manifest.json"].read_text())
    assert manifest["imported_from"]["evaluated_on"] == "reference (no --test data given)"
    assert len(pd.read_parquet(prepared.files["test-split.parquet"])) == 2000


@pytest.mark.parametrize("packing", ["zip", "tar.gz", "folder"])
def test_an_mlflow_model_imports_from_a_folder_zip_or_tarball_with_its_signature(
    packing: str, notebook: dict[str, Path], tmp_path: Path
) -> None:
    folder = mlflow_folder(notebook, tmp_path / "src" / "churn-model")
    if packing == "zip":
        model = zipped(folder, tmp_path / "churn-model.zip")
    elif packing == "tar.gz":
        model = tmp_path / "churn-model.tar.gz"
        with tarfile.open(model, "w:gz") as archive:
            archive.add(folder, arcname="churn-model")
    else:
        model = folder
    prepared = run(upload(model, notebook), tmp_path)
    assert prepared.source["format"] == "mlflow"
    assert prepared.source["schema_from"] == "MLflow signature"
    assert prepared.source["mlflow"]["model_uuid"] == "738a702117524e76a06b18cfe4c8a52f"
    assert "model.skops" in prepared.files


# ---------------------------------------------------------------- refused


def test_a_pickled_model_is_refused_naming_the_safe_formats(notebook: dict[str, Path], tmp_path: Path) -> None:
    import pickle

    pipeline = sio.load(notebook["skops"], trusted=sio.get_untrusted_types(file=notebook["skops"]))
    for name in ("model.joblib", "model.bin"):
        (tmp_path / name).write_bytes(pickle.dumps(pipeline, protocol=4))
        with pytest.raises(ImportRefused, match="is pickled") as refused:
            run(upload(tmp_path / name, notebook), tmp_path)
        assert "skops.io.dump" in str(refused.value) and "to_onnx" in str(refused.value)
        assert "serialization_format='skops'" in str(refused.value)


def test_an_mlflow_model_saved_with_cloudpickle_is_refused_as_a_pickle(
    notebook: dict[str, Path], tmp_path: Path
) -> None:
    flavors = {"sklearn": {"pickled_model": "model.pkl", "serialization_format": "cloudpickle"}}
    folder = mlflow_folder(notebook, tmp_path / "m", flavors=flavors)
    with pytest.raises(ImportRefused, match=r"serialization_format 'cloudpickle'.*is pickled"):
        run(upload(folder, notebook), tmp_path)


def test_an_mlflow_model_with_an_unknown_flavor_is_refused_naming_it(notebook: dict[str, Path], tmp_path: Path) -> None:
    folder = mlflow_folder(notebook, tmp_path / "m", flavors={"pytorch": {"model_data": "data"}, "python_function": {}})
    with pytest.raises(ImportRefused, match=r"flavor\(s\) pytorch cannot be imported; modelbus takes the onnx flavor"):
        run(upload(folder, notebook), tmp_path)


def test_an_mlflow_model_without_signature_or_reference_is_refused(notebook: dict[str, Path], tmp_path: Path) -> None:
    folder = mlflow_folder(notebook, tmp_path / "m", signature=False)
    with pytest.raises(ImportRefused, match="has no signature and no reference data was given"):
        run(upload(folder, notebook, reference=False, test=False), tmp_path)


def test_an_onnx_file_that_does_not_load_is_refused(notebook: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07garbage, not a graph" * 10)
    with pytest.raises(ImportRefused, match="not a skops file, an MLflow model or an ONNX model that loads"):
        run(upload(tmp_path / "model.onnx", notebook), tmp_path)


def test_a_regressor_imported_as_a_classifier_is_refused(notebook: dict[str, Path], tmp_path: Path) -> None:
    frame = churn_frame(500, seed=3)
    regressor = train(frame, "churned", trees=5, seed=0).set_params(forest=RandomForestRegressor(n_estimators=5))
    regressor.fit(frame[NUMERIC + CATEGORICAL].astype({n: str for n in CATEGORICAL}), frame["churned"])
    sio.dump(regressor, tmp_path / "regressor.skops")
    with pytest.raises(ImportRefused, match=r"declares classification, but the model .* looks like a regressor"):
        run(upload(tmp_path / "regressor.skops", notebook), tmp_path)


def test_a_reference_that_lacks_a_feature_is_refused_naming_it(notebook: dict[str, Path], tmp_path: Path) -> None:
    pd.read_csv(notebook["reference"]).drop(columns=["region"]).to_csv(tmp_path / "short.csv", index=False)
    up = upload(notebook["onnx"], notebook)
    short = Upload(**{**up.__dict__, "reference": tmp_path / "short.csv", "reference_name": "short.csv"})
    with pytest.raises(ImportRefused, match=r"the reference data lacks feature\(s\) region"):
        run(short, tmp_path)


def test_a_signature_that_disagrees_with_the_spec_is_refused_with_the_difference(
    notebook: dict[str, Path], tmp_path: Path
) -> None:
    folder = mlflow_folder(notebook, tmp_path / "m")
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    columns = json.loads(mlmodel["signature"]["inputs"])
    columns[-1]["name"] = "country"
    mlmodel["signature"]["inputs"] = json.dumps(columns)
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    difference = "only in the MLflow signature: country; only in the model's fitted feature names: region"
    with pytest.raises(ImportRefused, match=difference):
        run(upload(folder, notebook), tmp_path)


def test_a_zip_with_path_traversal_is_refused_whole(notebook: dict[str, Path], tmp_path: Path) -> None:
    target = tmp_path / "evil.zip"
    with zipfile.ZipFile(target, "w") as archive:
        archive.writestr("MLmodel", "flavors: {}")
        archive.writestr("../../outside.txt", "x")
    with pytest.raises(ImportRefused, match="points outside its folder"):
        run(upload(target, notebook), tmp_path)
    assert not (tmp_path / "outside.txt").exists() and not (tmp_path / "work" / "outside.txt").exists()


def test_a_zip_with_a_symlink_is_refused_whole(notebook: dict[str, Path], tmp_path: Path) -> None:
    target = tmp_path / "link.zip"
    with zipfile.ZipFile(target, "w") as archive:
        archive.writestr("m/MLmodel", "flavors: {}")
        link = zipfile.ZipInfo("m/model.skops")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    with pytest.raises(ImportRefused, match="is a symlink"):
        run(upload(target, notebook), tmp_path)


def test_a_tarball_with_a_link_is_refused_whole(notebook: dict[str, Path], tmp_path: Path) -> None:
    target = tmp_path / "link.tar.gz"
    with tarfile.open(target, "w:gz") as archive:
        info = tarfile.TarInfo("m/model.skops")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        archive.addfile(info)
        data = b"flavors: {}"
        mlmodel = tarfile.TarInfo("m/MLmodel")
        mlmodel.size = len(data)
        archive.addfile(mlmodel, io.BytesIO(data))
    with pytest.raises(ImportRefused, match="is a link"):
        run(upload(target, notebook), tmp_path)


def test_a_forest_whose_tree_points_outside_itself_is_refused(notebook: dict[str, Path], tmp_path: Path) -> None:
    pipeline = sio.load(notebook["skops"], trusted=sio.get_untrusted_types(file=notebook["skops"]))
    tree = pipeline.steps[-1][1].estimators_[3].tree_
    state = tree.__getstate__()
    nodes = state["nodes"].copy()
    nodes["left_child"][0] = 10_000_000  # what a crafted file can hold: scikit-learn would read past the array
    tree.__setstate__({**state, "nodes": nodes})
    sio.dump(pipeline, tmp_path / "crafted.skops")
    with pytest.raises(ImportRefused, match=r"names a child index outside \[-1, \d+\): the file is corrupt or crafted"):
        run(upload(tmp_path / "crafted.skops", notebook), tmp_path)


# ---------------------------------------------------------------- what is accepted serves

NUMERIC_SPEC = SPEC.model_copy(update={"features": [f for f in SPEC.features if f.name in NUMERIC]})


def numeric_rows(folder: Path, *, labels: dict[int, Any] | None = None) -> tuple[np.ndarray[Any, Any], Any]:
    """A notebook's numeric matrix and labels, with the reference and test files it uploads."""
    frame = churn_frame(3000, seed=12).dropna(subset=NUMERIC)
    if labels:
        frame["churned"] = frame["churned"].map(labels)
    frame.iloc[:2000].to_csv(folder / "reference.csv", index=False)
    frame.iloc[2000:].to_parquet(folder / "test.parquet", index=False)
    return frame[NUMERIC].to_numpy(dtype=np.float64), frame["churned"]


def served_as_serving_loads_it(prepared: Prepared) -> Any:
    from shared.runtime import served

    folder = prepared.files["manifest.json"].parent
    return served.open_version("imported", 1, folder)


def test_a_plain_estimator_without_pipeline_imports_and_serves_refusing_missing_values(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    from shared.runtime.served import InputError, check_rows

    x, y = numeric_rows(tmp_path)
    sio.dump(LogisticRegression(max_iter=500).fit(x, y), tmp_path / "plain.skops")
    notebook = {"reference": tmp_path / "reference.csv", "test": tmp_path / "test.parquet"}
    up = upload(tmp_path / "plain.skops", notebook)
    prepared = prepare_import(up, NUMERIC_SPEC, run_id="import-plain", work=tmp_path / "work", max_bytes=LIMIT)
    assert "model.onnx" in prepared.files, "a plain estimator's graph takes one input per feature"
    assert [(s.name, s.nullable) for s in prepared.feature_schema] == [(n, False) for n in NUMERIC]
    loaded = served_as_serving_loads_it(prepared)
    assert loaded.runtime == "onnx" and loaded.classes == [0, 1]
    row = {"tenure_months": 12, "monthly_charges": 70.5, "support_calls": 2}
    labels, probabilities = loaded.predict(check_rows(loaded.features, [row]))
    assert labels[0] in (0, 1) and probabilities is not None and abs(sum(probabilities[0]) - 1) < 1e-5
    with pytest.raises(InputError, match="a value is required"):
        check_rows(loaded.features, [{**row, "support_calls": None}])


CLASSIFIERS = ["LinearClassifier", "SVMClassifier", "TreeEnsembleClassifier"]


@pytest.mark.parametrize("zipmap", [False, True], ids=["no-zipmap", "zipmap"])
@pytest.mark.parametrize("labels", ["ints", "strings"])
@pytest.mark.parametrize("op", CLASSIFIERS)
def test_an_onnx_classifier_imports_and_serves_whatever_spelling_names_its_classes(
    tmp_path: Path, op: str, labels: str, zipmap: bool
) -> None:
    import onnx
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier

    names = {0: "stays", 1: "churns"} if labels == "strings" else None
    x, y = numeric_rows(tmp_path, labels=names)
    estimator = {
        "LinearClassifier": LogisticRegression(max_iter=500),
        "SVMClassifier": SVC(probability=True, random_state=0),
        "TreeEnsembleClassifier": DecisionTreeClassifier(max_depth=4, random_state=0),
    }[op].fit(x[:600], y[:600])
    graph = to_onnx(estimator, x[:1].astype(np.float32), options={id(estimator): {"zipmap": zipmap}}, target_opset=17)
    ops = {node.op_type for node in graph.graph.node}
    assert op in ops and ("ZipMap" in ops) == zipmap
    spelled = {a.name for node in graph.graph.node if node.op_type == op for a in node.attribute}
    assert spelled & {"classlabels_ints", "classlabels_int64s", "classlabels_strings"}
    onnx.save(graph, tmp_path / "model.onnx")
    notebook = {"reference": tmp_path / "reference.csv", "test": tmp_path / "test.parquet"}
    prepared = prepare_import(
        upload(tmp_path / "model.onnx", notebook),
        NUMERIC_SPEC,
        run_id="import-onnx",
        work=tmp_path / "w",
        max_bytes=LIMIT,
    )
    loaded = served_as_serving_loads_it(prepared)
    assert [str(c) for c in loaded.classes] == [str(c) for c in estimator.classes_]
    from shared.runtime.served import check_rows

    row = {"tenure_months": 30, "monthly_charges": 40.0, "support_calls": 0}
    answered, _ = loaded.predict(check_rows(loaded.features, [row]))
    assert str(answered[0]) in {str(c) for c in estimator.classes_}


def test_reference_data_that_declares_too_many_rows_or_columns_is_refused_before_it_is_read(
    notebook: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import services.registry.importing as importing

    monkeypatch.setattr(importing, "MAX_ROWS", 1000)
    monkeypatch.setattr(importing, "MAX_COLUMNS", 10)
    long = tmp_path / "long.parquet"
    pd.DataFrame({"tenure_months": np.zeros(5000)}).to_parquet(long, compression="zstd")
    with pytest.raises(
        ImportRefused, match=re.escape("the reference data long.parquet has 5,000 rows; the limit is 1,000")
    ):
        importing.read_rows(long, "long.parquet", "reference", max_bytes=LIMIT)
    dense = tmp_path / "dense.parquet"
    pd.DataFrame({"tenure_months": np.arange(900.0)}).to_parquet(dense)
    with pytest.raises(ImportRefused, match=r"dense.parquet has \d[\d,]* bytes unpacked; the limit is 1,000"):
        importing.read_rows(dense, "dense.parquet", "reference", max_bytes=1000)
    wide = tmp_path / "wide.csv"
    wide.write_text(",".join(f"c{i}" for i in range(11)) + "\n" + ",".join("1" * 11) + "\n")
    with pytest.raises(ImportRefused, match=re.escape("wide.csv has 11 columns; the limit is 10")):
        importing.read_rows(wide, "wide.csv", "reference", max_bytes=LIMIT)
    many = tmp_path / "many.csv"
    many.write_text("a\n" + "1\n" * 1001)
    with pytest.raises(ImportRefused, match=re.escape("many.csv has more than 1,000 rows")):
        importing.read_rows(many, "many.csv", "reference", max_bytes=LIMIT)
    assert len(importing.read_rows(notebook["test"], "test.parquet", "test", max_bytes=LIMIT)) == 1000
