"""What every alerter store does, whatever keeps it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from services.alerter import domain
from services.alerter.records import Notification, SilenceRecord, failed, sent
from services.alerter.store import AlerterStore

T0 = datetime(2026, 12, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


def alert(model: str, kind: str = "drift") -> domain.Alert:
    labels = {"model": model, "kind": kind, "severity": "warning"}
    return domain.Alert(
        model=model,
        labels=labels,
        annotations={"summary": f"{kind} of {model}"},
        severity="warning",
        source_event_type="DriftDetected",
        source_event_id=f"e-{uuid.uuid4().hex[:6]}",
    )


class AlerterStoreContract:
    """Subclasses give `store` (a fixture) for one backend."""

    @staticmethod
    def model() -> str:
        return f"contract-{uuid.uuid4().hex[:8]}"

    async def test_raising_tells_the_status_before_and_a_repeat_only_refreshes(self, store: AlerterStore) -> None:
        raised = alert(self.model())
        assert await store.raise_alert(raised, T0) is None
        assert await store.raise_alert(raised, T0 + timedelta(seconds=5)) == "firing"
        [firing] = await store.firing_of(raised.model)
        assert (firing.times_raised, firing.starts_at, firing.updated_at) == (2, T0, T0 + timedelta(seconds=5))
        assert await store.resolve([raised.fingerprint, "nope"], T0 + timedelta(seconds=9), "gone") == [
            raised.fingerprint
        ]
        assert await store.resolve([raised.fingerprint], T0 + timedelta(seconds=9), "gone") == []
        assert await store.raise_alert(raised, T0 + timedelta(seconds=20)) == "resolved"
        [again] = await store.firing_of(raised.model)
        assert (again.starts_at, again.ends_at, again.times_raised) == (T0 + timedelta(seconds=20), None, 3)

    async def test_the_latest_resolution_of_a_kind_is_kept_with_the_versions_it_covers(
        self, store: AlerterStore
    ) -> None:
        model = self.model()
        assert await store.resolution_of(model, "drift") is None
        kinds = frozenset({"drift", "performance"})
        await store.keep_resolution(domain.Resolution(model, kinds, "v3 promoted", below_version=3, at=T0))
        await store.keep_resolution(domain.Resolution(model, kinds, "v2 promoted", below_version=2, at=T0 - HOUR))
        kept = await store.resolution_of(model, "drift")
        assert kept == domain.Kept("v3 promoted", T0, 3), "an older resolution arriving late does not replace it"
        assert kept.covers({"version": "2"}, T0 - HOUR) and not kept.covers({"version": "3"}, T0 - HOUR)
        assert not kept.covers({"version": "2"}, T0 + HOUR), "what happened after the resolution is news"
        assert await store.resolution_of(model, "training-failed") is None

    async def test_stale_alerts_are_those_not_raised_since_but_the_kinds_kept(self, store: AlerterStore) -> None:
        old, new, kept = alert(self.model()), alert(self.model()), alert(self.model(), "retrain-skipped")
        await store.raise_alert(old, T0)
        await store.raise_alert(kept, T0)
        await store.raise_alert(new, T0 + timedelta(hours=2))
        stale = await store.stale(T0 + timedelta(hours=1), keep=frozenset({"retrain-skipped"}))
        assert old.fingerprint in stale and new.fingerprint not in stale and kept.fingerprint not in stale
        assert (await store.all_firing())[new.fingerprint] == new.labels

    async def test_a_group_is_due_when_set_and_a_flush_writes_its_notification(self, store: AlerterStore) -> None:
        raised, key = alert(self.model()), f"route:{uuid.uuid4().hex[:8]}"
        await store.raise_alert(raised, T0)
        group = await store.join_group(key, "route", "log", {"model": raised.model}, raised.fingerprint, T0)
        assert (group.created_at, group.next_flush_at, group.last_notified_at) == (T0, None, None)
        assert [g.key for g in await store.groups_of([raised.fingerprint])] == [key]
        await store.set_due(key, T0 + timedelta(seconds=30))
        assert key not in [g.key for g in await store.due_groups(T0 + timedelta(seconds=29))]
        [group] = [g for g in await store.due_groups(T0 + timedelta(seconds=30)) if g.key == key]
        assert (group.receiver, group.group_labels) == ("log", {"model": raised.model})
        assert [m.fingerprint for m in await store.members_of(key)] == [raised.fingerprint]
        note = Notification(uuid.uuid4().hex, key, "log", {"text": "x"}, "pending", 0, T0, T0)
        await store.flushed(
            key, notified={raised.fingerprint: "firing"}, next_flush_at=None, left=[], notification=note
        )
        assert key not in [g.key for g in await store.due_groups(T0 + timedelta(days=1))]
        assert note.id in [n.id for n in await store.pending(T0)]
        await store.attempted(failed(note, T0 + timedelta(seconds=1), "down"))
        assert note.id not in [n.id for n in await store.pending(T0)]
        [retry] = [n for n in await store.pending(T0 + timedelta(seconds=1)) if n.id == note.id]
        assert (retry.attempts, retry.last_error) == (1, "down")
        await store.attempted(sent(retry, T0 + timedelta(seconds=2)))
        assert note.id not in [n.id for n in await store.pending(T0 + timedelta(days=1))]

    async def test_silences_are_in_force_between_their_start_and_end(self, store: AlerterStore) -> None:
        silence = SilenceRecord(uuid.uuid4().hex[:12], ['model="x"'], T0, T0 + timedelta(hours=1), "ops", "why", T0)
        await store.add_silence(silence)
        assert silence.id in [s.id for s in await store.active_silences(T0 + timedelta(minutes=1))]
        assert silence.id not in [s.id for s in await store.active_silences(T0 + timedelta(hours=2))]

    async def test_an_expired_silence_ends_now_and_a_pending_one_ends_before_it_began(
        self, store: AlerterStore
    ) -> None:
        running = SilenceRecord(uuid.uuid4().hex[:12], ['model="x"'], T0, T0 + HOUR, "ops", "why", T0)
        pending = SilenceRecord(uuid.uuid4().hex[:12], ['model="x"'], T0 + HOUR, T0 + 2 * HOUR, "ops", "why", T0)
        for silence in (running, pending):
            await store.add_silence(silence)
        now = T0 + timedelta(minutes=10)
        ended = await store.expire_silence(running.id, now, "bob")
        assert ended is not None and ended[1] and (ended[0].ends_at, ended[0].expired_by) == (now, "bob")
        early = await store.expire_silence(pending.id, now, "bob")
        assert early is not None and early[0].starts_at == early[0].ends_at == now
        again = await store.expire_silence(running.id, now + HOUR, "bob")
        assert again is not None and not again[1]
        assert await store.expire_silence("nothing", now, "bob") is None

    async def test_an_acknowledgement_names_who_and_why_and_an_unknown_alert_has_none(
        self, store: AlerterStore
    ) -> None:
        raised = alert(self.model())
        await store.raise_alert(raised, T0)
        acked = await store.acknowledge(raised.fingerprint, "ann", T0 + HOUR, "on it")
        assert acked is not None and (acked.acked_by, acked.ack_comment) == ("ann", "on it")
        assert await store.acknowledge("f" * 16, "ann", T0, "") is None
        await store.audit("ann", "ack", raised.fingerprint, T0 + HOUR, comment="on it")
        [entry] = await store.audit_log(target=raised.fingerprint)
        assert (entry["actor"], entry["action"], entry["detail"]) == ("ann", "ack", {"comment": "on it"})
