"""The Open Inference Protocol (V2) over REST, as KServe, Triton, MLServer and Seldon speak it.

`POST /v2/models/{name}[/versions/{v}]/infer` takes one tensor per feature, named as the feature
(shape `[N]` or `[N, 1]`; categoricals and datetimes as `BYTES`), or one `FP32`/`FP64` tensor of
shape `[N, F]` in feature order; the sticky key and segment fields ride as request `parameters`
(one value for every row) or as extra `BYTES` inputs (one per row). Tensors come as JSON `data`
(flat or nested) or, with Triton's binary tensor extension, as raw bytes after the JSON header
(`Inference-Header-Content-Length`). It answers `predict` and, for a classifier, `predict_proba`
(`[N, C]`, classes in the output's `classes` parameter), with the answering version, role and
request id in the response's `parameters`. Naming a version pins it: the rollout is bypassed (for
operators' checks), counted in `modelbus_serving_pinned_requests`, and not logged as rollout
evidence. Every refusal is `{"error": "..."}`, naming each bad input.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from services.deployer.serving.predictor import Answer, Outcome, Predictor, Refused, Target, decode, dumps
from services.deployer.serving.routing import label_type
from shared.contract.events import MAX_VERSION
from shared.runtime.served import Feature, Loaded
from shared.runtime.telemetry import code_version

HEADER = "inference-header-content-length"
NUMBER_TYPES = {
    "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
    "INT8": "<i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
    "FP16": "<f2", "FP32": "<f4", "FP64": "<f8",
}  # fmt: skip
DATATYPES = (*NUMBER_TYPES, "BOOL", "BYTES")
MATRIX_TYPES = ("FP32", "FP64")
FLAT_TYPES = frozenset({*NUMBER_TYPES, "BYTES"})


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Answer:
    """A V2 error answer: `{"error": "..."}`; an invalid input is 400, as the protocol says."""
    return Answer(400 if status == 422 else status, dumps({"error": message}), headers or {})


class Tensor(NamedTuple):
    """One decoded input tensor: its values flat, row-major. (A named tuple: made per input per
    request, it costs what a tuple costs.)"""

    position: int
    name: str
    shape: tuple[int, ...]
    datatype: str
    values: list[Any]

    @property
    def where(self) -> str:
        return f"inputs[{self.position}] {self.name[:60]!r}"


_tensor = Tensor._make


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    if not data or not isinstance(data[0], list):
        return data
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _from_bytes(raw: bytes, datatype: str, where: str) -> list[Any]:
    if datatype == "BYTES":
        values: list[Any] = []
        at = 0
        while at < len(raw):
            if at + 4 > len(raw):
                raise Refused(400, f"{where}: BYTES data ends inside an element's length", "bad-tensor")
            size = int.from_bytes(raw[at : at + 4], "little")
            at += 4
            if at + size > len(raw):
                raise Refused(400, f"{where}: BYTES element of {size} bytes runs past the data", "bad-tensor")
            try:
                values.append(raw[at : at + size].decode())
            except UnicodeDecodeError:
                raise Refused(400, f"{where}: a BYTES element is not UTF-8 text", "bad-tensor") from None
            at += size
        return values
    dtype = np.dtype("?" if datatype == "BOOL" else NUMBER_TYPES[datatype])
    if len(raw) % dtype.itemsize:
        raise Refused(400, f"{where}: {len(raw)} bytes is not a whole number of {datatype} values", "bad-tensor")
    return np.frombuffer(raw, dtype=dtype).tolist()  # type: ignore[no-any-return]


def _bad_value(values: list[Any], datatype: str) -> Any:
    """The first value that does not fit the datatype, or a sentinel when all fit."""
    if datatype == "BYTES":
        for v in values:
            if type(v) is not str and v is not None:
                return v
    elif datatype == "BOOL":
        for v in values:
            if type(v) is not bool:
                return v
    else:
        for v in values:
            kind = type(v)
            if kind is not float and kind is not int and v is not None:
                return v
    return _FINE


_FINE = object()


def _check_values(values: list[Any], datatype: str, where: str) -> None:
    bad = _bad_value(values, datatype)
    if bad is _FINE:
        return
    if datatype == "BYTES":
        raise Refused(400, f"{where}: BYTES data holds {type(bad).__name__} {bad!r}, not text", "bad-tensor")
    if datatype == "BOOL":
        raise Refused(400, f"{where}: BOOL data holds {bad!r}", "bad-tensor")
    raise Refused(400, f"{where}: {datatype} data holds {type(bad).__name__} {bad!r}, not a number", "bad-tensor")


MAX_RANK = 8
INT64_MAX = 2**63 - 1


def _shape_problem(shape: Any) -> str | None:
    """What is wrong with a tensor's shape, checked before any arithmetic on it: a list of at most
    MAX_RANK non-negative int64 dimensions."""
    if type(shape) is not list:
        return f"shape must be a list of non-negative integers, got {json.dumps(shape)[:60]}"
    if len(shape) > MAX_RANK:
        return f"shape has {len(shape)} dimensions; the limit is {MAX_RANK}"
    for d in shape:
        if type(d) is not int or d < 0 or d > INT64_MAX:
            return f"shape must be a list of non-negative int64 integers, got {json.dumps(shape)[:60]}"
    return None


def decode_request(body: bytes, header_length: str | None) -> tuple[dict[str, Any], list[Tensor]]:
    """The request's JSON and its input tensors, or Refused (400) naming what is malformed."""
    json_part, binary = body, b""
    if header_length is not None:
        if not (header_length.isascii() and header_length.isdigit()) or int(header_length) > len(body):
            raise Refused(400, f"Inference-Header-Content-Length {header_length!r} does not fit the body", "bad-json")
        json_part, binary = body[: int(header_length)], body[int(header_length) :]
    payload = decode(json_part, "the inference request")
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list) or not payload["inputs"]:
        raise Refused(
            400, 'an inference request is {"inputs": [{"name", "shape", "datatype", "data"}, ...]}', "bad-shape"
        )
    for key in ("parameters",):
        if key in payload and not isinstance(payload[key], dict):
            raise Refused(400, f"request {key} must be an object", "bad-shape")
    if "id" in payload and not isinstance(payload["id"], str):
        raise Refused(400, "request id must be a string", "bad-shape")
    _check_outputs(payload.get("outputs"))
    tensors: list[Tensor] = []
    problems: list[str] = []
    offset = 0
    for index, item in enumerate(payload["inputs"]):
        if type(item) is not dict or type(item.get("name")) is not str:
            problems.append(f"inputs[{index}]: an input is an object with a name, shape, datatype and data")
            continue
        shape: Any = item.get("shape")
        datatype: Any = item.get("datatype")
        data = item.get("data")
        if type(data) is list and type(shape) is list and type(datatype) is str and datatype in FLAT_TYPES:
            # the common cases, cheaply: flat values, a column shaped [N] or [N, 1], or a [N, F] matrix
            size = len(data)
            if (
                (
                    (shape == [size] and type(shape[0]) is int)
                    or (
                        len(shape) == 2
                        and type(shape[0]) is int
                        and type(shape[1]) is int
                        and shape[0] >= 0
                        and shape[1] >= 0
                        and shape[0] * shape[1] == size
                    )
                )
                and (not data or type(data[0]) is not list)
                and _bad_value(data, datatype) is _FINE
            ):
                tensors.append(_tensor((index, item["name"], tuple(shape), datatype, data)))  # C speed
                continue
        where = f"inputs[{index}] {str(item['name'])[:60]!r}"
        wrong = _shape_problem(shape)
        if wrong is not None:
            problems.append(f"{where}: {wrong}")
            continue
        if type(datatype) is not str or datatype not in DATATYPES:
            problems.append(f"{where}: unknown datatype {str(datatype)[:20]!r} (known: {', '.join(DATATYPES)})")
            continue
        parameters = item.get("parameters") or {}
        if not isinstance(parameters, dict):
            problems.append(f"{where}: parameters must be an object")
            continue
        try:
            if "data" in item:
                values = _flatten(item["data"])
                _check_values(values, datatype, where)
            elif isinstance(parameters, dict) and isinstance(parameters.get("binary_data_size"), int):
                size = parameters["binary_data_size"]
                if offset + size > len(binary):
                    raise Refused(400, f"{where}: binary_data_size {size} runs past the body", "bad-tensor")
                values = _from_bytes(binary[offset : offset + size], datatype, where)
                offset += size
            else:
                raise Refused(400, f"{where}: no data (give data, or binary_data_size with the bytes)", "bad-tensor")
        except Refused as refused:
            problems.extend(refused.errors)
            continue
        expected = math.prod(shape)  # at most MAX_RANK multiplications of int64s: microseconds
        if len(values) != expected:
            problems.append(f"{where}: shape {shape} holds {expected} values, the data has {len(values)}")
            continue
        tensors.append(Tensor(index, item["name"], tuple(shape), datatype, values))
    if problems:
        raise Refused(400, problems, "bad-tensor")
    return payload, tensors


