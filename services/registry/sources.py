"""What an uploaded model file is, opened without running any of it.

Three formats are taken: a skops file, an ONNX file, and an MLflow model directory (uploaded as a
`.zip` or `.tar.gz`) whose `MLmodel` has an `onnx` flavor or a `sklearn` flavor saved with skops.
Anything pickled (pickle, cloudpickle, joblib) is refused before a byte of it is interpreted, and
an archive is refused whole if any member would land outside its folder or is a link.
"""

from __future__ import annotations

import json
import shutil
import stat
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import yaml

PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".sav", ".cloudpickle", ".dill")
RESAVE = (
    "modelbus never opens pickles (pickle, cloudpickle, joblib), since loading one runs code. "
    "Re-save the model in a safe format: skops (`skops.io.dump(model, 'model.skops')`), "
    "ONNX (`skl2onnx.to_onnx(model, X[:1])`), or an MLflow model "
    "(`mlflow.sklearn.save_model(model, path, serialization_format='skops')` or `mlflow.onnx.save_model`)"
)
SIGNATURE_KINDS = {
    "double": "numeric",
    "float": "numeric",
    "long": "numeric",
    "integer": "numeric",
    "string": "categorical",
    "boolean": "boolean",
}

Kind = Literal["numeric", "categorical", "boolean"]


class ImportRefused(ValueError):
    """An import refused whole; the message says what was wrong and what to do."""


@dataclass(frozen=True)
class Source:
    """An uploaded model, opened: its format, the model file to load, and what it says about itself."""

    format: Literal["skops", "onnx", "mlflow"]
    flavor: Literal["skops", "onnx"]
    model_file: Path
    signature: list[tuple[str, Kind]] | None = None
    mlflow: dict[str, Any] = field(default_factory=dict)


def _looks_pickled(head: bytes) -> bool:
    # Protocol 2+ pickles (and so joblib and cloudpickle files) open with PROTO; joblib's
    # compressed files are zlib streams; protocol-0 pickles open with an opcode and a module path.
    return (
        (len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5)
        or head[:2] in (b"x\x9c", b"x\xda", b"x\x01", b"ZF")
        or head[:6] in (b"ccopy_", b"(dp0\n", b"(lp0\n")
    )


def _refuse_pickle(what: str) -> ImportRefused:
    return ImportRefused(f"{what} is pickled. {RESAVE}")


def _unpack_zip(path: Path, into: Path, *, max_bytes: int) -> None:
    with zipfile.ZipFile(path) as archive:
        total = 0
        for info in archive.infolist():
            _check_member(info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise ImportRefused(f"the archive's {info.filename!r} is a symlink; upload plain files")
            total += info.file_size
            if total > max_bytes:
                raise ImportRefused(f"the archive unpacks to more than {max_bytes} bytes")
        # Every member was checked above (no traversal, no link, bounded size).
        archive.extractall(into)  # noqa: S202  # nosec B202


def _unpack_tar(path: Path, into: Path, *, max_bytes: int) -> None:
    with tarfile.open(path, "r:*") as archive:
        total = 0
        for member in archive.getmembers():
            _check_member(member.name)
            if member.issym() or member.islnk():
                raise ImportRefused(f"the archive's {member.name!r} is a link; upload plain files")
            if not (member.isfile() or member.isdir()):
                raise ImportRefused(f"the archive's {member.name!r} is not a plain file or folder")
            total += member.size
            if total > max_bytes:
                raise ImportRefused(f"the archive unpacks to more than {max_bytes} bytes")
        archive.extractall(into, filter="data")


def _check_member(name: str) -> None:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
        raise ImportRefused(f"the archive's {name!r} points outside its folder (path traversal); refused whole")


def _mlflow_root(folder: Path) -> Path | None:
    if (folder / "MLmodel").is_file():
        return folder
    inner = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(("__MACOSX", "."))]
    if len(inner) == 1 and (inner[0] / "MLmodel").is_file():
        return inner[0]
    return None


