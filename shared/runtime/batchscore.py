"""Batch scoring: a file of rows (Parquet or CSV) scored by one loaded version, chunk by chunk.

The file is read in chunks of `chunk_rows` with pyarrow (never whole), each chunk's features are
checked column by column against the version's schema (a row that breaks it is reported with its
row number and reason, or fails the job, as asked; never skipped silently), the good rows are
predicted in one call per chunk (the ONNX graph when the version has one, else its pipeline),
and the chunk is written as one Parquet part: the input's columns asked to be kept (ids), a
`request_id` per row (`<job>-<row number>`, so labels can join later), the model, version,
prediction and, for a classifier, `probability_<class>` per class. A part is written under a
temporary name and renamed when complete, so a job killed mid-way resumes from its last finished
chunk: parts already there are counted, not scored again. A job that finishes writes `_SUCCESS.json`
with its totals and the SHA-256 of its parts in order.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from shared.runtime.features import MISSING, epoch_seconds
from shared.runtime.served import Loaded

CHUNK_ROWS = 100_000
SUCCESS = "_SUCCESS.json"
MAX_REPORTED = 1000  # bad rows listed in the result (all are counted; each part keeps its own)
OnBad = Literal["report", "fail"]


class BatchError(ValueError):
    """A job that cannot go on: an unreadable input, a feature missing from it, or a bad row when
    the job was asked to fail on one."""


@dataclass(frozen=True)
class BadRow:
    """A row the version's schema refuses: its number in the input (from 0) and why."""

    row: int
    reason: str


@dataclass(frozen=True)
class Progress:
    """How far a job is: chunks finished (resumed ones included) and rows read."""

    chunks: int
    rows: int
    scored: int
    bad: int
    resumed: bool  # this chunk was finished by an earlier attempt


@dataclass
class Scored:
    """What a finished job did."""

    rows: int = 0
    scored: int = 0
    bad: int = 0
    resumed_chunks: int = 0
    seconds: float = 0.0
    sha256: str = ""
    parts: list[str] = field(default_factory=list)  # one per chunk, in order
    bad_rows: list[BadRow] = field(default_factory=list)

    @property
    def chunks(self) -> int:
        """Chunks finished (resumed ones included)."""
        return len(self.parts)


def chunks_of(source: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The input's rows, `chunk_rows` at a time, as frames (Parquet or CSV, by suffix, streamed
    with pyarrow: the same chunks on every read, so a resumed job finds its parts' rows again)."""
    suffix = source.suffix.lower()
    try:
        if suffix == ".parquet":
            batches: Iterator[pa.RecordBatch] = pq.ParquetFile(source).iter_batches(batch_size=chunk_rows)
        elif suffix == ".csv":
            # An empty field is a missing value, as the trainer's reading of CSV (pandas) has it.
            batches = iter(pacsv.open_csv(source, convert_options=pacsv.ConvertOptions(strings_can_be_null=True)))
        else:
            raise BatchError(f"{source.name}: the input must be a .parquet or .csv file")
        held: list[pa.RecordBatch] = []
        rows = 0
        for batch in batches:
            held.append(batch)
            rows += batch.num_rows
            while rows >= chunk_rows:
                table = pa.Table.from_batches(held)
                yield table.slice(0, chunk_rows).to_pandas()
                rest = table.slice(chunk_rows)
                held, rows = rest.to_batches(), rest.num_rows
        if rows:
            yield pa.Table.from_batches(held).to_pandas()
    except (OSError, pa.ArrowInvalid) as exc:
        raise BatchError(f"{source.name} cannot be read as {suffix.lstrip('.')}: {exc}") from None


def total_rows(source: Path) -> int | None:
    """The input's rows when its format says so without reading it (Parquet), else None."""
    if source.suffix.lower() != ".parquet":
        return None
    try:
        return int(pq.ParquetFile(source).metadata.num_rows)
    except (OSError, pa.ArrowInvalid):
        return None


def checked(loaded: Loaded, chunk: pd.DataFrame, first: int) -> tuple[pd.DataFrame, np.ndarray[Any, Any], list[BadRow]]:
    """The chunk's features as the version takes them (numbers as float64, categories as strings,
    instants as epoch seconds), which of its rows are good, and the bad ones with their reasons."""
    missing = [f.name for f in loaded.features if f.name not in chunk.columns]
    if missing:
        raise BatchError(f"the input has no column {', '.join(map(repr, missing))} (the version's features)")
    good = np.ones(len(chunk), dtype=bool)
    reasons: dict[int, list[str]] = {}
    prepared: dict[str, Any] = {}

    def refuse(rows: np.ndarray[Any, Any], reason: str) -> None:
        for index in np.flatnonzero(rows):
            reasons.setdefault(int(index), []).append(reason)
        good[rows] = False

    for feature in loaded.features:
        column = chunk[feature.name]
        absent = column.isna().to_numpy(dtype=bool)
        if feature.kind == "categorical":
            values = column.astype(object).where(~absent, MISSING)
            text = values.map(lambda v: v if isinstance(v, str) else str(v))
            prepared[feature.name] = text.to_numpy(dtype=object)
            if not feature.nullable:
                refuse(absent, f"{feature.name}: a value is required (the model was trained without missing values)")
            continue
        numbers = (
            epoch_seconds(column)
            if feature.kind == "datetime"
            else pd.to_numeric(column, errors="coerce").astype("float64")
        )
        array = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
        unreadable = np.isnan(array) & ~absent
        refuse(unreadable, f"{feature.name}: expected a {'number' if feature.kind == 'numeric' else 'date-time'}")
        refuse(np.isinf(array), f"{feature.name}: expected a finite number")
        if not feature.nullable:
            refuse(absent, f"{feature.name}: a value is required (the model was trained without missing values)")
        prepared[feature.name] = array
    frame = pd.DataFrame(prepared)
    bad = [BadRow(first + index, "; ".join(found)) for index, found in sorted(reasons.items())]
    return frame[good].reset_index(drop=True), good, bad


def predicted(loaded: Loaded, frame: pd.DataFrame) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any] | None]:
    """One call for a chunk's good rows: labels (or values) and, for a classifier, probabilities."""
    if not len(frame):
        return np.array([]), None
    model = loaded.session
    if loaded.runtime == "onnx":
        return model.run_frame(frame)  # type: ignore[no-any-return]
    labels = np.asarray(model.predict(frame))
    if loaded.task == "classification" and hasattr(model, "predict_proba"):
        return labels, np.asarray(model.predict_proba(frame), dtype=np.float64)
    return labels, None


