"""The monitor's records and the interface of its store (services.monitor.store.SqlStore in
PostgreSQL, services.monitor.memory.MemoryStore in dictionaries): the views (specs, versions and
their reference profiles, live rollouts), open and closed windows, the label join, what each run
trained on and the dataset versions seen.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from shared.contract.events import ModelSpecApplied, ReferenceProfile
from shared.contract.spec import ModelSpec

if TYPE_CHECKING:
    from services.monitor.segments import Answers

# ---------------------------------------------------------------- views


@dataclass(frozen=True)
class Live:
    """A model's rollout as the last RolloutChanged left it."""

    rollout_id: str
    state: str
    candidate: int
    stable: int | None


@dataclass(frozen=True)
class Window:
    """A version's open window: how many rows it holds, served between when."""

    model: str
    version: int
    rows: int
    first_at: datetime | None
    last_at: datetime | None


@dataclass(frozen=True)
class ClosedWindow:
    """A closed window's results, as kept for the API and plots."""

    window_id: str
    model: str
    version: int
    started_at: datetime
    ended_at: datetime
    rows: int
    drifted_share: float | None
    dataset_drift: bool
    result: dict[str, Any]


@dataclass(frozen=True)
class Reference:
    """A version's reference: its profile, task and validation metrics."""

    task: str
    profile: ReferenceProfile
    metrics: dict[str, float]


# ---------------------------------------------------------------- windows


CHUNK_FORMAT = b"MBC1"  # a chunk: this, a 4-byte header length, a JSON header, the columns' bytes


def pack(columns: dict[str, np.ndarray[Any, Any]]) -> bytes:
    """A chunk's 1-D columns as bytes: a JSON header of (name, dtype, length), then each column's
    raw bytes (no pickled objects: strings are fixed-width unicode). Packing and unpacking cost a
    copy, not the zip container `.npz` would be."""
    header, parts = [], []
    for name, array in columns.items():
        if array.dtype.hasobject or array.ndim != 1:
            raise ValueError(f"column {name!r}: only 1-D arrays of fixed-size values are kept, not {array.dtype}")
        header.append((name, array.dtype.str, int(array.shape[0])))
        parts.append(np.ascontiguousarray(array).tobytes())
    head = json.dumps(header).encode()
    return b"".join([CHUNK_FORMAT, len(head).to_bytes(4, "little"), head, *parts])


def unpack(payload: bytes) -> dict[str, np.ndarray[Any, Any]]:
    """The columns of a chunk (read-only views of the payload)."""
    if payload[:4] != CHUNK_FORMAT:  # written by an earlier release, as .npz
        with np.load(io.BytesIO(payload), allow_pickle=False) as found:
            return {name: found[name] for name in found.files}
    size = int.from_bytes(payload[4:8], "little")
    offset = 8 + size
    columns = {}
    for name, dtype, length in json.loads(payload[8:offset]):
        kind = np.dtype(dtype)
        columns[name] = np.frombuffer(payload, dtype=kind, count=length, offset=offset)
        offset += kind.itemsize * length
    return columns


# ---------------------------------------------------------------- labels


Columns = dict[str, np.ndarray[Any, Any]]
Answer = tuple[str, int, str, str, float | None, datetime, str, str | None]


@dataclass(frozen=True)
class Trained:
    """What a run was trained on."""

    run_id: str
    dataset_version: str
    spec_revision: int


@dataclass(frozen=True)
class DatasetSeen:
    """A dataset version as DataArrived announced it."""

    dataset: str
    version: str
    producer: str
    uri: str
    format: str
    sha256: str | None
    arrived_at: datetime


@dataclass(frozen=True)
class Joined:
    """A served answer the label join reached: what it answered, the truth, when it was served."""

    version: int
    request_id: str
    role: str
    prediction: str
    label: str
    served_at: datetime


@dataclass(frozen=True)
class Met:
    """What one side of the label join met: the answers labelled, and how many labels met their
    answer for the first time (a label meets every answer of its request: the served one and a
    shadow copy)."""

    answers: list[Joined]
    labels: int


