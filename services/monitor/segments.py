"""The label join's answers, kept a segment at a time.

Answers are the busiest thing the monitor keeps (one per prediction served) and the label join's
only need of them is to find one again by its request id when its label comes. So they are not
kept a row and an index entry each: a poll's answers of one model are one segment, column by
column (`pack`), beside the 64-bit digests of their request ids, sorted. A label finds its answer
by searching the digests of the model's segments, newest first (labels mostly come soon after
their answers), and then reading the one segment that holds it; the request id itself is compared
there, so two ids with one digest never join each other's labels.

Digests are FNV-1a over the ids' code points, computed a column of characters at a time for a
whole poll (numpy), so that ids hash the same in every process and every batch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from services.monitor.records import Answer, Joined, pack, unpack
from shared.contract.events import PredictionsLogged

FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
Array = np.ndarray[Any, Any]


def digests(request_ids: Array) -> Array:
    """Each request id's 64-bit FNV-1a digest over its code points (uint64)."""
    ids = np.ascontiguousarray(request_ids, dtype=np.str_)
    digest = np.full(ids.shape[0], FNV_OFFSET, dtype=np.uint64)
    if ids.shape[0] == 0:
        return digest
    points = ids.view(np.uint32).reshape(ids.shape[0], -1)
    for column in points.T:  # a character position at a time, for every id at once
        digest = np.where(column != 0, (digest ^ column.astype(np.uint64)) * FNV_PRIME, digest)
    return digest


@dataclass(frozen=True)
class Answers:
    """One model's answers, column by column: what the label join keeps of each (the score is the
    probability of the positive class, NaN when there is none; served_at in microseconds since the
    epoch; features as JSON, kept only when the spec turns feedback into training data)."""

    model: str
    request_id: Array
    version: Array
    role: Array
    prediction: Array
    score: Array
    served_at: Array
    features: Array | None = None

    def __len__(self) -> int:
        return int(self.request_id.shape[0])

    @classmethod
    def of(cls, answers: Sequence[Answer]) -> list[Answers]:
        """Answers given as rows (model, version, request id, prediction, score, served at, role,
        features as JSON or None), one batch per model."""
        by_model: dict[str, list[Answer]] = {}
        for answer in answers:
            by_model.setdefault(answer[0], []).append(answer)
        found = []
        for model, rows in by_model.items():
            features = [r[7] for r in rows]
            found.append(
                cls(
                    model,
                    np.array([r[2] for r in rows], dtype=np.str_),
                    np.array([r[1] for r in rows], dtype=np.int64),
                    np.array([r[6] for r in rows], dtype=np.str_),
                    np.array([r[3] for r in rows], dtype=np.str_),
                    np.array([math.nan if r[4] is None else r[4] for r in rows], dtype=np.float64),
                    np.array([micros(r[5]) for r in rows], dtype=np.int64),
                    None if all(f is None for f in features) else np.array([f or "" for f in features], np.str_),
                )
            )
        return found

    @classmethod
    def of_events(cls, events: Iterable[tuple[PredictionsLogged, bool, Array]]) -> list[Answers]:
        """The answers of a poll's PredictionsLogged (each with whether its features are kept, and
        its rows' instants in seconds since the epoch), one batch per model."""
        by_model: dict[str, list[Answers]] = {}
        for event, keep, seconds in events:
            by_model.setdefault(event.model, []).append(cls._of_event(event, keep, seconds))
        return [parts[0] if len(parts) == 1 else concatenate(parts) for parts in by_model.values()]

    @classmethod
    def _of_event(cls, event: PredictionsLogged, keep: bool, seconds: Array) -> Answers:
        rows = event.rows
        if event.probabilities:
            positive = event.probabilities[max(event.probabilities)]
            score = np.array([math.nan if s is None else s for s in positive], dtype=np.float64)
        else:
            score = np.full(rows, math.nan)
        features = None
        if keep:
            names = list(event.features)
            columns = [event.features[name] for name in names]
            cells = zip(*columns, strict=True) if columns else iter([()] * rows)
            features = np.array(
                [json.dumps({n: _finite(v) for n, v in zip(names, row, strict=True)}) for row in cells], np.str_
            )
        return cls(
            event.model,
            np.array(event.request_id, dtype=np.str_),
            np.array(event.model_version, dtype=np.int64),
            np.array(event.role, dtype=np.str_),
            np.array([str(p) for p in event.prediction], dtype=np.str_),
            score,
            np.rint(seconds * 1e6).astype(np.int64),
            features,
        )

    def take(self, index: Array) -> Answers:
        """The answers at these positions."""
        return Answers(
            self.model,
            self.request_id[index],
            self.version[index],
            self.role[index],
            self.prediction[index],
            self.score[index],
            self.served_at[index],
            None if self.features is None else self.features[index],
        )

    def rows(self) -> list[Answer]:
        """The answers as rows (model, version, request id, prediction, score, served at, role,
        features as JSON or None)."""
        return [
            (
                self.model,
                int(self.version[i]),
                str(self.request_id[i]),
                str(self.prediction[i]),
                None if math.isnan(self.score[i]) else float(self.score[i]),
                instant(int(self.served_at[i])),
                str(self.role[i]),
                None if self.features is None or not self.features[i] else str(self.features[i]),
            )
            for i in range(len(self))
        ]

    def joined(self, labels: Sequence[str]) -> list[Joined]:
        """The answers with their labels (one per answer, in order)."""
        return [
            Joined(int(v), str(r), str(role), str(p), label, instant(int(at)))
            for v, r, role, p, label, at in zip(
                self.version, self.request_id, self.role, self.prediction, labels, self.served_at, strict=True
            )
        ]