def _check_outputs(asked: Any) -> None:
    """The requested outputs, if any: a list of objects, each with a string name and, optionally,
    parameters as an object (checked before any work, so a bad one never costs a prediction)."""
    if asked is None:
        return
    if type(asked) is not list:
        raise Refused(400, 'outputs must be a list of {"name": ...} objects', "bad-shape")
    problems = []
    for index, item in enumerate(asked):
        if type(item) is not dict or type(item.get("name")) is not str:
            problems.append(f"outputs[{index}]: an output is an object with a string name")
        elif not isinstance(item.get("parameters", {}), dict):
            problems.append(f"outputs[{index}]: parameters must be an object")
    if problems:
        raise Refused(400, problems, "bad-shape")


def rows_of(
    payload: dict[str, Any], tensors: list[Tensor], target: Target, check_count: Callable[[int], None]
) -> list[dict[str, Any]]:
    """The request's rows, one dict per row: request parameters, then feature and routing columns
    (`check_count` refuses too many rows before any is built)."""
    engines = list(target.engines.values())
    features = engines[0].loaded.names if len(engines) == 1 else frozenset().union(*(e.loaded.names for e in engines))
    live = target.live
    routing = live.fields if live is not None else frozenset()
    parameters = payload.get("parameters") or {}
    common = {k: v for k, v in parameters.items() if k in routing and isinstance(v, str | int | float)}
    columns: dict[str, list[Any]] = {}
    problems: list[str] = []
    count: int | None = None
    for tensor in tensors:
        if tensor.name in features or tensor.name in routing:
            if not (len(tensor.shape) == 1 or (len(tensor.shape) == 2 and tensor.shape[1] == 1)):
                problems.append(f"{tensor.where}: a column is shaped [N] or [N, 1], got {list(tensor.shape)}")
                continue
            columns[tensor.name] = tensor.values
        elif len(tensor.shape) == 2 and tensor.datatype in MATRIX_TYPES:
            order = _feature_order(engines)
            if order is None:
                problems.append(
                    f"{tensor.where}: the live versions read different features; send one tensor per feature"
                )
                continue
            width = tensor.shape[1]
            if width != len(order):
                problems.append(
                    f"{tensor.where}: [N, {width}] but the model reads {len(order)} features ({', '.join(order)})"
                )
                continue
            for j, name in enumerate(order):
                columns.setdefault(name, tensor.values[j::width])
        else:
            known = ", ".join(sorted(features))
            problems.append(
                f"{tensor.where}: not a feature of {target.model} ({known}), nor its sticky key or a segment field;"
                f" a [N, F] matrix must be FP32 or FP64"
            )
            continue
        rows = tensor.shape[0]
        if count is not None and rows != count:
            problems.append(f"{tensor.where}: {rows} rows where the other inputs have {count}")
            continue
        count = rows
    for engine in engines:
        for feature in engine.loaded.features:
            if feature.name not in columns:
                problems.append(f"missing input {feature.name!r} ({target.model}@{engine.loaded.version} reads it)")
    if problems:
        raise Refused(400, list(dict.fromkeys(problems)), "bad-tensor")
    check_count(count or 0)
    names = list(columns)
    return [{**common, **dict(zip(names, values, strict=True))} for values in zip(*columns.values(), strict=True)]


