"""MLflow's scoring protocol, as `mlflow models serve` speaks it: `POST /invocations` (for the one
model this process serves, or MODELBUS_SERVING_DEFAULT_MODEL) and `POST /v1/models/{name}/invocations`.

A JSON body holds exactly one of `dataframe_split` (`{"columns", "data"}`), `dataframe_records`
(`[{column: value}, ...]`), `instances` (records) or `inputs` (records, or `{column: [values]}`),
and may hold `params` (ignored, as MLflow ignores params a model does not declare); a `text/csv`
body has a header row. The answer is `{"predictions": [...]}`: the predicted label (or value) per
row, as a scikit-learn model's pyfunc `predict` gives it. Refusals use MLflow's error shape,
`{"error_code": "BAD_REQUEST", "message": "..."}`, and its 415 for other content types.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Callable
from typing import Any

from services.deployer.serving.predictor import Answer, Predictor, Refused, Target, decode, dumps

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
ERROR_CODES = {400: "BAD_REQUEST", 404: "RESOURCE_DOES_NOT_EXIST", 413: "BAD_REQUEST"}


def error(status: int, message: str) -> Answer:
    """An MLflow-shaped error answer."""
    if status == 422:  # an input the model's schema refuses: 400, as MLflow's schema enforcement answers it
        return Answer(400, dumps({"error_code": "INVALID_PARAMETER_VALUE", "message": message}))
    code = ERROR_CODES.get(status, "INTERNAL_ERROR")
    return Answer(status, dumps({"error_code": code, "message": message}))


def _records(payload: Any, check_count: Callable[[int], None]) -> list[Any]:
    """The rows of an MLflow JSON body (too many refused before any row is built)."""
    if not isinstance(payload, dict):
        raise Refused(400, f"The input must be a JSON dictionary with exactly one of {list(FORMATS)}", "bad-shape")
    given = [k for k in FORMATS if k in payload]
    if len(given) != 1:
        raise Refused(
            400,
            f"The input must be a JSON dictionary with exactly one of {list(FORMATS)};"
            f" got {sorted(k for k in payload if k != 'params')}",
            "bad-shape",
        )
    key = given[0]
    data = payload[key]
    if key == "dataframe_split":
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("columns"), list)
            or not isinstance(data.get("data"), list)
        ):
            raise Refused(400, 'dataframe_split is {"columns": [...], "data": [[...], ...]}', "bad-shape")
        columns = data["columns"]
        check_count(len(data["data"]))
        rows = []
        for index, values in enumerate(data["data"]):
            if not isinstance(values, list) or len(values) != len(columns):
                raise Refused(
                    400, f"dataframe_split.data[{index}] must be a list of {len(columns)} values", "bad-shape"
                )
            rows.append(dict(zip(columns, values, strict=True)))
        return rows
    if key == "inputs" and isinstance(data, dict):
        lengths = {len(v) if isinstance(v, list) else -1 for v in data.values()}
        if len(lengths) != 1 or -1 in lengths:
            raise Refused(400, "inputs as columns is {column: [values], ...}, every column as long", "bad-shape")
        check_count(lengths.pop())
        return [dict(zip(data, values, strict=True)) for values in zip(*data.values(), strict=True)]
    if not isinstance(data, list):
        raise Refused(400, f"{key} must be a list of records ({{column: value}} objects)", "bad-shape")
    return data


def _csv_rows(body: bytes, target: Target, max_rows: int) -> list[dict[str, Any]]:
    """A CSV body's rows, its cells typed by the version's feature kinds (empty cells as null);
    reading stops at the row limit (413) and at blank lines past it."""
    try:
        text = body.decode()
    except UnicodeDecodeError as exc:
        raise Refused(400, f"Ensure that input is a valid UTF-8 encoded string. Error: {exc}", "bad-csv") from None
    reader = csv.reader(io.StringIO(text))
    blank = 0
    header: list[str] | None = None
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    numeric = {f.name for e in target.engines.values() for f in e.loaded.features if f.kind == "numeric"}
    try:
        for record in reader:
            if not record:  # a blank line, skipped as pandas skips it, but counted
                blank += 1
                if blank > max_rows:
                    raise Refused(413, f"the CSV body has more than {max_rows} blank lines", "too-large")
                continue
            if header is None:
                header = record
                continue
            if len(rows) + len(problems) >= max_rows:
                raise Refused(
                    413, f"the CSV body has more than {max_rows} rows (MODELBUS_SERVING_MAX_ROWS)", "too-large"
                )
            line = reader.line_num
            if len(record) > len(header):
                problems.append(f"line {line}: more values than the header's {len(header)} columns")
                continue
            row: dict[str, Any] = {}
            for column, cell in itertools.zip_longest(header, record):
                if cell is None or cell == "":
                    row[column] = None
                elif column in numeric:
                    try:
                        row[column] = float(cell)
                    except ValueError:
                        problems.append(f"line {line}, column {column}: {cell[:40]!r} is not a number")
                else:
                    row[column] = cell
            rows.append(row)
    except csv.Error as exc:
        raise Refused(400, f"the CSV body cannot be read: {exc}", "bad-csv") from None
    if problems:
        raise Refused(400, problems, "bad-csv")
    if header is None:
        raise Refused(400, "The CSV body is empty: a header row and at least one row are expected", "bad-csv")
    if not rows:
        raise Refused(400, "The CSV body has a header row and no rows", "bad-csv")
    return rows


def _content_type(headers: dict[str, str]) -> tuple[str, str | None]:
    """The MIME type, and what is wrong with the parameters if anything (MLflow's 415 cases)."""
    parts = [p.strip() for p in headers.get("content-type", "").split(";")]
    mime, parameters = parts[0].lower(), dict(p.partition("=")[::2] for p in parts[1:] if p)
    if parameters.get("charset", "utf-8").lower() != "utf-8":
        return mime, "The scoring server only supports UTF-8"
    if set(parameters) - {"charset"}:
        return mime, f"Unrecognized content type parameters: {', '.join(sorted(set(parameters) - {'charset'}))}"
    return mime, None


async def invocations(predictor: Predictor, name: str | None, body: bytes, headers: dict[str, str]) -> Answer:
    """Answer one MLflow scoring request (errors in MLflow's shape)."""
    mime, wrong = _content_type(headers)
    if wrong is None and mime not in ("application/json", "text/csv"):
        wrong = f"This predictor only supports the following content types: application/json, text/csv. Got {mime!r}."
    if wrong is not None:
        return Answer(415, wrong.encode(), media_type="text/plain")
    model = name or default_model(predictor)
    try:
        if model is None:
            served = sorted(predictor.host.live)
            raise Refused(
                404,
                f"this process serves {len(served)} models ({', '.join(served) or 'none'}): POST"
                " /v1/models/{name}/invocations, or set MODELBUS_SERVING_DEFAULT_MODEL",
                "unknown-model",
            )
        target = await predictor.target(model)
        limit = predictor.settings.serving_max_rows
        rows = await predictor.parse(
            body,
            target,
            lambda: (
                _csv_rows(body, target, limit)
                if mime == "text/csv"
                else _records(decode(body), predictor.check_row_count)
            ),
        )
        request_id = predictor.request_id(headers.get("x-request-id"))
        outcome = await predictor.serve(
            target, rows, request_id, single=len(rows) == 1, label=lambda i, f: f"row {i}, column {f}"
        )
        predictions = [a["prediction"] for a in outcome.answers]
        return Answer(200, dumps({"predictions": predictions}), {"x-request-id": request_id})
    except Refused as refused:
        predictor.count(refused, model or "-")
        return error(refused.status, str(refused))


def default_model(predictor: Predictor) -> str | None:
    """The model `POST /invocations` answers for: the setting's, or the only one served."""
    if predictor.settings.serving_default_model:
        return predictor.settings.serving_default_model
    live = list(predictor.host.live)
    return live[0] if len(live) == 1 else None