def concatenate(parts: Sequence[Answers]) -> Answers:
    """Several batches of one model's answers as one."""
    features = None
    if any(p.features is not None for p in parts):
        features = np.concatenate([p.features if p.features is not None else np.full(len(p), "") for p in parts])
    return Answers(
        parts[0].model,
        np.concatenate([p.request_id for p in parts]),
        np.concatenate([p.version for p in parts]),
        np.concatenate([p.role for p in parts]),
        np.concatenate([p.prediction for p in parts]),
        np.concatenate([p.score for p in parts]),
        np.concatenate([p.served_at for p in parts]),
        features,
    )


@dataclass(frozen=True)
class Segment:
    """Answers as kept: their digests sorted (bytes of uint64) and the answers' columns in that
    order (`pack`), served between two instants."""

    digests: bytes
    payload: bytes
    rows: int
    served_from: datetime
    served_to: datetime


def segment(answers: Answers) -> Segment:
    """One model's answers as a segment."""
    digest = digests(answers.request_id)
    order = np.argsort(digest, kind="stable")
    kept = answers.take(order)
    columns = {
        "request_id": kept.request_id,
        "version": kept.version,
        "role": kept.role,
        "prediction": kept.prediction,
        "score": kept.score,
        "served_at": kept.served_at,
    }
    if kept.features is not None:
        columns["features"] = kept.features
    return Segment(
        digest[order].tobytes(),
        pack(columns),
        len(answers),
        instant(int(answers.served_at.min())),
        instant(int(answers.served_at.max())),
    )


def answers_of(model: str, payload: bytes) -> Answers:
    """A segment's answers (in digest order)."""
    columns = unpack(payload)
    return Answers(
        model,
        columns["request_id"],
        columns["version"],
        columns["role"],
        columns["prediction"],
        columns["score"],
        columns["served_at"],
        columns.get("features"),
    )


def find(sorted_digests: Array, wanted: Array) -> tuple[Array, Array]:
    """Where the wanted digests are in a segment's sorted ones: (the wanted found, as a mask over
    `wanted`; the positions of every answer with one of them, duplicates included)."""
    if sorted_digests.shape[0] == 0 or wanted.shape[0] == 0:
        return np.zeros(wanted.shape[0], bool), np.zeros(0, np.int64)
    left = np.searchsorted(sorted_digests, wanted, side="left")
    right = np.searchsorted(sorted_digests, wanted, side="right")
    hit = right > left
    if not hit.any():
        return hit, np.zeros(0, np.int64)
    positions = np.concatenate([np.arange(a, b) for a, b in zip(left[hit], right[hit], strict=True)])
    return hit, positions


def micros(at: datetime) -> int:
    """An instant as microseconds since the epoch."""
    delta = at - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def instant(microseconds: int) -> datetime:
    """Microseconds since the epoch as an instant (UTC)."""
    return EPOCH + timedelta(microseconds=microseconds)


def _finite(value: Any) -> Any:
    """A JSON-safe cell: NaN and infinities are missing."""
    return None if isinstance(value, float) and not math.isfinite(value) else value