def _feature_order(engines: list[Any]) -> list[str] | None:
    orders = {tuple(f.name for f in e.loaded.features) for e in engines}
    return list(orders.pop()) if len(orders) == 1 else None


def _binary(values: list[Any], datatype: str) -> bytes:
    if datatype == "BYTES":
        parts = [str(v).encode() for v in values]
        return b"".join(len(p).to_bytes(4, "little") + p for p in parts)
    dtype = "?" if datatype == "BOOL" else NUMBER_TYPES[datatype]
    return np.asarray(values, dtype=dtype).tobytes()


def answer(outcome: Outcome, payload: dict[str, Any]) -> Answer:
    """The V2 inference response: `predict` and `predict_proba` (or the outputs asked for)."""
    answers = outcome.answers
    engine = outcome.target.engines[answers[0]["version"]]
    labels = [a["prediction"] for a in answers]
    if engine.loaded.task == "regression":
        labels = [float(v) for v in labels]
    datatype = engine.label_type or label_type(labels)
    outputs: dict[str, dict[str, Any]] = {
        "predict": {"name": "predict", "shape": [len(labels)], "datatype": datatype, "data": labels}
    }
    if "probabilities" in answers[0]:
        classes = list(engine.class_names)
        matrix = [[a["probabilities"].get(c) for c in classes] for a in answers]
        outputs["predict_proba"] = {
            "name": "predict_proba",
            "shape": [len(matrix), len(classes)],
            "datatype": "FP64",
            "parameters": {"classes": engine.classes_json},
            "data": [p for row in matrix for p in row],
        }
    parameters = payload.get("parameters") or {}
    everything = bool(parameters.get("binary_data_output"))
    asked = payload.get("outputs")
    chosen: list[tuple[dict[str, Any], bool]] = []
    if isinstance(asked, list) and asked:
        for index, item in enumerate(asked):
            name = item.get("name") if isinstance(item, dict) else None
            if name not in outputs:
                wrong = f"outputs[{index}]: unknown output {str(name)[:60]!r} (outputs: {', '.join(outputs)})"
                raise Refused(400, wrong, "bad-shape")
            binary = (item.get("parameters") or {}).get("binary_data", everything)
            chosen.append((outputs[name], bool(binary)))
    else:
        chosen = [(o, everything) for o in outputs.values()]
    versions = [a["version"] for a in answers]
    roles = {a["role"] for a in answers}
    same = len(set(versions)) == 1
    meta: dict[str, Any] = {
        "request_id": outcome.request_id,
        "version": versions[0] if same else ",".join(map(str, versions)),
    }
    if len(roles) == 1:
        meta["role"] = roles.pop()
    body: dict[str, Any] = {
        "model_name": outcome.target.model,
        "model_version": str(versions[0]) if same else meta["version"],
        "id": outcome.request_id,
        "parameters": meta,
        "outputs": [],
    }
    blobs: list[bytes] = []
    for output, binary in chosen:
        if binary:
            blob = _binary(output["data"], output["datatype"])
            blobs.append(blob)
            described = {k: v for k, v in output.items() if k != "data"}
            described["parameters"] = {**output.get("parameters", {}), "binary_data_size": len(blob)}
            body["outputs"].append(described)
        else:
            body["outputs"].append(output)
    headers = {"x-request-id": outcome.request_id}
    header = dumps(body)
    if not blobs:
        return Answer(200, header, headers)
    headers["inference-header-content-length"] = str(len(header))
    return Answer(200, header + b"".join(blobs), headers, "application/octet-stream")


