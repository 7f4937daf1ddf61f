"""Every version can leave as an MLflow model: a folder `mlflow.pyfunc.load_model` opens, with the
`onnx` flavor when the version has an ONNX graph and the `sklearn` flavor (skops serialization)
otherwise, its signature, an input example, and the modelbus manifest as metadata.

MLflow's ONNX pyfunc feeds each DataFrame column as a 1-D array and flattens every output to one
value per row; modelbus' graphs take `[N, 1]` columns and give `[N, C]` probabilities. So the
exported graph gets a 1-D input per feature (unsqueezed inside) and, for a classifier, ZipMap's
`{class: probability}` per row, as skl2onnx writes for MLflow by default.
"""

from __future__ import annotations

import json
import platform
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from shared.runtime.features import prepare

SIGNATURE_TYPE = {"numeric": "double", "categorical": "string"}
EXAMPLE_ROWS = 5


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import sklearn
    import skops

    return {
        "scikit-learn": sklearn.__version__,
        "skops": skops.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def mlflow_ready_graph(source: Path, target: Path, *, classes: list[Any] | None) -> None:
    """Rewrite a modelbus graph for MLflow's ONNX pyfunc: 1-D inputs, ZipMap probabilities."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(source))
    graph = model.graph
    nodes = []
    axes = helper.make_tensor("modelbus_axes_1", TensorProto.INT64, [1], [1])
    graph.initializer.append(axes)
    inputs = list(graph.input)
    if len(inputs) > 1:
        for port in inputs:
            dims = port.type.tensor_type.shape.dim
            if len(dims) != 2:
                continue
            inner = f"{port.name}__2d"
            for node in graph.node:
                node.input[:] = [inner if name == port.name else name for name in node.input]
            nodes.append(helper.make_node("Unsqueeze", [port.name, "modelbus_axes_1"], [inner]))
            del dims[1]
    outputs = list(graph.output)
    if classes is not None and len(outputs) == 2 and outputs[1].type.HasField("tensor_type"):
        probabilities = outputs[1]
        inner = f"{probabilities.name}__tensor"
        for node in graph.node:
            node.output[:] = [inner if name == probabilities.name else name for name in node.output]
        keys = (
            {"classlabels_int64s": [int(c) for c in classes]}
            if all(isinstance(c, int) for c in classes)
            else {"classlabels_strings": [str(c) for c in classes]}
        )
        zipmap = helper.make_node("ZipMap", [inner], [probabilities.name], domain="ai.onnx.ml", **keys)
        graph.node.append(zipmap)
        key_type = TensorProto.INT64 if "classlabels_int64s" in keys else TensorProto.STRING
        graph.output.remove(probabilities)
        graph.output.append(
            helper.make_value_info(
                probabilities.name,
                helper.make_sequence_type_proto(
                    helper.make_map_type_proto(key_type, helper.make_tensor_type_proto(TensorProto.FLOAT, []))
                ),
            )
        )
    for node in reversed(nodes):
        graph.node.insert(0, node)
    onnx.checker.check_model(model)
    target.write_bytes(model.SerializeToString())


def _label_dtype(classes: list[Any] | None, task: str) -> str:
    if task == "regression":
        return "float64"
    return "int64" if classes and all(isinstance(c, int) for c in classes) else "str"


def write_mlflow_model(folder: Path, *, version: dict[str, Any], files: dict[str, Path]) -> Path:
    """An MLflow model folder for a version, from its downloaded files (model, manifest, test split)."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = json.loads(files["manifest.json"].read_text())
    schema = manifest["feature_schema"]
    classes = manifest.get("classes")
    task = manifest.get("task", version["task"])
    onnx_flavor = "model.onnx" in files
    numeric_type = "float" if onnx_flavor else "double"
    types = {"numeric": numeric_type, "datetime": "double"}  # datetimes go in as epoch seconds
    inputs = [{"type": types.get(f["kind"], "string"), "name": f["name"], "required": True} for f in schema]
    outputs = [{"type": "tensor", "tensor-spec": {"dtype": _label_dtype(classes, task), "shape": [-1]}}]
    versions = _versions()
    python = platform.python_version()
    pyfunc: dict[str, Any] = {"env": {"virtualenv": "python_env.yaml", "conda": "conda.yaml"}, "python_version": python}
    if onnx_flavor:
        mlflow_ready_graph(
            files["model.onnx"], folder / "model.onnx", classes=classes if task == "classification" else None
        )
        flavors: dict[str, Any] = {
            "onnx": {
                "code": None,
                "data": "model.onnx",
                "onnx_session_options": None,
                "onnx_version": versions["onnx"],
                "providers": ["CPUExecutionProvider"],
            },
            "python_function": {**pyfunc, "data": "model.onnx", "loader_module": "mlflow.onnx"},
        }
        requirements = [f"onnx=={versions['onnx']}", f"onnxruntime=={versions['onnxruntime']}"]
    else:
        import skops.io as sio

        (folder / "model.skops").write_bytes(files["model.skops"].read_bytes())
        code = _carry_derive(folder) if manifest.get("derived") else None
        flavors = {
            "python_function": {
                **pyfunc,
                **({"code": code} if code else {}),
                "loader_module": "mlflow.sklearn",
                "model_path": "model.skops",
                "predict_fn": "predict",
            },
            "sklearn": {
                "code": code,
                "pickled_model": "model.skops",
                "serialization_format": "skops",
                "sklearn_version": versions["scikit-learn"],
                "skops_trusted_types": sio.get_untrusted_types(file=files["model.skops"]),
            },
        }
        requirements = [f"scikit-learn=={versions['scikit-learn']}", f"skops=={versions['skops']}"]
        library = str(manifest.get("estimator", "")).split(".", 1)[0]
        if library in ("xgboost", "lightgbm"):
            import importlib.metadata

            requirements.append(f"{library}=={importlib.metadata.version(library)}")
    test = pd.read_parquet(files["test-split.parquet"]).head(EXAMPLE_ROWS)
    names = [f["name"] for f in schema]
    example = prepare(test, [_spec_feature(f) for f in schema])[names]
    split = json.loads(example.to_json(orient="split", index=False))
    (folder / "input_example.json").write_text(json.dumps(split))
    (folder / "serving_input_example.json").write_text(json.dumps({"dataframe_split": split}, indent=2))
    (folder / "requirements.txt").write_text("\n".join(["mlflow", *requirements]) + "\n")
    (folder / "python_env.yaml").write_text(
        yaml.safe_dump({"python": python, "build_dependencies": ["pip"], "dependencies": ["-r requirements.txt"]})
    )
    (folder / "conda.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "mlflow-env",
                "channels": ["conda-forge"],
                "dependencies": [f"python={python}", "pip", {"pip": ["mlflow", *requirements]}],
            }
        )
    )
    mlmodel = {
        "artifact_path": None,
        "flavors": flavors,
        "model_uuid": uuid.uuid4().hex,
        "utc_time_created": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f"),
        "signature": {"inputs": json.dumps(inputs), "outputs": json.dumps(outputs), "params": None},
        "saved_input_example_info": {
            "artifact_path": "input_example.json",
            "type": "dataframe",
            "pandas_orient": "split",
            "serving_input_path": "serving_input_example.json",
        },
        "metadata": {
            "modelbus": {
                "model": version["model"],
                "version": version["version"],
                "run_id": version["run_id"],
                "status": version["status"],
                "artifacts": {a["name"]: a["sha256"] for a in version["artifacts"]},
                "manifest": manifest,
            }
        },
    }
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel, sort_keys=False))
    return folder


def _carry_derive(folder: Path) -> str:
    """Ship modelbus' derived-feature step with the model, as MLflow's `code` (put on sys.path when
    the model loads), so an MLflow environment without modelbus opens it."""
    from shared.runtime import derive

    package = folder / "code" / "shared" / "runtime"
    package.mkdir(parents=True)
    for init in (folder / "code" / "shared" / "__init__.py", package / "__init__.py"):
        init.write_text("")
    (package / "derive.py").write_text(Path(derive.__file__).read_text())
    return "code"


def _spec_feature(schema: dict[str, Any]) -> Any:
    from shared.contract.spec import Feature

    kind = schema["kind"] if schema["kind"] in ("numeric", "datetime") else "categorical"
    return Feature(name=schema["name"], type=kind)
