"""The monitor's store: its views (specs, versions and their reference profiles, live rollouts),
the open windows' rows, every closed window's results, and when each model last asked for a retrain.

An open window lives in PostgreSQL, not in memory: the PredictionsLogged of a poll add chunks (their
rows, column by column, see `pack`) in the transaction that claims the events, so a monitor that
dies loses nothing and counts nothing twice; a window is read back once, when it closes.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import numpy as np
from sqlalchemy import (
    delete,
    func,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from services.monitor import segments
from services.monitor.records import (
    ANSWER_OUTCOMES,
    LABEL_OUTCOMES,
    ClosedWindow,
    DatasetSeen,
    FeedbackRow,
    Joined,
    Ledger,
    Live,
    Met,
    MonitorStore,
    Parked,
    Reference,
    Trained,
    Window,
    pack,
    realised,
    unpack,
)
from services.monitor.segments import Answers, digests, segment
from services.monitor.tables import (
    SPECS,
    AnswerSegmentRow,
    ChunkRow,
    DatasetRow,
    LabelledRow,
    LabelRow,
    LedgerRow,
    LiveRow,
    OpenWindow,
    RetrainRow,
    RunRow,
    TrainingRow,
    VersionRow,
    WindowRow,
)
from shared.contract.events import ReferenceProfile
from shared.runtime.specview import SpecView, SqlSpecs

LEDGER_COLUMNS = [f"labels_{k}" for k in LABEL_OUTCOMES] + [f"answers_{k}" for k in ANSWER_OUTCOMES]
LABELLED_COLUMNS = (
    "request_id",
    "role",
    "version",
    "prediction",
    "score",
    "served_at",
    "segment",
    "label",
    "features",
    "label_batch",
)
LOCATE_PAGE = 256  # segments listed per query when labels look for their answers
DIGEST_CACHE_BYTES = 256 * 1024 * 1024  # segments' digests kept in the process (8 bytes an answer)


Segment = tuple[str, int]  # (the database, the segment's id)


class DigestCache:
    """Segments' sorted digests by database and segment id, the most recently used up to `limit`
    bytes. A segment never changes once written, so what is cached stays true; one that is gone is
    simply never asked for again."""

    def __init__(self, limit: int) -> None:
        self.limit, self.size = limit, 0
        self.kept: OrderedDict[Segment, np.ndarray[Any, Any]] = OrderedDict()

    def get(self, segment_id: Segment) -> np.ndarray[Any, Any] | None:
        found = self.kept.get(segment_id)
        if found is not None:
            self.kept.move_to_end(segment_id)
        return found

    def put(self, segment_id: Segment, sorted_digests: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        if segment_id not in self.kept:
            self.kept[segment_id] = sorted_digests
            self.size += sorted_digests.nbytes
            while self.size > self.limit and len(self.kept) > 1:
                _, dropped = self.kept.popitem(last=False)
                self.size -= dropped.nbytes
        return sorted_digests


DIGESTS = DigestCache(DIGEST_CACHE_BYTES)

__all__ = [
    "ClosedWindow",
    "DatasetSeen",
    "FeedbackRow",
    "Joined",
    "Live",
    "MonitorStore",
    "Reference",
    "SqlStore",
    "Trained",
    "Window",
]


@dataclass(frozen=True)
class SqlStore(SqlSpecs):
    """The tables, in the transaction of `session`."""

    specs: ClassVar[SpecView] = SPECS
    session: AsyncSession
    written: dict[str, int] = field(default_factory=dict)  # each model's segment written in this transaction

    async def live_of(self, model: str) -> Live | None:
        """The model's rollout as it stands, if it has one."""
        row = await self.session.get(LiveRow, model, populate_existing=True)
        return Live(row.rollout_id, row.state, row.candidate, row.stable) if row is not None else None

    async def keep_run(
        self, model: str, run_id: str, task: str, profile: ReferenceProfile, metrics: dict[str, float]
    ) -> None:
        """Keep a run's reference profile (the first one stands: a run is trained once)."""
        await self.session.execute(
            insert(RunRow)
            .values(model=model, run_id=run_id, task=task, profile=profile.model_dump(mode="json"), metrics=metrics)
            .on_conflict_do_nothing()
        )

    async def keep_version(self, model: str, version: int, run_id: str) -> None:
        """Link a version to its run."""
        await self.session.execute(
            insert(VersionRow).values(model=model, version=version, run_id=run_id).on_conflict_do_nothing()
        )

    async def reference_of(self, model: str, version: int) -> Reference | None:
        """The reference profile of a version, once both its registration and its training were seen."""
        row = await self.session.execute(
            select(RunRow.task, RunRow.profile, RunRow.metrics)
            .join(VersionRow, (VersionRow.model == RunRow.model) & (VersionRow.run_id == RunRow.run_id))
            .where(VersionRow.model == model, VersionRow.version == version)
        )
        found = row.first()
        if found is None:
            return None
        return Reference(found.task, ReferenceProfile.model_validate(found.profile), dict(found.metrics))

    async def keep_live(self, model: str, rollout_id: str, state: str, candidate: int, stable: int | None) -> None:
        """Remember the model's rollout as it stands."""
        values = {"rollout_id": rollout_id, "state": state, "candidate": candidate, "stable": stable}
        await self.session.execute(
            insert(LiveRow)
            .values(model=model, **values)
            .on_conflict_do_update(index_elements=[LiveRow.model], set_=values)
        )

    async def open_rows(self, model: str, version: int) -> int:
        """How many rows the version's open window holds."""
        held = await self.session.scalar(
            select(OpenWindow.rows).where(OpenWindow.model == model, OpenWindow.version == version)
        )
        return int(held or 0)

    async def add_chunk(
        self,
        model: str,
        version: int,
        columns: dict[str, np.ndarray[Any, Any]],
        rows: int,
        first_at: datetime,
        last_at: datetime,
    ) -> Window:
        """Add rows to the version's open window (one statement, which also locks its row); returns the window."""
        stmt = insert(OpenWindow).values(model=model, version=version, rows=rows, first_at=first_at, last_at=last_at)
        counted = await self.session.execute(
            stmt.on_conflict_do_update(
                index_elements=[OpenWindow.model, OpenWindow.version],
                set_={
                    "rows": OpenWindow.rows + rows,
                    "first_at": func.least(func.coalesce(OpenWindow.first_at, first_at), first_at),
                    "last_at": func.greatest(func.coalesce(OpenWindow.last_at, last_at), last_at),
                },
            ).returning(OpenWindow.rows, OpenWindow.first_at, OpenWindow.last_at)
        )
        held, first, last = counted.one()
        self.session.add(ChunkRow(model=model, version=version, rows=rows, payload=pack(columns)))
        return Window(model, version, held, first, last)

    async def take_chunks(self, model: str, version: int) -> list[dict[str, np.ndarray[Any, Any]]]:
        """Every chunk of the open window, oldest first, removed; the window is empty again."""
        rows = await self.session.execute(
            delete(ChunkRow)
            .where(ChunkRow.model == model, ChunkRow.version == version)
            .returning(ChunkRow.id, ChunkRow.payload)
        )
        await self.session.execute(
            update(OpenWindow)
            .where(OpenWindow.model == model, OpenWindow.version == version)
            .values(rows=0, first_at=None, last_at=None)
        )
        return [unpack(payload) for _, payload in sorted(rows.all())]

    async def aged_windows(self, now: datetime) -> list[tuple[str, int, float]]:
        """Open windows with rows, with their age in seconds: candidates for closing by time."""
        rows = await self.session.execute(
            select(OpenWindow.model, OpenWindow.version, OpenWindow.first_at).where(OpenWindow.rows > 0)
        )
        return [(m, v, (now - first).total_seconds()) for m, v, first in rows.all() if first is not None]

    async def lock_window(self, model: str, version: int) -> Window | None:
        """The open window of a version, locked."""
        row = (
            await self.session.execute(
                select(OpenWindow.rows, OpenWindow.first_at, OpenWindow.last_at)
                .where(OpenWindow.model == model, OpenWindow.version == version)
                .with_for_update()
            )
        ).first()
        return Window(model, version, row.rows, row.first_at, row.last_at) if row is not None else None

    async def record_window(self, window: ClosedWindow) -> None:
        """Keep a closed window's results."""
        self.session.add(WindowRow(**dataclasses.asdict(window)))

    async def last_summary(self, model: str, version: int) -> dict[str, Any] | None:
        """The summary of a version's most recently closed window."""
        result = await self.session.scalar(
            select(WindowRow.result)
            .where(WindowRow.model == model, WindowRow.version == version)
            .order_by(WindowRow.closed_at.desc(), WindowRow.ended_at.desc())
            .limit(1)
        )
        summary = (result or {}).get("summary")
        return summary if isinstance(summary, dict) else None

    async def closed_windows(self, model: str, limit: int = 1000) -> list[ClosedWindow]:
        """A model's closed windows, oldest first (the newest `limit`)."""
        rows = await self.session.scalars(
            select(WindowRow)
            .where(WindowRow.model == model)
            .order_by(
                WindowRow.started_at.desc(), WindowRow.ended_at.desc(), WindowRow.closed_at.desc(), WindowRow.window_id
            )
            .limit(limit)
        )
        return [
            ClosedWindow(
                r.window_id,
                r.model,
                r.version,
                r.started_at,
                r.ended_at,
                r.rows,
                r.drifted_share,
                r.dataset_drift,
                r.result,
            )
            for r in reversed(rows.all())
        ]

    async def retrain_allowed(self, model: str, now: datetime, cooldown: float, reason: str) -> bool:
        """Whether a retrain may be requested now; if so, the request is recorded (the cooldown restarts)."""
        fresh = await self.session.execute(
            insert(RetrainRow)
            .values(model=model, requested_at=now, reason=reason, suppressed=0)
            .on_conflict_do_nothing()
            .returning(RetrainRow.model)
        )
        if fresh.first() is not None:
            return True
        row = await self.session.scalar(select(RetrainRow).where(RetrainRow.model == model).with_for_update())
        assert row is not None
        if (now - row.requested_at).total_seconds() < cooldown:
            row.suppressed += 1
            return False
        row.requested_at, row.reason = now, reason
        return True

    async def add_served(self, answers: Sequence[Answers]) -> None:
        """Keep served predictions (and shadow answers) for the label join: each model's as one
        segment (one statement for the poll)."""
        made = [(batch.model, segment(batch)) for batch in answers if len(batch)]
        if not made:
            return
        rows = await self.session.execute(
            text(
                "INSERT INTO monitor_answers (model, served_from, served_to, rows, digests, payload)"
                " SELECT * FROM unnest(CAST(:models AS text[]), CAST(:froms AS timestamptz[]),"
                " CAST(:tos AS timestamptz[]), CAST(:rows AS int[]), CAST(:digests AS bytea[]),"
                " CAST(:payloads AS bytea[])) RETURNING id, model"
            ),
            {
                "models": [m for m, _ in made],
                "froms": [s.served_from for _, s in made],
                "tos": [s.served_to for _, s in made],
                "rows": [s.rows for _, s in made],
                "digests": [s.digests for _, s in made],
                "payloads": [s.payload for _, s in made],
            },
        )
        ids = dict((m, int(i)) for i, m in rows.all())
        for model, kept in made:
            self.written[model] = ids[model]
            DIGESTS.put(self._segment(ids[model]), np.frombuffer(kept.digests, dtype=np.uint64))

    def _segment(self, segment_id: int) -> Segment:
        """A segment's key in the process's digest cache (ids are unique within one database)."""
        bind = self.session.bind
        engine = bind.engine if isinstance(bind, AsyncConnection) else bind
        return (str(engine.url) if engine is not None else "", segment_id)

    async def park_labels(
        self, model: str, truths: dict[str, tuple[str, str | None]], now: datetime, horizon: timedelta
    ) -> Parked:
        """Keep labels (request id -> (label, the id of the event that brought it)) for the horizon
        (a request id already labelled for the model is a duplicate) and attach the new ones to the
        answers served within the horizon.

        The answers are looked for first, so that each label is written once, already marked as
        joined when its answer was found."""
        found = await self._find(model, truths, now - horizon)
        answered = {str(r) for _, answers in found for r in answers.request_id}
        columns = _label_columns(truths)
        kept = await self.session.execute(
            text(
                "INSERT INTO monitor_labels (model, request_id, label, batch, received_at, joined_at)"
                " SELECT :model, v.request_id, v.label, v.batch, :now, CASE WHEN v.met THEN"
                " CAST(:now AS timestamptz) END FROM unnest(CAST(:ids AS text[]), CAST(:labels AS text[]),"
                " CAST(:batches AS text[]), CAST(:met AS boolean[])) AS v(request_id, label, batch, met)"
                " ON CONFLICT DO NOTHING RETURNING request_id, label, batch"
            ),
            {"model": model, "now": now, "met": [r in answered for r in columns["ids"]], **columns},
        )
        fresh = {r: (label, batch) for r, label, batch in kept.all()}
        if len(fresh) < len(truths):  # a repeat labels nothing
            known = np.array(list(fresh), dtype=np.str_)
            found = [(i, a.take(np.isin(a.request_id, known))) for i, a in found]
        joined = await self._label(model, [(i, a) for i, a in found if len(a)], fresh, now)
        met = len(answered.intersection(fresh))
        return Parked(Met(joined, met), len(fresh) - met, len(truths) - len(fresh))

    async def _find(
        self, model: str, truths: dict[str, tuple[str, str | None]], since: datetime
    ) -> list[tuple[int, Answers]]:
        """The model's answers of these request ids served since `since`, by the segment that holds
        them: the segments are found by their digests (`_locate`) and read, and the request ids
        compared."""
        if not truths:
            return []
        ids = np.array(list(truths), dtype=np.str_)
        hits = await self._locate(model, np.unique(digests(ids)), since)
        if not hits:
            return []
        payloads = await self.session.execute(
            select(AnswerSegmentRow.id, AnswerSegmentRow.payload).where(AnswerSegmentRow.id.in_(list(hits)))
        )
        found: list[tuple[int, Answers]] = []
        floor = segments.micros(since)
        for segment_id, payload in payloads.all():
            near = segments.answers_of(model, payload).take(hits[segment_id][1])
            mine = np.isin(near.request_id, ids) & (near.served_at >= floor)
            if mine.any():
                found.append((int(segment_id), near.take(mine)))
        return found

    async def _label(
        self, model: str, found: list[tuple[int, Answers]], truths: dict[str, tuple[str, str | None]], now: datetime
    ) -> list[Joined]:
        """Keep these answers (by the segment that holds them) with their labels, each answer once;
        count them in their segments; the answers labelled now."""
        if not found:
            return []
        columns: dict[str, list[Any]] = {k: [] for k in LABELLED_COLUMNS}
        for segment_id, answers in found:
            for i in range(len(answers)):
                request_id = str(answers.request_id[i])
                label, batch = truths[request_id]
                features = None if answers.features is None else str(answers.features[i]) or None
                score = float(answers.score[i])
                for key, value in zip(
                    LABELLED_COLUMNS,
                    (
                        request_id,
                        str(answers.role[i]),
                        int(answers.version[i]),
                        str(answers.prediction[i]),
                        None if score != score else score,
                        segments.instant(int(answers.served_at[i])),
                        segment_id,
                        label,
                        features,
                        batch,
                    ),
                    strict=True,
                ):
                    columns[key].append(value)
        rows = await self.session.execute(
            text(
                "INSERT INTO monitor_labelled (model, request_id, role, version, prediction, score, served_at,"
                " segment, label, features, label_batch, labelled_at) SELECT :model, v.r, v.role, v.version,"
                " v.prediction, v.score, v.served_at, v.segment, v.label, CAST(v.features AS jsonb), v.batch, :now"
                " FROM unnest(CAST(:request_id AS text[]), CAST(:role AS text[]), CAST(:version AS int[]),"
                " CAST(:prediction AS text[]), CAST(:score AS float8[]), CAST(:served_at AS timestamptz[]),"
                " CAST(:segment AS bigint[]), CAST(:label AS text[]), CAST(:features AS text[]),"
                " CAST(:label_batch AS text[])) AS v(r, role, version, prediction, score, served_at, segment, label,"
                " features, batch) ON CONFLICT DO NOTHING"
                " RETURNING version, request_id, role, prediction, label, served_at, segment"
            ),
            {"model": model, "now": now, **columns},
        )
        joined, per_segment = [], Counter[int]()
        for version, request_id, role, prediction, label, served_at, segment_id in rows.all():
            joined.append(Joined(int(version), request_id, role, prediction, label, served_at))
            per_segment[int(segment_id)] += 1
        if per_segment:
            await self.session.execute(
                text(
                    "UPDATE monitor_answers AS a SET labelled = a.labelled + v.n FROM unnest(CAST(:ids AS bigint[]),"
                    " CAST(:ns AS int[])) AS v(id, n) WHERE a.id = v.id"
                ),
                {"ids": list(per_segment), "ns": list(per_segment.values())},
            )
        return joined

    async def _locate(
        self, model: str | None, wanted: np.ndarray[Any, Any], since: datetime
    ) -> dict[int, tuple[str, np.ndarray[Any, Any], np.ndarray[Any, Any]]]:
        """The segments (of the model, or of every model) served since `since` that hold answers
        with these digests (unique, sorted): segment id -> (its model, the answers' positions,
        their digests).

        Newest first, a page of segments at a time, their digests read from the cache or the
        table; the search stops once every digest is found and the segments left were all served
        before the oldest one found began (so a shadow copy served with its answer is found too).
        """
        hits: dict[int, tuple[str, np.ndarray[Any, Any], np.ndarray[Any, Any]]] = {}
        missing, floor = wanted, None
        after: tuple[datetime, int] | None = None
        while True:
            query = select(
                AnswerSegmentRow.id, AnswerSegmentRow.model, AnswerSegmentRow.served_from, AnswerSegmentRow.served_to
            ).where(AnswerSegmentRow.served_to >= since)
            if model is not None:
                query = query.where(AnswerSegmentRow.model == model)
            if after is not None:
                query = query.where(tuple_(AnswerSegmentRow.served_to, AnswerSegmentRow.id) < after)
            page = (
                await self.session.execute(
                    query.order_by(AnswerSegmentRow.served_to.desc(), AnswerSegmentRow.id.desc()).limit(LOCATE_PAGE)
                )
            ).all()
            if not page:
                return hits
            known = {int(i): DIGESTS.get(self._segment(int(i))) for i, *_ in page}
            absent = [i for i, found in known.items() if found is None]
            if absent:
                rows = await self.session.execute(
                    select(AnswerSegmentRow.id, AnswerSegmentRow.digests).where(AnswerSegmentRow.id.in_(absent))
                )
                for segment_id, blob in rows.all():
                    digest = np.frombuffer(blob, dtype=np.uint64)
                    known[int(segment_id)] = DIGESTS.put(self._segment(int(segment_id)), digest)
            for segment_id, owner, served_from, served_to in page:
                if missing.shape[0] == 0 and floor is not None and served_to < floor:
                    return hits
                sorted_digests = known[int(segment_id)]
                assert sorted_digests is not None
                present, positions = segments.find(sorted_digests, wanted)
                if positions.shape[0]:
                    hits[int(segment_id)] = (owner, positions, sorted_digests[positions])
                    floor = served_from if floor is None else min(floor, served_from)
                    missing = missing[~np.isin(missing, wanted[present])]
            after = (page[-1].served_to, int(page[-1].id))

    async def _joined(self, model: str, request_ids: list[str], now: datetime) -> None:
        """Mark labels as having met their answer (a primary-key probe per id: an `= ANY(array)`
        here is planned as a scan of every label kept)."""
        if request_ids:
            await self.session.execute(
                text(
                    "UPDATE monitor_labels AS l SET joined_at = :now FROM unnest(CAST(:ids AS text[])) AS v(r)"
                    " WHERE l.model = :model AND l.request_id = v.r AND l.joined_at IS NULL"
                ),
                {"now": now, "model": model, "ids": request_ids},
            )

    async def meet_labels(self, answers: Sequence[Answers], now: datetime) -> dict[str, Met]:
        """Attach the labels that came before them to these answers (just kept); what met, per model.

        Per model, the cheaper side is read: its waiting labels when they are fewer than the poll's
        answers (one partial-index range), else the labels of the poll's request ids (one primary
        key probe each). Shadow answers are always looked up: a label that met its served answer
        still labels the shadow copy logged after it.
        """
        met: dict[str, Met] = {}
        for batch in answers:
            model = batch.model
            ids = set(batch.request_id.tolist())
            waiting = (
                await self.session.scalars(
                    select(LabelRow.request_id)
                    .where(LabelRow.model == model, LabelRow.joined_at.is_(None))
                    .limit(len(ids) + 1)
                )
            ).all()
            if len(waiting) > len(ids):
                asked = sorted(ids)
            else:
                shadows = set(batch.request_id[batch.role == "shadow"].tolist())
                asked = sorted(ids.intersection(waiting) | shadows)
            if not asked:
                continue
            found = await self.session.execute(
                text(
                    "SELECT l.request_id, l.label, l.batch, l.joined_at IS NULL FROM unnest(CAST(:ids AS text[]))"
                    " AS v(r) JOIN monitor_labels AS l ON l.model = :model AND l.request_id = v.r"
                ),
                {"model": model, "ids": asked},
            )
            hits = {r: (label, batch_id, first) for r, label, batch_id, first in found.all()}
            if not hits:
                continue
            mine = batch.take(np.isin(batch.request_id, np.array(list(hits), dtype=np.str_)))
            segment_id = self.written.get(model)
            if segment_id is None:
                raise ValueError(f"answers of {model} are met with their labels after add_served, in its transaction")
            joined = await self._label(model, [(segment_id, mine)], {r: (h[0], h[1]) for r, h in hits.items()}, now)
            labelled = {j.request_id for j in joined}
            first = sorted(r for r, h in hits.items() if h[2] and r in labelled)
            await self._joined(model, first, now)
            if joined:
                met[model] = Met(joined, len(first))
        return met

    async def expire_labels(self, waited: datetime, kept: datetime) -> dict[str, dict[str, int]]:
        """Drop the labels still waiting that were received before `waited`, and the ones that met
        their answer received before `kept`; the ones that never met an answer, per model, by
        outcome (unknown, expired, misdirected). Whether an answer with the label's request id is
        still kept is read from the segments' digests (for this model: expired; for another:
        misdirected; none: unknown)."""
        rows = await self.session.execute(
            text(
                "DELETE FROM monitor_labels WHERE received_at < :kept"
                " OR (received_at < :waited AND joined_at IS NULL) RETURNING model, request_id, joined_at"
            ),
            {"waited": waited, "kept": kept},
        )
        lost = [(m, r) for m, r, joined_at in rows.all() if joined_at is None]
        if not lost:
            return {}
        digest = digests(np.array([r for _, r in lost], dtype=np.str_))
        wanted = np.unique(digest)
        served: dict[int, set[str]] = defaultdict(set)  # digest -> the models that answered it
        located = await self._locate(None, wanted, datetime.min.replace(tzinfo=UTC))
        for owner, _, found in located.values():
            for value in np.unique(found).tolist():
                served[value].add(owner)
        outcomes: dict[str, dict[str, int]] = {}
        for (model, _), value in zip(lost, digest.tolist(), strict=True):
            owners = served.get(value, set())
            outcome = "expired" if model in owners else "misdirected" if owners else "unknown"
            counted = outcomes.setdefault(model, {})
            counted[outcome] = counted.get(outcome, 0) + 1
        return outcomes

    async def count(self, model: str, labels: dict[str, int], answers: dict[str, int]) -> None:
        """Add to the model's ledger (one statement, which locks its row)."""
        deltas = {f"labels_{k}": v for k, v in labels.items() if v} | {
            f"answers_{k}": v for k, v in answers.items() if v
        }
        if not deltas:
            return
        zero = {column: 0 for column in LEDGER_COLUMNS}
        await self.session.execute(
            insert(LedgerRow)
            .values(model=model, **(zero | deltas))
            .on_conflict_do_update(
                index_elements=[LedgerRow.model],
                set_={k: getattr(LedgerRow, k) + v for k, v in deltas.items()},
            )
        )

    async def ledger(self, model: str) -> Ledger:
        """The model's ledger (labels waiting counted now)."""
        return (await self._ledgers(model)).get(model) or Ledger.empty()

    async def ledgers(self) -> dict[str, Ledger]:
        """Every model's ledger."""
        return await self._ledgers(None)

    async def _ledgers(self, model: str | None) -> dict[str, Ledger]:
        counted = select(LedgerRow) if model is None else select(LedgerRow).where(LedgerRow.model == model)
        waiting = select(LabelRow.model, func.count()).where(LabelRow.joined_at.is_(None)).group_by(LabelRow.model)
        if model is not None:
            waiting = waiting.where(LabelRow.model == model)
        waits = {m: int(n) for m, n in (await self.session.execute(waiting)).all()}
        found = {}
        for row in (await self.session.scalars(counted)).all():
            found[row.model] = Ledger(
                {k: int(getattr(row, f"labels_{k}")) for k in LABEL_OUTCOMES},
                {k: int(getattr(row, f"answers_{k}")) for k in ANSWER_OUTCOMES},
                waits.get(row.model, 0),
            )
        for m, n in waits.items():
            found.setdefault(m, Ledger(Ledger.empty().labels, Ledger.empty().answers, n))
        return dict(sorted(found.items()))

    async def labelled_between(self, model: str, version: int, start: datetime, end: datetime) -> list[Joined]:
        """A version's labelled answers (shadow ones too) served between start and end."""
        rows = await self.session.execute(
            select(
                LabelledRow.version,
                LabelledRow.request_id,
                LabelledRow.role,
                LabelledRow.prediction,
                LabelledRow.label,
                LabelledRow.served_at,
            ).where(
                LabelledRow.model == model,
                LabelledRow.version == version,
                LabelledRow.served_at >= start,
                LabelledRow.served_at <= end,
            )
        )
        return [Joined(int(v), r, role, p, str(lab), at) for v, r, role, p, lab, at in rows.all()]

    async def ever_labelled(self, model: str, version: int) -> bool:
        """Whether any answer of the version was labelled."""
        found = await self.session.scalar(
            select(LabelledRow.request_id).where(LabelledRow.model == model, LabelledRow.version == version).limit(1)
        )
        return found is not None

    async def feedback(self, model: str, since: datetime, until: datetime, limit: int) -> list[FeedbackRow]:
        """Labelled answers (not shadow) kept with their features, served in (since, until], newest `limit`."""
        rows = await self.session.execute(
            select(
                LabelledRow.version,
                LabelledRow.features,
                LabelledRow.label,
                LabelledRow.served_at,
                LabelledRow.label_batch,
            )
            .where(
                LabelledRow.model == model,
                LabelledRow.features.is_not(None),
                LabelledRow.role != "shadow",
                LabelledRow.served_at > since,
                LabelledRow.served_at <= until,
            )
            .order_by(LabelledRow.served_at.desc())
            .limit(limit)
        )
        return [FeedbackRow(int(v), dict(f), str(lab), at, b) for v, f, lab, at, b in rows.all()]

    async def windows_between(self, model: str, start: datetime, end: datetime) -> list[str]:
        """Ids of the model's closed windows overlapping the span."""
        rows = await self.session.scalars(
            select(WindowRow.window_id)
            .where(WindowRow.model == model, WindowRow.started_at <= end, WindowRow.ended_at >= start)
            .order_by(WindowRow.started_at)
        )
        return list(rows.all())

    async def add_realised(self, model: str, version: int, joined: list[Joined]) -> None:
        """Count labelled answers into the closed windows they were served in (realised accuracy)."""
        answered = [j for j in joined if j.role != "shadow"]
        if not answered:
            return
        first, last = min(j.served_at for j in answered), max(j.served_at for j in answered)
        found = await self.session.scalars(
            select(WindowRow)
            .where(
                WindowRow.model == model,
                WindowRow.version == version,
                WindowRow.started_at <= last,
                WindowRow.ended_at >= first,
            )
            .with_for_update()
        )
        for window in found.all():
            window.result = realised(window.result, window.started_at, window.ended_at, answered)

    async def keep_training(self, model: str, trained: Trained) -> None:
        """Keep what a run is trained on (from TrainingStarted or ModelTrained)."""
        await self.session.execute(
            insert(TrainingRow)
            .values(
                model=model,
                run_id=trained.run_id,
                dataset_version=trained.dataset_version,
                spec_revision=trained.spec_revision,
            )
            .on_conflict_do_nothing()
        )

    async def training_of(self, model: str, version: int) -> Trained | None:
        """What a version was trained on, once its registration and its run were seen."""
        row = (
            await self.session.execute(
                select(TrainingRow.run_id, TrainingRow.dataset_version, TrainingRow.spec_revision)
                .join(VersionRow, (VersionRow.model == TrainingRow.model) & (VersionRow.run_id == TrainingRow.run_id))
                .where(VersionRow.model == model, VersionRow.version == version)
            )
        ).first()
        return Trained(row.run_id, row.dataset_version, row.spec_revision) if row is not None else None

    async def tried(self, model: str) -> frozenset[tuple[str, int]]:
        """(dataset version, spec revision) of every run started for the model."""
        rows = await self.session.execute(
            select(TrainingRow.dataset_version, TrainingRow.spec_revision).where(TrainingRow.model == model)
        )
        return frozenset((d, int(r)) for d, r in rows.all())

    async def keep_dataset(self, seen: DatasetSeen) -> None:
        """Keep a dataset version (the first announcement stands)."""
        await self.session.execute(insert(DatasetRow).values(**dataclasses.asdict(seen)).on_conflict_do_nothing())

    async def latest_dataset(self, dataset: str) -> DatasetSeen | None:
        """The newest version of a dataset, by arrival."""
        row = await self.session.scalar(
            select(DatasetRow).where(DatasetRow.dataset == dataset).order_by(DatasetRow.arrived_at.desc()).limit(1)
        )
        if row is None:
            return None
        return DatasetSeen(row.dataset, row.version, row.producer, row.uri, row.format, row.sha256, row.arrived_at)

    async def labelled_pending(self, model: str, version: int) -> int:
        """Labelled predictions of a version not yet in a performance window."""
        count = await self.session.scalar(
            select(func.count())
            .select_from(LabelledRow)
            .where(
                LabelledRow.model == model,
                LabelledRow.version == version,
                LabelledRow.evaluated.is_(False),
                LabelledRow.role != "shadow",
            )
        )
        return int(count or 0)

    async def take_labelled(self, model: str, version: int) -> list[tuple[str, str, float | None]]:
        """The labelled, not yet evaluated predictions of a version, marked evaluated: (label, prediction, score)."""
        rows = await self.session.execute(
            update(LabelledRow)
            .where(
                LabelledRow.model == model,
                LabelledRow.version == version,
                LabelledRow.evaluated.is_(False),
                LabelledRow.role != "shadow",
            )
            .values(evaluated=True)
            .returning(LabelledRow.label, LabelledRow.prediction, LabelledRow.score)
        )
        return [(str(a), str(b), c) for a, b, c in rows.all()]

    async def forget_served(self, before: datetime) -> dict[str, int]:
        """Drop the answers served before `before` (the label horizon), a segment at a time (every
        answer in it older), and the labelled ones; how many were never labelled, per model."""
        rows = await self.session.execute(
            text(
                "WITH gone AS (DELETE FROM monitor_answers WHERE served_to < :before RETURNING model, rows, labelled)"
                " SELECT model, sum(rows - labelled) FROM gone GROUP BY model"
            ),
            {"before": before},
        )
        await self.session.execute(delete(LabelledRow).where(LabelledRow.served_at < before))
        return {m: int(n) for m, n in rows.all() if n}


def _label_columns(truths: dict[str, tuple[str, str | None]]) -> dict[str, list[Any]]:
    """Labels (request id -> (label, batch)) as the three arrays the statements unnest."""
    return {
        "ids": list(truths),
        "labels": [label for label, _ in truths.values()],
        "batches": [batch for _, batch in truths.values()],
    }