def part_name(index: int) -> str:
    """The file of chunk `index`."""
    return f"part-{index:05d}.parquet"


def score_file(
    loaded: Loaded,
    source: Path,
    out: Path,
    *,
    job: str,
    chunk_rows: int = CHUNK_ROWS,
    keep: Sequence[str] = (),
    on_bad: OnBad = "report",
    progress: Callable[[Progress], None] | None = None,
) -> Scored:
    """Score `source` into parts under `out`, resuming after the parts already there."""
    began = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    found = Scored()
    names = [str(c) for c in (loaded.classes or [])]
    for index, chunk in enumerate(chunks_of(source, chunk_rows)):
        first = found.rows
        part = out / part_name(index)
        resumed = part.exists()
        if resumed:
            meta = pq.read_metadata(part).metadata or {}
            done = json.loads(meta.get(b"modelbus", b"{}"))
            _count(found, len(chunk), int(done.get("scored", 0)), int(done.get("bad", 0)), part, resumed=True)
            found.bad_rows.extend(BadRow(**b) for b in done.get("bad_rows", [])[: MAX_REPORTED - len(found.bad_rows)])
        else:
            lost = [c for c in keep if c not in chunk.columns]
            if lost:
                raise BatchError(f"the input has no column {', '.join(map(repr, lost))} to keep")
            frame, good, bad = checked(loaded, chunk, first)
            if bad and on_bad == "fail":
                raise BatchError(f"row {bad[0].row}: {bad[0].reason} (the job fails on a bad row)")
            labels, probabilities = predicted(loaded, frame)
            table = _table(loaded, chunk, good, labels, probabilities, names, keep, job, first)
            shown = [asdict(b) for b in bad[:MAX_REPORTED]]
            meta = {"scored": int(good.sum()), "bad": len(bad), "first_row": first, "bad_rows": shown}
            table = table.replace_schema_metadata({"modelbus": json.dumps(meta)})
            partial = part.with_suffix(".parquet.partial")
            pq.write_table(table, partial)
            partial.replace(part)
            _count(found, len(chunk), int(good.sum()), len(bad), part, resumed=False)
            found.bad_rows.extend(bad[: MAX_REPORTED - len(found.bad_rows)])
        if progress is not None:
            progress(Progress(found.chunks, found.rows, found.scored, found.bad, resumed))
    found.seconds = time.perf_counter() - began
    digest = hashlib.sha256()
    for name in found.parts:
        digest.update((out / name).read_bytes())
    found.sha256 = digest.hexdigest()
    summary = {k: v for k, v in asdict(found).items() if k != "bad_rows"} | {"chunks": found.chunks}
    (out / SUCCESS).write_text(json.dumps({**summary, "bad_rows": [asdict(b) for b in found.bad_rows]}, indent=2))
    return found


def _count(found: Scored, rows: int, scored: int, bad: int, part: Path, *, resumed: bool) -> None:
    found.rows += rows
    found.scored += scored
    found.bad += bad
    found.resumed_chunks += int(resumed)
    found.parts.append(part.name)


def _table(
    loaded: Loaded,
    chunk: pd.DataFrame,
    good: np.ndarray[Any, Any],
    labels: np.ndarray[Any, Any],
    probabilities: np.ndarray[Any, Any] | None,
    names: list[str],
    keep: Sequence[str],
    job: str,
    first: int,
) -> pa.Table:
    rows = np.flatnonzero(good) + first
    columns: dict[str, Any] = {name: chunk[name].to_numpy()[good] for name in keep}
    numbers = pc.cast(pa.array(rows, type=pa.int64()), pa.string())
    columns["request_id"] = pc.binary_join_element_wise(f"{job}-", numbers, "")
    columns["model"] = np.full(len(rows), loaded.model, dtype=object)
    columns["version"] = np.full(len(rows), loaded.version, dtype=np.int64)
    columns["prediction"] = labels
    if probabilities is not None:
        for j, name in enumerate(names):
            columns[f"probability_{name}"] = probabilities[:, j] if len(rows) else np.array([], dtype=np.float64)
    elif loaded.task == "classification" and names and not len(rows):
        for name in names:
            columns[f"probability_{name}"] = np.array([], dtype=np.float64)
    return pa.table(columns)
