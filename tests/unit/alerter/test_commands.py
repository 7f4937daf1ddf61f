"""Operators' commands on the alerter's in-memory store: one set of silence rules (Alertmanager's)
behind both APIs, each refusal naming the rule and leaving nothing, and every action audited."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.alerter import commands, domain
from services.alerter.memory import MemoryStore
from shared.runtime.commands import MemoryCommands

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def silence(**changes: object) -> commands.CreateSilence:
    found: dict[str, object] = {"actor": "ann", "matchers": ['model="churn"'], "ends_at": NOW + HOUR, "now": NOW}
    return commands.CreateSilence(**{**found, **changes})  # type: ignore[arg-type]


async def test_a_silence_starts_no_earlier_than_now_and_is_audited_with_its_matchers() -> None:
    bus = MemoryCommands(MemoryStore())
    made = await bus.run(commands.create_silence, silence(starts_at=NOW - HOUR, comment="deploy"))
    assert made.starts_at == NOW and made.created_by == "ann"
    [entry] = bus.store.audits
    assert (entry["action"], entry["target"], entry["detail"]["matchers"]) == ("silence", made.id, ['model="churn"'])


@pytest.mark.parametrize(
    ("changes", "rule"),
    [
        ({"ends_at": NOW}, "end time must be after the start time"),
        ({"starts_at": NOW + 2 * HOUR}, "end time must be after the start time"),
        ({"matchers": ['model=~".*"']}, "would silence every alert"),
    ],
)
async def test_a_silence_against_alertmanagers_rules_is_refused_naming_the_rule_and_kept_nowhere(
    changes: dict[str, object], rule: str
) -> None:
    bus = MemoryCommands(MemoryStore())
    with pytest.raises(commands.Refused, match=rule):
        await bus.run(commands.create_silence, silence(**changes))
    assert not bus.store.silences and not bus.store.audits


async def test_replacing_a_silence_ends_the_old_one_and_a_missing_one_refuses_the_whole() -> None:
    bus = MemoryCommands(MemoryStore())
    old = await bus.run(commands.create_silence, silence())
    new = await bus.run(commands.create_silence, silence(replaces=old.id, api="alertmanager-v2"))
    assert bus.store.silences[old.id].ends_at == NOW and bus.store.silences[old.id].expired_by == "ann"
    assert [a["action"] for a in bus.store.audits] == ["silence", "expire-silence", "silence"]
    assert bus.store.audits[1]["detail"] == {"replaced_by": new.id, "api": "alertmanager-v2"}
    with pytest.raises(commands.NotFound, match="silence gone not found"):
        await bus.run(commands.create_silence, silence(replaces="gone"))
    assert len(bus.store.silences) == 2 and len(bus.store.audits) == 3


async def test_expiring_is_audited_once_and_an_unknown_silence_is_not_found() -> None:
    bus = MemoryCommands(MemoryStore())
    made = await bus.run(commands.create_silence, silence())
    expire = commands.ExpireSilence(actor="bob", silence_id=made.id, now=NOW + timedelta(minutes=5))
    await bus.run(commands.expire_silence, expire)
    await bus.run(commands.expire_silence, expire)
    assert [a["action"] for a in bus.store.audits] == ["silence", "expire-silence"]
    with pytest.raises(commands.NotFound):
        await bus.run(commands.expire_silence, commands.ExpireSilence(actor="bob", silence_id="x", now=NOW))


async def test_an_acknowledgement_is_kept_and_audited_and_an_unknown_alert_is_not_found() -> None:
    store = MemoryStore()
    raised = domain.Alert(
        model="churn",
        labels={"model": "churn", "kind": "drift", "severity": "warning"},
        annotations={},
        severity="warning",
        source_event_type="DriftDetected",
        source_event_id="e1",
    )
    await store.raise_alert(raised, NOW)
    bus = MemoryCommands(store)
    acked = await bus.run(
        commands.acknowledge,
        commands.Acknowledge(actor="ann", fingerprint=raised.fingerprint, now=NOW, comment="on it"),
    )
    assert (acked.acked_by, acked.ack_comment) == ("ann", "on it")
    with pytest.raises(commands.NotFound, match="no alert has the fingerprint"):
        await bus.run(commands.acknowledge, commands.Acknowledge(actor="ann", fingerprint="f00", now=NOW))
    assert [a["action"] for a in store.audits] == ["ack"]