async def infer(
    predictor: Predictor,
    name: str,
    version: str | None,
    body: bytes,
    headers: dict[str, str],
) -> Answer:
    """Answer one V2 inference request (errors in V2's shape)."""
    try:
        target = await predictor.target(name, pinned_version(version), "v2")
        payload, tensors = await predictor.parse(body, target, lambda: decode_request(body, headers.get(HEADER)))
        request_id = predictor.request_id(payload.get("id") or headers.get("x-request-id"))
        rows = await predictor.parse(body, None, lambda: rows_of(payload, tensors, target, predictor.check_row_count))
        outcome = await predictor.serve(
            target, rows, request_id, single=len(rows) == 1, label=lambda i, f: f"input {f!r}[{i}]"
        )
        return answer(outcome, payload)
    except Refused as refused:
        predictor.count(refused, name)
        return error(refused.status, str(refused))


def pinned_version(text: str | None) -> int | None:
    if text is None:
        return None
    if not (text.isascii() and text.isdigit()):
        raise Refused(404, f"no version {text[:20]!r}: a version is a positive integer", "unknown-version")
    if len(text) > len(str(MAX_VERSION)) or int(text) > MAX_VERSION:
        raise Refused(404, f"no version {text[:20]} (versions go up to {MAX_VERSION})", "unknown-version")
    return int(text)


# ---------------------------------------------------------------- metadata


def _input_type(feature: Feature) -> str:
    return "FP64" if feature.kind == "numeric" else "BYTES"


def metadata(target: Target, versions: list[int]) -> dict[str, Any]:
    """A model's (or version's) metadata: its inputs and outputs from the feature schema."""
    loaded: Loaded = target.primary.loaded
    outputs: list[dict[str, Any]] = [
        {
            "name": "predict",
            "datatype": target.primary.label_type or "BYTES",
            "shape": [-1],
        }
    ]
    if loaded.task == "classification" and loaded.classes:
        outputs.append(
            {
                "name": "predict_proba",
                "datatype": "FP64",
                "shape": [-1, len(loaded.classes)],
                "parameters": {"classes": json.dumps([str(c) for c in loaded.classes])},
            }
        )
    described: dict[str, Any] = {
        "name": target.model,
        "versions": [str(v) for v in versions],
        "platform": "onnxruntime_onnx" if loaded.runtime == "onnx" else "scikit-learn",
        "inputs": [
            {"name": f.name, "datatype": _input_type(f), "shape": [-1], "parameters": {"kind": f.kind}}
            for f in loaded.features
        ],
        "outputs": outputs,
        "parameters": {"task": loaded.task, "version": loaded.version},
    }
    live = target.live
    if live is not None and target.pinned is None and live.sticky_key:
        described["parameters"]["sticky_key"] = live.sticky_key
    return described


def server_metadata() -> dict[str, Any]:
    """`GET /v2`."""
    return {"name": "modelbus", "version": code_version(), "extensions": ["binary_tensor_data"]}