def open_source(upload: Path, filename: str, work: Path, *, max_bytes: int) -> Source:
    """The uploaded model opened (archives unpacked under `work`), or ImportRefused saying why."""
    if upload.is_dir():
        root = _mlflow_root(upload)
        if root is None:
            raise ImportRefused(f"{filename}: a folder is taken only as an MLflow model, and it has no MLmodel file")
        return _mlflow(root, filename)
    name = filename.lower()
    if name.endswith(PICKLE_SUFFIXES):
        raise _refuse_pickle(filename)
    with upload.open("rb") as handle:
        head = handle.read(8)
    if _looks_pickled(head):
        raise _refuse_pickle(filename)
    unpacked = work / "unpacked"
    if head[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(upload) as archive:
            names = set(archive.namelist())
        if "schema.json" in names and not any(n.endswith("MLmodel") for n in names):
            return Source(format="skops", flavor="skops", model_file=upload)
        _unpack_zip(upload, unpacked, max_bytes=max_bytes)
    elif head[:2] == b"\x1f\x8b" or name.endswith((".tar", ".tar.gz", ".tgz")):
        try:
            _unpack_tar(upload, unpacked, max_bytes=max_bytes)
        except tarfile.TarError:
            import gzip

            with gzip.open(upload) as inner:
                if _looks_pickled(inner.read(8)):
                    raise _refuse_pickle(filename) from None
            raise ImportRefused(f"{filename} is gzip but not a tar archive of an MLflow model") from None
    else:
        return Source(format="onnx", flavor="onnx", model_file=_onnx_file(upload, filename))
    root = _mlflow_root(unpacked)
    if root is None:
        raise ImportRefused(
            f"{filename} is an archive with neither a skops model (schema.json) nor an MLflow model (MLmodel)"
        )
    return _mlflow(root, filename)


def _onnx_file(path: Path, filename: str) -> Path:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ImportRefused(
            f"{filename} is not a skops file, an MLflow model or an ONNX model that loads "
            f"({type(exc).__name__}: {str(exc)[:200]})"
        ) from None
    return path


def _signature(mlmodel: dict[str, Any], filename: str) -> list[tuple[str, Kind]] | None:
    raw = (mlmodel.get("signature") or {}).get("inputs")
    if not raw:
        return None
    try:
        inputs = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError as exc:
        raise ImportRefused(f"{filename}: the MLmodel signature's inputs are not JSON ({exc})") from None
    if not isinstance(inputs, list) or not all(isinstance(i, dict) for i in inputs):
        raise ImportRefused(f"{filename}: the MLmodel signature's inputs are not a list of columns")
    if any(i.get("type") == "tensor" for i in inputs):
        return None  # a tensor signature names no columns: the ONNX inputs or the reference rows do
    columns: list[tuple[str, Kind]] = []
    for item in inputs:
        kind = SIGNATURE_KINDS.get(str(item.get("type")))
        if kind is None or not item.get("name"):
            raise ImportRefused(
                f"{filename}: signature input {item.get('name')!r} has type {item.get('type')!r}; "
                f"modelbus takes {', '.join(sorted(SIGNATURE_KINDS))} columns"
            )
        columns.append((str(item["name"]), kind))  # type: ignore[arg-type]
    return columns


def _mlflow(root: Path, filename: str) -> Source:
    try:
        mlmodel = yaml.safe_load((root / "MLmodel").read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ImportRefused(f"{filename}: the MLmodel file is not YAML ({exc})") from None
    if not isinstance(mlmodel, dict) or not isinstance(mlmodel.get("flavors"), dict):
        raise ImportRefused(f"{filename}: the MLmodel file has no flavors")
    flavors: dict[str, Any] = mlmodel["flavors"]
    about = {
        key: mlmodel[key]
        for key in ("mlflow_version", "model_uuid", "run_id", "utc_time_created", "artifact_path", "metadata")
        if mlmodel.get(key) is not None
    }
    about["flavors"] = sorted(flavors)
    signature = _signature(mlmodel, filename)
    if "onnx" in flavors:
        data = root / str(flavors["onnx"].get("data", "model.onnx"))
        _inside(data, root, filename)
        return Source("mlflow", "onnx", _onnx_file(data, f"{filename}: {data.name}"), signature, about)
    if "sklearn" in flavors:
        sklearn = flavors["sklearn"]
        form = sklearn.get("serialization_format", "cloudpickle")
        if form != "skops":
            raise _refuse_pickle(f"{filename}: its sklearn flavor (serialization_format {form!r})")
        data = root / str(sklearn.get("pickled_model", "model.skops"))
        _inside(data, root, filename)
        if not data.is_file():
            raise ImportRefused(f"{filename}: the sklearn flavor names {data.name}, which is not in the model")
        return Source("mlflow", "skops", data, signature, about | {"sklearn_version": sklearn.get("sklearn_version")})
    others = ", ".join(sorted(set(flavors) - {"python_function"})) or "only python_function"
    raise ImportRefused(
        f"{filename}: MLmodel flavor(s) {others} cannot be imported; modelbus takes the onnx flavor, or the "
        "sklearn flavor saved with serialization_format='skops'"
    )


def _inside(path: Path, root: Path, filename: str) -> None:
    if not path.resolve().is_relative_to(root.resolve()):
        raise ImportRefused(f"{filename}: the MLmodel names a file outside the model folder")


def copy_model(source: Source, into: Path) -> Path:
    """The model file under the name serving and evaluation look for (model.skops or model.onnx)."""
    target = into / ("model.skops" if source.flavor == "skops" else "model.onnx")
    shutil.copyfile(source.model_file, target)
    return target
