"""Who may do what on the bus, derived from the contract's producer/consumer table (each event
class's `emitted_by` and `consumed_by`): the broker's ACLs, the docs' ACL table and the k8s
overlay's Kafka users are all generated from here, never written by hand."""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass
from typing import Literal

from shared.contract import events, topics
from shared.contract.topics import Principal

Operation = Literal["READ", "WRITE", "CREATE", "DESCRIBE"]
ResourceType = Literal["topic", "group", "transactional_id"]
Pattern = Literal["literal", "prefixed"]


@dataclass(frozen=True, slots=True, order=True)
class Grant:
    """One ALLOW ACL: `principal` may `operation` the resource `name` (full name, with the prefix)."""

    principal: Principal
    resource: ResourceType
    name: str
    operation: Operation
    pattern: Pattern = "literal"


def event_classes() -> list[type[events.Event]]:
    """Every event class of the contract."""
    found: list[type[events.Event]] = []
    pending = list(events.Event.__subclasses__())
    while pending:
        cls = pending.pop(0)
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return sorted(found, key=lambda cls: cls.event_type)


@functools.cache
def topic_table() -> dict[str, tuple[frozenset[Principal], frozenset[Principal]]]:
    """Catalog topic name -> (principals that write it, principals that read it); the event
    classes are fixed, so it is derived once."""
    writers: dict[str, set[Principal]] = defaultdict(set)
    readers: dict[str, set[Principal]] = defaultdict(set)
    for cls in event_classes():
        writers[cls.topic].update(cls.emitted_by)
        readers[cls.topic].update(cls.consumed_by)
    return {spec.name: (frozenset(writers[spec.name]), frozenset(readers[spec.name])) for spec in topics.CATALOG}


def grants(prefix: str) -> list[Grant]:
    """Every ACL a platform with topic prefix `prefix` needs, and nothing more: per topic the
    table's READ and WRITE, per service its own consumer group, the alerter's receiver topics
    (created and written under `<prefix>.alerts`) and the autoscaler's view of the groups' lag.
    `admin` is the brokers' super user."""
    found: set[Grant] = set()
    for name, (writers, readers) in topic_table().items():
        full = f"{prefix}.{name}"
        found.update(Grant(who, "topic", full, "WRITE") for who in writers)
        found.update(Grant(who, "topic", full, "READ") for who in readers)
    found.update(Grant(who, "group", f"{prefix}.{who}", "READ") for who in topics.GROUP_MEMBERS)
    receivers = f"{prefix}.{topics.ALERT_RECEIVER_PREFIX}"
    found.update(Grant("alerter", "topic", receivers, op, "prefixed") for op in ("CREATE", "WRITE"))
    found.update(stream_grants(prefix))
    # The autoscaler sees the consumer groups' offsets and the topics' ends (their lag), no event.
    for member in topics.GROUP_MEMBERS:
        found.add(Grant("autoscaler", "group", f"{prefix}.{member}", "DESCRIBE"))
        found.update(
            Grant("autoscaler", "topic", f"{prefix}.{name}", "DESCRIBE")
            for name, (_, readers) in topic_table().items()
            if member in readers
        )
    return sorted(found)


def stream_grants(prefix: str) -> set[Grant]:
    """Streaming inference's ACLs: outside producers write every model's input topic; serving
    creates both topics of a model it serves, reads the inputs in its scorers' group and writes
    the outputs in transactions (its transactional ids start with `<prefix>.scorer.`); outside
    consumers read the outputs in groups of their own, named `<prefix>.consumer.*`; the
    autoscaler sees the scorers' lag."""
    inputs, outputs = f"{prefix}.{topics.INPUTS}.", f"{prefix}.{topics.OUTPUTS}."
    scorers, readers = f"{prefix}.{topics.SCORER}", f"{prefix}.consumer."
    return {
        Grant("producer", "topic", inputs, "WRITE", "prefixed"),
        *(Grant("serving", "topic", name, "CREATE", "prefixed") for name in (inputs, outputs)),
        Grant("serving", "topic", inputs, "READ", "prefixed"),
        Grant("serving", "topic", outputs, "WRITE", "prefixed"),
        Grant("serving", "group", scorers, "READ"),
        Grant("serving", "transactional_id", f"{scorers}.", "WRITE", "prefixed"),
        Grant("consumer", "topic", outputs, "READ", "prefixed"),
        Grant("consumer", "group", readers, "READ", "prefixed"),
        Grant("autoscaler", "group", scorers, "DESCRIBE"),
        Grant("autoscaler", "topic", inputs, "DESCRIBE", "prefixed"),
    }


def allowed(principal: Principal, operation: Operation, topic: str) -> bool:
    """Whether the table lets `principal` READ or WRITE the catalog topic `topic` (admin: always)."""
    if principal == "admin":
        return True
    writers, readers = topic_table()[topic]
    return principal in (writers if operation == "WRITE" else readers)


def markdown_table() -> str:
    """The docs' ACL table (concepts/trust.md): per topic, who writes and who reads it."""
    lines = ["| topic | written by | read by |", "|---|---|---|"]
    for name, (writers, readers) in topic_table().items():
        lines.append(f"| `<prefix>.{name}` | {', '.join(sorted(writers))} | {', '.join(sorted(readers))} |")
    lines.append(f"| `<prefix>.{topics.INPUTS}.<model>` | producer | serving (group `<prefix>.{topics.SCORER}`) |")
    lines.append(
        f"| `<prefix>.{topics.OUTPUTS}.<model>` | serving (transactional ids `<prefix>.{topics.SCORER}.*`)"
        " | consumer (groups `<prefix>.consumer.*`) |"
    )
    return "\n".join(lines)