@dataclass(frozen=True)
class Parked:
    """Labels as they arrived: the answers they labelled at once, how many labels met an answer,
    how many wait for theirs, and how many repeat a request id already labelled."""

    met: Met
    waiting: int
    duplicated: int


LABEL_OUTCOMES = ("received", "joined", "duplicated", "unknown", "expired", "misdirected")
ANSWER_OUTCOMES = ("logged", "labelled", "expired")


@dataclass(frozen=True)
class Ledger:
    """Where every label and answer of a model went. Each label received is, at any moment, in
    exactly one place: joined to its answer, waiting for it (at most the label horizon), duplicated
    (its request was labelled already), unknown (its horizon passed and no answer with its request
    id was ever logged), expired (its answer was served longer than the horizon before the label
    came), or misdirected (its request id was answered for another model)."""

    labels: dict[str, int]
    answers: dict[str, int]
    waiting: int

    @classmethod
    def empty(cls) -> Ledger:
        return cls(dict.fromkeys(LABEL_OUTCOMES, 0), dict.fromkeys(ANSWER_OUTCOMES, 0), 0)

    def as_dict(self) -> dict[str, Any]:
        return {"labels": {**self.labels, "waiting": self.waiting}, "answers": dict(self.answers)}


@dataclass(frozen=True)
class FeedbackRow:
    """A labelled served row, with the features it was served for."""

    version: int
    features: dict[str, Any]
    label: str
    served_at: datetime
    label_batch: str | None


def realised(result: dict[str, Any], start: datetime, end: datetime, joined: list[Joined]) -> dict[str, Any]:
    """A closed window's result with the labelled answers served in it counted: `realised` holds
    the labelled rows, the right ones and their accuracy, next to the window's `estimated`."""
    inside = [j for j in joined if start <= j.served_at <= end]
    if not inside:
        return result
    before = result.get("realised") or {"rows": 0, "correct": 0}
    rows = int(before["rows"]) + len(inside)
    correct = int(before["correct"]) + sum(j.prediction == j.label for j in inside)
    return {**result, "realised": {"rows": rows, "correct": correct, "accuracy": correct / rows}}


