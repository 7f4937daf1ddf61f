"""Production feedback as training data: labelled served rows (the features the monitor kept, joined
to LabelsArrived) become a dataset version, written as Parquet with its SHA-256 and announced as
DataArrived by producer `monitor`, with its lineage. The trainer validates it against the same
data contract as any dataset and trains on it.

`frame` and `mix` are pure; `FeedbackSink` reads the base dataset and writes the new one through
the artifact store (blocking I/O: run it on a thread).
"""

from __future__ import annotations

import hashlib
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pandas as pd

from services.monitor.store import DatasetSeen, FeedbackRow
from shared.contract.spec import ModelSpec
from shared.runtime.artifacts import ArtifactStore


def _parsed(values: list[str], regression: bool) -> pd.Series:
    """Labels travel as strings: numbers again where every one is a number (int before float)."""
    series = pd.Series(values, dtype="object")
    if regression:
        return pd.to_numeric(series, errors="coerce")
    for kind in ("int64", "float64"):
        try:
            return series.astype(kind)
        except (TypeError, ValueError):
            continue
    return series.astype(str)


def frame(spec: ModelSpec, rows: list[FeedbackRow]) -> pd.DataFrame:
    """The rows as a dataset: the spec's features as served, and its target from the labels."""
    names = [f.name for f in spec.features]
    data = {name: [row.features.get(name) for row in rows] for name in names}
    found = pd.DataFrame(data)
    found[spec.target] = _parsed([row.label for row in rows], spec.task == "regression").to_numpy()
    return found


def mix(feedback: pd.DataFrame, base: pd.DataFrame, share: float, *, seed: int) -> pd.DataFrame:
    """Feedback rows plus rows of the base dataset, so that the base makes up `share` of the result
    (as many as it has); the base's dtypes are kept where a column is in both."""
    if share <= 0 or base.empty:
        return feedback
    columns = list(feedback.columns)
    wanted = round(len(feedback) * share / (1 - share)) if share < 1 else len(base)
    drawn = base[[c for c in columns if c in base.columns]].sample(
        n=min(wanted, len(base)), random_state=seed, replace=False
    )
    for column in drawn.columns:
        try:
            feedback[column] = feedback[column].astype(drawn[column].dtype)
        except (TypeError, ValueError):
            pass
    return pd.concat([drawn, feedback], ignore_index=True)[columns]


@dataclass(frozen=True)
class Written:
    """A dataset written to the artifact store."""

    uri: str
    sha256: str
    size_bytes: int
    rows: int
    mixed_rows: int


class Sink(Protocol):
    """Where feedback datasets go (the artifact store, or a dictionary in tests)."""

    def read(self, seen: DatasetSeen) -> pd.DataFrame:
        """A dataset version's rows."""

    def write(self, key: str, data: pd.DataFrame) -> tuple[str, str, int]:
        """Write rows as Parquet under `key`: (uri, sha256, size)."""


def parquet(data: pd.DataFrame) -> bytes:
    """The rows as Parquet bytes (no index)."""
    buffer = io.BytesIO()
    data.to_parquet(buffer, index=False)
    return buffer.getvalue()


@dataclass(frozen=True)
class ArtifactSink:
    """Feedback datasets through the artifact store (S3 or file://), digests checked on read."""

    artifacts: ArtifactStore

    def read(self, seen: DatasetSeen) -> pd.DataFrame:
        """A dataset version's rows (CSV or Parquet)."""
        with tempfile.TemporaryDirectory(prefix="modelbus-feedback-") as folder:
            path = self.artifacts.get_file(seen.uri, Path(folder) / "data", sha256=seen.sha256)
            return pd.read_parquet(path) if seen.format == "parquet" else pd.read_csv(path)

    def write(self, key: str, data: pd.DataFrame) -> tuple[str, str, int]:
        """Write rows as Parquet under `key`: (uri, sha256, size)."""
        stored = self.artifacts.put_bytes(key, parquet(data))
        return stored.uri, stored.sha256, stored.size_bytes


@dataclass
class MemorySink:
    """Feedback datasets in a dictionary, for the handler tests."""

    files: dict[str, bytes]
    bases: dict[str, pd.DataFrame]

    def read(self, seen: DatasetSeen) -> pd.DataFrame:
        return self.bases.get(seen.version, pd.DataFrame())

    def write(self, key: str, data: pd.DataFrame) -> tuple[str, str, int]:
        payload = parquet(data)
        self.files[key] = payload
        return f"file:///memory/{key}", hashlib.sha256(payload).hexdigest(), len(payload)


def build(
    sink: Sink, spec: ModelSpec, rows: list[FeedbackRow], base: DatasetSeen | None, key: str, *, seed: int
) -> Written:
    """Write the feedback dataset (mixed with the base version as the spec asks): what was written."""
    assert spec.monitoring.feedback is not None
    data = frame(spec, rows)
    share = spec.monitoring.feedback.mix_with_latest
    mixed = 0
    if share > 0 and base is not None:
        before = len(data)
        data = mix(data, sink.read(base), share, seed=seed)
        mixed = len(data) - before
    uri, sha256, size = sink.write(key, data)
    return Written(uri, sha256, size, len(data), mixed)
