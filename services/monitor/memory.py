"""The monitor's store in dictionaries: the twin of SqlStore for the handler tests (one contract
test runs on both)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from services.monitor.records import (
    ClosedWindow,
    Columns,
    DatasetSeen,
    FeedbackRow,
    Joined,
    Ledger,
    Live,
    Met,
    Parked,
    Reference,
    Trained,
    Window,
    realised,
)
from services.monitor.segments import Answers
from shared.contract.events import ReferenceProfile
from shared.runtime.memory import MemorySpecs


@dataclass
class Served:
    """An answer kept for the label join."""

    model: str
    version: int
    request_id: str
    prediction: str
    score: float | None
    served_at: datetime
    role: str = "stable"
    features: str | None = None
    label: str | None = None
    evaluated: bool = False
    label_batch: str | None = None


@dataclass
class KeptLabel:
    """A label kept for the horizon: its truth, the event that brought it, when, and when it first
    met an answer (None: still waiting)."""

    label: str
    batch: str | None
    received_at: datetime
    joined_at: datetime | None = None


@dataclass
class MemoryStore(MemorySpecs):
    """What the monitor keeps, in memory."""

    runs: dict[tuple[str, str], Reference] = field(default_factory=dict)
    versions: dict[tuple[str, int], str] = field(default_factory=dict)
    live: dict[str, Live] = field(default_factory=dict)
    windows: dict[tuple[str, int], Window] = field(default_factory=dict)
    chunks: dict[tuple[str, int], list[Columns]] = field(default_factory=dict)
    closed: list[ClosedWindow] = field(default_factory=list)
    retrains: dict[str, tuple[datetime, str, int]] = field(default_factory=dict)
    served: list[Served] = field(default_factory=list)
    trainings: dict[tuple[str, str], Trained] = field(default_factory=dict)
    datasets: dict[tuple[str, str], DatasetSeen] = field(default_factory=dict)
    labels: dict[tuple[str, str], KeptLabel] = field(default_factory=dict)
    counts: dict[str, Ledger] = field(default_factory=dict)

    async def keep_run(
        self, model: str, run_id: str, task: str, profile: ReferenceProfile, metrics: dict[str, float]
    ) -> None:
        """Keep a run's reference profile (the first one stands: a run is trained once)."""
        self.runs.setdefault((model, run_id), Reference(task, profile, dict(metrics)))

    async def keep_version(self, model: str, version: int, run_id: str) -> None:
        """Link a version to its run."""
        self.versions.setdefault((model, version), run_id)

    async def reference_of(self, model: str, version: int) -> Reference | None:
        """The reference profile of a version, once both its registration and its training were seen."""
        run = self.versions.get((model, version))
        return self.runs.get((model, run)) if run is not None else None

    async def keep_live(self, model: str, rollout_id: str, state: str, candidate: int, stable: int | None) -> None:
        """Remember the model's rollout as it stands."""
        self.live[model] = Live(rollout_id, state, candidate, stable)

    async def live_of(self, model: str) -> Live | None:
        """The model's rollout as it stands, if it has one."""
        return self.live.get(model)

    async def open_rows(self, model: str, version: int) -> int:
        """How many rows the version's open window holds."""
        window = self.windows.get((model, version))
        return window.rows if window is not None else 0

    async def add_chunk(
        self, model: str, version: int, columns: Columns, rows: int, first_at: datetime, last_at: datetime
    ) -> Window:
        """Add rows to the version's open window; returns the window."""
        held = self.windows.get((model, version), Window(model, version, 0, None, None))
        window = Window(
            model,
            version,
            held.rows + rows,
            min(held.first_at or first_at, first_at),
            max(held.last_at or last_at, last_at),
        )
        self.windows[(model, version)] = window
        self.chunks.setdefault((model, version), []).append({k: v.copy() for k, v in columns.items()})
        return window

    async def take_chunks(self, model: str, version: int) -> list[Columns]:
        """Every chunk of the open window, oldest first, removed; the window is empty again."""
        if (model, version) in self.windows:
            self.windows[(model, version)] = Window(model, version, 0, None, None)
        return self.chunks.pop((model, version), [])

    async def aged_windows(self, now: datetime) -> list[tuple[str, int, float]]:
        """Open windows with rows, with their age in seconds: candidates for closing by time."""
        return [
            (w.model, w.version, (now - w.first_at).total_seconds())
            for w in self.windows.values()
            if w.rows > 0 and w.first_at is not None
        ]

    async def lock_window(self, model: str, version: int) -> Window | None:
        """The open window of a version."""
        return self.windows.get((model, version))

    async def record_window(self, window: ClosedWindow) -> None:
        """Keep a closed window's results."""
        self.closed.append(dataclasses.replace(window))

    async def last_summary(self, model: str, version: int) -> dict[str, Any] | None:
        """The summary of a version's most recently closed window."""
        for window in reversed(self.closed):
            if (window.model, window.version) == (model, version):
                summary = window.result.get("summary")
                return summary if isinstance(summary, dict) else None
        return None

    async def closed_windows(self, model: str, limit: int = 1000) -> list[ClosedWindow]:
        """A model's closed windows, oldest first (the newest `limit`)."""
        found = sorted((w for w in self.closed if w.model == model), key=lambda w: w.started_at)
        return found[-limit:]

    async def retrain_allowed(self, model: str, now: datetime, cooldown: float, reason: str) -> bool:
        """Whether a retrain may be requested now; if so, the request is recorded (the cooldown restarts)."""
        last = self.retrains.get(model)
        if last is not None and (now - last[0]).total_seconds() < cooldown:
            self.retrains[model] = (last[0], last[1], last[2] + 1)
            return False
        self.retrains[model] = (now, reason, last[2] if last else 0)
        return True

    async def add_served(self, answers: Sequence[Answers]) -> None:
        """Keep served predictions (and shadow answers) for the label join (a batch per model)."""
        self.served.extend(Served(*record) for batch in answers for record in batch.rows())

    def _labelled(self) -> set[tuple[str, str, str]]:
        """(model, request id, role) of every labelled answer: an answer of each is labelled once."""
        return {(a.model, a.request_id, a.role) for a in self.served if a.label is not None}

    async def park_labels(
        self, model: str, truths: dict[str, tuple[str, str | None]], now: datetime, horizon: timedelta
    ) -> Parked:
        """Keep labels (request id -> (label, the id of the event that brought it)) for the horizon
        (a request id already labelled for the model is a duplicate) and attach the new ones to the
        answers served within the horizon."""
        fresh = {r: t for r, t in truths.items() if (model, r) not in self.labels}
        for request_id, (given, batch) in fresh.items():
            self.labels[model, request_id] = KeptLabel(given, batch, now)
        joined, labelled = [], self._labelled()
        for answer in self.served:
            truth = fresh.get(answer.request_id)
            key = (answer.model, answer.request_id, answer.role)
            if (
                answer.model == model
                and truth is not None
                and answer.label is None
                and key not in labelled
                and answer.served_at >= now - horizon
            ):
                answer.label, answer.label_batch = truth
                labelled.add(key)
                joined.append(_joined(answer))
        met = {j.request_id for j in joined}
        for request_id in met:
            self.labels[model, request_id].joined_at = now
        return Parked(Met(joined, len(met)), len(fresh) - len(met), len(truths) - len(fresh))

    async def meet_labels(self, answers: Sequence[Answers], now: datetime) -> dict[str, Met]:
        """Attach the labels that came before them to these answers (just kept, in the same
        transaction); what met, per model."""
        asked = {(batch.model, r) for batch in answers for r in batch.request_id.tolist()}
        joined: dict[str, list[Joined]] = {}
        first: dict[str, int] = {}
        labelled = self._labelled()
        for answer in self.served:
            kept = self.labels.get((answer.model, answer.request_id))
            key = (answer.model, answer.request_id, answer.role)
            if kept is None or answer.label is not None or (answer.model, answer.request_id) not in asked:
                continue
            if key in labelled:
                continue
            labelled.add(key)
            answer.label, answer.label_batch = kept.label, kept.batch
            joined.setdefault(answer.model, []).append(_joined(answer))
            if kept.joined_at is None:
                kept.joined_at = now
                first[answer.model] = first.get(answer.model, 0) + 1
        return {m: Met(j, first.get(m, 0)) for m, j in sorted(joined.items())}

    async def expire_labels(self, waited: datetime, kept: datetime) -> dict[str, dict[str, int]]:
        """Drop the labels still waiting that were received before `waited`, and the ones that met
        their answer received before `kept`; the ones that never met an answer, per model, by
        outcome (unknown, expired, misdirected)."""
        outcomes: dict[str, dict[str, int]] = {}
        for (model, request_id), label in list(self.labels.items()):
            if label.received_at >= (waited if label.joined_at is None else kept):
                continue
            del self.labels[model, request_id]
            if label.joined_at is not None:
                continue
            answered = {a.model for a in self.served if a.request_id == request_id}
            outcome = "expired" if model in answered else "misdirected" if answered else "unknown"
            counted = outcomes.setdefault(model, {})
            counted[outcome] = counted.get(outcome, 0) + 1
        return outcomes

    async def count(self, model: str, labels: dict[str, int], answers: dict[str, int]) -> None:
        """Add to the model's ledger."""
        ledger = self.counts.get(model) or Ledger.empty()
        self.counts[model] = Ledger(
            {k: v + labels.get(k, 0) for k, v in ledger.labels.items()},
            {k: v + answers.get(k, 0) for k, v in ledger.answers.items()},
            0,
        )

    async def ledger(self, model: str) -> Ledger:
        """The model's ledger (labels waiting counted now)."""
        ledger = self.counts.get(model) or Ledger.empty()
        waiting = sum(1 for (m, _), kept in self.labels.items() if m == model and kept.joined_at is None)
        return Ledger(dict(ledger.labels), dict(ledger.answers), waiting)

    async def ledgers(self) -> dict[str, Ledger]:
        """Every model's ledger."""
        return {model: await self.ledger(model) for model in sorted({*self.counts, *(m for m, _ in self.labels)})}

    async def labelled_between(self, model: str, version: int, start: datetime, end: datetime) -> list[Joined]:
        """A version's labelled answers (shadow ones too) served between start and end."""
        return [
            _joined(a)
            for a in self.served
            if (a.model, a.version) == (model, version) and a.label is not None and start <= a.served_at <= end
        ]

    async def ever_labelled(self, model: str, version: int) -> bool:
        """Whether any answer of the version was labelled."""
        return any((a.model, a.version) == (model, version) and a.label is not None for a in self.served)

    async def feedback(self, model: str, since: datetime, until: datetime, limit: int) -> list[FeedbackRow]:
        """Labelled answers (not shadow) kept with their features, served in (since, until], newest `limit`."""
        found = [
            a
            for a in self.served
            if a.model == model
            and a.label is not None
            and a.features is not None
            and a.role != "shadow"
            and since < a.served_at <= until
        ]
        found.sort(key=lambda a: a.served_at, reverse=True)
        return [
            FeedbackRow(a.version, json.loads(a.features or "{}"), str(a.label), a.served_at, a.label_batch)
            for a in found[:limit]
        ]

    async def windows_between(self, model: str, start: datetime, end: datetime) -> list[str]:
        """Ids of the model's closed windows overlapping the span."""
        found = [w for w in self.closed if w.model == model and w.started_at <= end and w.ended_at >= start]
        return [w.window_id for w in sorted(found, key=lambda w: w.started_at)]

    async def add_realised(self, model: str, version: int, joined: list[Joined]) -> None:
        """Count labelled answers into the closed windows they were served in (realised accuracy)."""
        answered = [j for j in joined if j.role != "shadow"]
        for i, window in enumerate(self.closed):
            if (window.model, window.version) == (model, version):
                counted = realised(window.result, window.started_at, window.ended_at, answered)
                self.closed[i] = dataclasses.replace(window, result=counted)

    async def keep_training(self, model: str, trained: Trained) -> None:
        """Keep what a run is trained on (from TrainingStarted or ModelTrained)."""
        self.trainings.setdefault((model, trained.run_id), trained)

    async def training_of(self, model: str, version: int) -> Trained | None:
        """What a version was trained on, once its registration and its run were seen."""
        run = self.versions.get((model, version))
        return self.trainings.get((model, run)) if run is not None else None

    async def tried(self, model: str) -> frozenset[tuple[str, int]]:
        """(dataset version, spec revision) of every run started for the model."""
        return frozenset((t.dataset_version, t.spec_revision) for (m, _), t in self.trainings.items() if m == model)

    async def keep_dataset(self, seen: DatasetSeen) -> None:
        """Keep a dataset version (the first announcement stands)."""
        self.datasets.setdefault((seen.dataset, seen.version), seen)

    async def latest_dataset(self, dataset: str) -> DatasetSeen | None:
        """The newest version of a dataset, by arrival."""
        found = [d for (name, _), d in self.datasets.items() if name == dataset]
        return max(found, key=lambda d: d.arrived_at) if found else None

    def _unjudged(self, model: str, version: int) -> list[Served]:
        return [
            a
            for a in self.served
            if (a.model, a.version) == (model, version)
            and a.label is not None
            and not a.evaluated
            and a.role != "shadow"
        ]

    async def labelled_pending(self, model: str, version: int) -> int:
        """Labelled predictions of a version not yet in a performance window."""
        return len(self._unjudged(model, version))

    async def take_labelled(self, model: str, version: int) -> list[tuple[str, str, float | None]]:
        """The labelled, not yet evaluated predictions of a version, marked evaluated."""
        taken = self._unjudged(model, version)
        for answer in taken:
            answer.evaluated = True
        return [(str(a.label), a.prediction, a.score) for a in taken]

    async def forget_served(self, before: datetime) -> dict[str, int]:
        """Drop predictions older than the label horizon; how many were never labelled, per model."""
        unlabelled: dict[str, int] = {}
        for answer in self.served:
            if answer.served_at < before and answer.label is None:
                unlabelled[answer.model] = unlabelled.get(answer.model, 0) + 1
        self.served = [a for a in self.served if a.served_at >= before]
        return unlabelled


def _joined(answer: Served) -> Joined:
    label = str(answer.label)
    return Joined(answer.version, answer.request_id, answer.role, answer.prediction, label, answer.served_at)