class MonitorStore(Protocol):
    """What the monitor keeps (SqlStore, and its twin services.monitor.memory.MemoryStore)."""

    async def keep_spec(self, event: ModelSpecApplied) -> bool:
        """Keep the newest revision of a model's spec; False if an older one arrived late."""

    async def spec_of(self, model: str) -> ModelSpec | None:
        """The spec in force for a model, if any."""

    async def revision_of(self, model: str) -> tuple[int, ModelSpec] | None:
        """(revision, spec) in force for a model, if any."""

    async def keep_run(
        self, model: str, run_id: str, task: str, profile: ReferenceProfile, metrics: dict[str, float]
    ) -> None:
        """Keep a run's reference profile (the first one stands: a run is trained once)."""

    async def keep_version(self, model: str, version: int, run_id: str) -> None:
        """Link a version to its run."""

    async def reference_of(self, model: str, version: int) -> Reference | None:
        """The reference profile of a version, once both its registration and its training were seen."""

    async def keep_live(self, model: str, rollout_id: str, state: str, candidate: int, stable: int | None) -> None:
        """Remember the model's rollout as it stands."""

    async def live_of(self, model: str) -> Live | None:
        """The model's rollout as it stands, if it has one."""

    async def open_rows(self, model: str, version: int) -> int:
        """How many rows the version's open window holds."""

    async def add_chunk(
        self, model: str, version: int, columns: Columns, rows: int, first_at: datetime, last_at: datetime
    ) -> Window:
        """Add rows to the version's open window; returns the window."""

    async def take_chunks(self, model: str, version: int) -> list[Columns]:
        """Every chunk of the open window, oldest first, removed; the window is empty again."""

    async def aged_windows(self, now: datetime) -> list[tuple[str, int, float]]:
        """Open windows with rows, with their age in seconds: candidates for closing by time."""

    async def lock_window(self, model: str, version: int) -> Window | None:
        """The open window of a version, locked."""

    async def record_window(self, window: ClosedWindow) -> None:
        """Keep a closed window's results."""

    async def last_summary(self, model: str, version: int) -> dict[str, Any] | None:
        """The summary of a version's most recently closed window."""

    async def closed_windows(self, model: str, limit: int = 1000) -> list[ClosedWindow]:
        """A model's closed windows, oldest first (the newest `limit`)."""

    async def retrain_allowed(self, model: str, now: datetime, cooldown: float, reason: str) -> bool:
        """Whether a retrain may be requested now; if so, the request is recorded (the cooldown restarts)."""

    async def add_served(self, answers: Sequence[Answers]) -> None:
        """Keep served predictions (and shadow answers) for the label join (a batch per model)."""

    async def park_labels(
        self, model: str, truths: dict[str, tuple[str, str | None]], now: datetime, horizon: timedelta
    ) -> Parked:
        """Keep labels (request id -> (label, the id of the event that brought it)) for the horizon
        (a request id already labelled for the model is a duplicate) and attach the new ones to the
        answers served within the horizon."""

    async def meet_labels(self, answers: Sequence[Answers], now: datetime) -> dict[str, Met]:
        """Attach the labels that came before them to these answers (just kept, in the same
        transaction); what met, per model."""

    async def expire_labels(self, waited: datetime, kept: datetime) -> dict[str, dict[str, int]]:
        """Drop the labels still waiting that were received before `waited`, and the ones that met
        their answer received before `kept`; the ones that never met an answer, per model, by
        outcome (unknown, expired, misdirected)."""

    async def count(self, model: str, labels: dict[str, int], answers: dict[str, int]) -> None:
        """Add to the model's ledger."""

    async def ledger(self, model: str) -> Ledger:
        """The model's ledger (labels waiting counted now)."""

    async def ledgers(self) -> dict[str, Ledger]:
        """Every model's ledger."""

    async def labelled_between(self, model: str, version: int, start: datetime, end: datetime) -> list[Joined]:
        """A version's labelled answers (shadow ones too) served between start and end."""

    async def ever_labelled(self, model: str, version: int) -> bool:
        """Whether any answer of the version was labelled."""

    async def feedback(self, model: str, since: datetime, until: datetime, limit: int) -> list[FeedbackRow]:
        """Labelled answers (not shadow) kept with their features, served in (since, until], newest `limit`."""

    async def windows_between(self, model: str, start: datetime, end: datetime) -> list[str]:
        """Ids of the model's closed windows overlapping the span."""

    async def add_realised(self, model: str, version: int, joined: list[Joined]) -> None:
        """Count labelled answers into the closed windows they were served in (realised accuracy)."""

    async def keep_training(self, model: str, trained: Trained) -> None:
        """Keep what a run is trained on (from TrainingStarted or ModelTrained)."""

    async def training_of(self, model: str, version: int) -> Trained | None:
        """What a version was trained on, once its registration and its run were seen."""

    async def tried(self, model: str) -> frozenset[tuple[str, int]]:
        """(dataset version, spec revision) of every run started for the model."""

    async def keep_dataset(self, seen: DatasetSeen) -> None:
        """Keep a dataset version (the first announcement stands)."""

    async def latest_dataset(self, dataset: str) -> DatasetSeen | None:
        """The newest version of a dataset, by arrival."""

    async def labelled_pending(self, model: str, version: int) -> int:
        """Labelled predictions of a version not yet in a performance window."""

    async def take_labelled(self, model: str, version: int) -> list[tuple[str, str, float | None]]:
        """The labelled, not yet evaluated predictions of a version, marked evaluated."""

    async def forget_served(self, before: datetime) -> dict[str, int]:
        """Drop predictions older than the label horizon; how many were never labelled, per model."""
