"""What every monitor store does, whatever keeps it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np

from services.monitor.segments import Answers
from services.monitor.store import ClosedWindow, DatasetSeen, Joined, Live, MonitorStore, Trained
from shared.contract.events import NumericProfile, ReferenceProfile

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def profile() -> ReferenceProfile:
    numeric = NumericProfile(
        count=3,
        null_fraction=0,
        mean=1,
        std=1,
        min=0,
        max=2,
        bin_edges=[0, 1, 2],
        bin_fractions=[0.5, 0.5],
        sample=[0, 1, 2],
    )
    return ReferenceProfile(rows=3, features={"x": numeric}, prediction=None)


class MonitorStoreContract:
    """Subclasses give `store` (a fixture) for one backend."""

    @staticmethod
    def model() -> str:
        return f"contract-{uuid.uuid4().hex[:8]}"

    async def test_a_reference_is_known_once_both_the_run_and_the_version_are(self, store: MonitorStore) -> None:
        model = self.model()
        await store.keep_version(model, 1, "run-1")
        assert await store.reference_of(model, 1) is None
        await store.keep_run(model, "run-1", "classification", profile(), {"accuracy": 0.9})
        found = await store.reference_of(model, 1)
        assert found is not None and (found.task, found.metrics, found.profile) == (
            "classification",
            {"accuracy": 0.9},
            profile(),
        )

    async def test_the_live_rollout_is_the_last_one_kept(self, store: MonitorStore) -> None:
        model = self.model()
        assert await store.live_of(model) is None
        await store.keep_live(model, "ro-1", "canary", 2, 1)
        await store.keep_live(model, "ro-1", "promoted", 2, 1)
        assert await store.live_of(model) == Live("ro-1", "promoted", 2, 1)

    async def test_chunks_fill_a_window_and_come_back_once_in_order(self, store: MonitorStore) -> None:
        model = self.model()
        first = await store.add_chunk(
            model, 1, {"x": np.array([1.0, 2.0])}, 2, T0 + timedelta(seconds=5), T0 + timedelta(seconds=6)
        )
        window = await store.add_chunk(model, 1, {"x": np.array([3.0])}, 1, T0, T0 + timedelta(seconds=9))
        assert (first.rows, window.rows, window.first_at, window.last_at) == (2, 3, T0, T0 + timedelta(seconds=9))
        assert await store.open_rows(model, 1) == 3
        assert [(m, v) for m, v, _ in await store.aged_windows(T0 + timedelta(minutes=1)) if m == model] == [(model, 1)]
        chunks = await store.take_chunks(model, 1)
        assert [c["x"].tolist() for c in chunks] == [[1.0, 2.0], [3.0]]
        assert await store.take_chunks(model, 1) == []
        locked = await store.lock_window(model, 1)
        assert locked is not None and (locked.rows, locked.first_at) == (0, None)

    async def test_the_last_closed_windows_summary_is_read_back(self, store: MonitorStore) -> None:
        model = self.model()
        assert await store.last_summary(model, 1) is None
        for rows in (10, 20):
            ended = T0 + timedelta(seconds=rows)
            closed = ClosedWindow(
                f"w-{model}-{rows}", model, 1, T0, ended, rows, 0.0, False, {"summary": {"rows": rows}}
            )
            await store.record_window(closed)
        assert await store.last_summary(model, 1) == {"rows": 20}

    async def test_a_retrain_is_allowed_once_per_cooldown(self, store: MonitorStore) -> None:
        model = self.model()
        assert await store.retrain_allowed(model, T0, 600, "drift")
        assert not await store.retrain_allowed(model, T0 + timedelta(seconds=60), 600, "drift")
        assert await store.retrain_allowed(model, T0 + timedelta(seconds=601), 600, "performance")

    async def test_labels_join_answers_within_the_horizon_and_are_judged_once(self, store: MonitorStore) -> None:
        model, now = self.model(), datetime.now(UTC)
        old = now - timedelta(days=2)
        # Two polls, two days apart: answers are kept, and dropped at the horizon, a poll at a time.
        await store.add_served(Answers.of([(model, 1, "c", "1", 0.8, old, "stable", None)]))
        await store.add_served(
            Answers.of(
                [
                    (model, 1, "a", "1", 0.9, now, "stable", None),
                    (model, 2, "b", "0", 0.2, now, "canary", None),
                    (model, 1, "b", "1", 0.7, now, "shadow", None),
                ]
            )
        )
        parked = await store.park_labels(
            model, {"a": ("1", "batch-1"), "b": ("1", "batch-1"), "c": ("0", "batch-1")}, now, timedelta(days=1)
        )
        assert (parked.met.labels, parked.waiting, parked.duplicated) == (2, 1, 0)  # c's answer is too old
        assert sorted((j.version, j.request_id, j.role, j.label) for j in parked.met.answers) == [
            (1, "a", "stable", "1"),
            (1, "b", "shadow", "1"),
            (2, "b", "canary", "1"),
        ]
        assert await store.labelled_pending(model, 1) == 1  # the shadow answer is never judged
        assert await store.take_labelled(model, 1) == [("1", "1", 0.9)]
        assert await store.take_labelled(model, 1) == []
        # Canary analysis reads both versions' labelled answers of a slice, shadow copies included.
        slice_ = await store.labelled_between(model, 1, now - timedelta(seconds=1), now + timedelta(seconds=1))
        assert sorted((j.request_id, j.role) for j in slice_) == [("a", "stable"), ("b", "shadow")]
        assert await store.ever_labelled(model, 2) and not await store.ever_labelled(model, 3)
        assert (await store.forget_served(now - timedelta(days=1))).get(model) == 1

    async def test_labels_that_come_first_wait_for_their_answers_and_every_label_is_accounted_for(
        self, store: MonitorStore
    ) -> None:
        model, other, now = self.model(), self.model(), datetime.now(UTC)
        day = timedelta(days=1)
        parked = await store.park_labels(
            model, {"early": ("1", "lab-1"), "never": ("0", "lab-1"), "elsewhere": ("1", "lab-1")}, now, day
        )
        assert (parked.met.answers, parked.waiting, parked.duplicated) == ([], 3, 0)
        again = await store.park_labels(model, {"early": ("0", "lab-2")}, now, day)
        assert (again.met.answers, again.waiting, again.duplicated) == ([], 0, 1)  # the first label stands
        assert (await store.ledger(model)).waiting == 3
        answers = Answers.of(
            [
                (model, 1, "early", "1", 0.9, now, "stable", None),
                (model, 1, "late", "0", 0.1, now, "stable", None),
                (other, 1, "elsewhere", "1", 0.9, now, "stable", None),
            ]
        )
        await store.add_served(answers)
        met = await store.meet_labels(answers, now)
        assert set(met) == {model}
        assert [(j.request_id, j.label) for j in met[model].answers] == [("early", "1")]
        assert met[model].labels == 1
        # A shadow answer logged afterwards still meets the label its served answer met.
        shadow = Answers.of([(model, 2, "early", "0", 0.2, now, "shadow", None)])
        await store.add_served(shadow)
        late = await store.meet_labels(shadow, now)
        assert [(j.request_id, j.role, j.label) for j in late[model].answers] == [("early", "shadow", "1")]
        assert late[model].labels == 0
        await store.count(model, {"received": 4, "joined": 1, "duplicated": 1}, {"logged": 3, "labelled": 2})
        ledger = await store.ledger(model)
        assert (ledger.labels["received"], ledger.labels["joined"], ledger.waiting) == (4, 1, 2)
        # At the horizon: a label whose request id nobody answered is unknown; one answered for
        # another model is misdirected. The ledger counts them as the handler passes them on.
        # A label that met its answer is kept the whole horizon (a repeat is still known as one).
        lost = await store.expire_labels(now + timedelta(seconds=1), now - day)
        assert lost[model] == {"unknown": 1, "misdirected": 1}
        assert (await store.ledger(model)).waiting == 0
        repeat = await store.park_labels(model, {"early": ("1", "lab-3")}, now, day)
        assert repeat.duplicated == 1
        assert (await store.expire_labels(now + timedelta(seconds=1), now + timedelta(seconds=1))).get(model) is None

    async def test_feedback_is_the_labelled_answers_kept_with_features_newest_first(self, store: MonitorStore) -> None:
        model, now = self.model(), datetime.now(UTC)
        await store.add_served(
            Answers.of(
                [
                    (model, 1, f"r{i}", "1", 0.5, now - timedelta(seconds=10 - i), "stable", f'{{"x": {i}}}')
                    for i in range(5)
                ]
                + [(model, 1, "plain", "1", 0.5, now, "stable", None), (model, 1, "r3", "1", 0.5, now, "shadow", "{}")]
            )
        )
        await store.park_labels(
            model,
            {"r1": ("0", "lab-7"), "r2": ("1", "lab-7"), "r3": ("1", "lab-7"), "plain": ("1", "lab-7")},
            now,
            timedelta(days=1),
        )
        found = await store.feedback(model, now - timedelta(minutes=1), now, limit=2)
        assert [(r.features, r.label, r.label_batch) for r in found] == [
            ({"x": 3}, "1", "lab-7"),
            ({"x": 2}, "1", "lab-7"),
        ]
        assert len(await store.feedback(model, now - timedelta(minutes=1), now, limit=10)) == 3

    async def test_what_runs_trained_on_and_the_newest_dataset_are_known(self, store: MonitorStore) -> None:
        model, dataset = self.model(), self.model()
        await store.keep_version(model, 1, "run-1")
        assert await store.training_of(model, 1) is None
        await store.keep_training(model, Trained("run-1", "d1", 1))
        await store.keep_training(model, Trained("run-2", "d2", 1))
        assert await store.training_of(model, 1) == Trained("run-1", "d1", 1)
        assert await store.tried(model) == frozenset({("d1", 1), ("d2", 1)})
        assert await store.latest_dataset(dataset) is None
        for version, minutes in (("d1", 0), ("d3", 2), ("d2", 1)):
            seen = DatasetSeen(
                dataset, version, "producer", f"s3://b/{version}", "csv", None, T0 + timedelta(minutes=minutes)
            )
            await store.keep_dataset(seen)
        latest = await store.latest_dataset(dataset)
        assert latest is not None and latest.version == "d3"

    async def test_labels_count_into_the_windows_they_were_served_in(self, store: MonitorStore) -> None:
        model = self.model()
        for n in range(2):
            start = T0 + timedelta(minutes=n)
            await store.record_window(
                ClosedWindow(f"w-{model}-{n}", model, 1, start, start + timedelta(seconds=59), 10, 0.0, False, {})
            )
        joined = [
            Joined(1, "a", "stable", "1", "1", T0 + timedelta(seconds=5)),
            Joined(1, "b", "stable", "0", "1", T0 + timedelta(seconds=6)),
            Joined(1, "c", "stable", "1", "1", T0 + timedelta(seconds=70)),
            Joined(1, "d", "shadow", "0", "1", T0 + timedelta(seconds=71)),
        ]
        await store.add_realised(model, 1, joined)
        await store.add_realised(model, 1, [Joined(1, "e", "stable", "1", "1", T0 + timedelta(seconds=7))])
        assert await store.windows_between(model, T0, T0 + timedelta(seconds=80)) == [f"w-{model}-0", f"w-{model}-1"]
        realised = {w.window_id: w.result.get("realised") for w in await store.closed_windows(model)}
        assert realised == {
            f"w-{model}-0": {"rows": 3, "correct": 2, "accuracy": 2 / 3},
            f"w-{model}-1": {"rows": 1, "correct": 1, "accuracy": 1.0},
        }
