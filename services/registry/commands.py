"""What operators ask of the registry, as commands, and the handlers that carry them out through
the unit of work (`shared.runtime.commands`): the HTTP routes only parse, authorize and build a
command. Every command is audited in its own transaction (`audited`): the entry is written first,
so an event the action emits carries the entry's id, and a refused action is audited as refused
in a transaction that stands while the action's is rolled back."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

from services.registry import domain
from services.registry.handlers import move
from services.registry.store import RegistryStore
from shared.contract.events import (
    DataArrived,
    LabelsArrived,
    ModelSpecApplied,
    ModelTrained,
    RetrainRequested,
    RolloutCommanded,
)
from shared.contract.spec import ModelSpec
from shared.contract.specparse import SpecError
from shared.runtime.commands import CommandWork
from shared.runtime.httpapi import Principal
from shared.runtime.settings import Role

T = TypeVar("T")
REFUSALS = (domain.RegistryRefusal, domain.NotFound, SpecError)


Store = RegistryStore
Work = CommandWork[RegistryStore]


@dataclass(frozen=True)
class Actor:
    """Who asks: the token's name (the audit log's actor), role, and for an OpenID Connect token
    its subject (the provider's stable id)."""

    actor: str
    role: str
    subject: str = ""
    grants: tuple[tuple[str, Role], ...] = ()  # per workspace (see Principal); none: `role` everywhere

    @classmethod
    def of(cls, who: Principal) -> Actor:
        return cls(actor=who.actor, role=who.role, subject=who.subject, grants=who.grants)

    def may(self, workspace: str, role: Role) -> bool:
        """Whether the actor has at least `role` in `workspace`."""
        return Principal(self.actor, self.role, self.subject, self.grants).may(workspace, role)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Command:
    """An operator's request; `action`, `target` and `detail` are what the audit log records."""

    who: Actor
    reason: str = ""

    @property
    def action(self) -> str:
        raise NotImplementedError

    @property
    def target(self) -> str:
        raise NotImplementedError

    @property
    def model(self) -> str | None:
        """The model whose cached answers the command may change (None: none)."""
        return None

    def detail(self) -> dict[str, Any]:
        return {}

    async def audit(self, store: Store, *, outcome: str = "ok", detail: dict[str, Any] | None = None) -> int:
        """Write this command's audit entry (its own detail unless `detail` is given); its id."""
        return await store.audit(
            actor=self.who.actor,
            subject=self.who.subject,
            role=self.who.role,
            action=self.action,
            target=self.target,
            reason=self.reason,
            outcome=outcome,
            detail=self.detail() if detail is None else detail,
        )


@dataclass(frozen=True, kw_only=True)
class OnModel(Command):
    """A command about a model."""

    name: str
    changes_versions: ClassVar[bool] = False  # whether it may change the model's cached version answers

    @property
    def target(self) -> str:
        return self.name

    @property
    def model(self) -> str | None:
        return self.name if self.changes_versions else None


@dataclass(frozen=True, kw_only=True)
class OnVersion(OnModel):
    """A command about one version."""

    version: int
    changes_versions = True

    @property
    def target(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True, kw_only=True)
class OnAlias(OnModel):
    """A command about one of the model's aliases."""

    alias: str
    changes_versions = True

    @property
    def target(self) -> str:
        return f"{self.name}@{self.alias}"


@dataclass(frozen=True, kw_only=True)
class Approve(OnVersion):
    """Approve a version held for review; the deployer starts its rollout."""

    action = "approve"


@dataclass(frozen=True, kw_only=True)
class Reject(OnVersion):
    """Reject a version that is not serving."""

    action = "reject"


@dataclass(frozen=True, kw_only=True)
class CommandRollout(OnModel):
    """Command the model's rollout; the deployer carries it out or refuses it."""

    command: Literal["start", "promote", "pause", "resume", "rollback"]
    version: int | None = None

    @property
    def action(self) -> str:
        return f"rollout-{self.command}"

    def detail(self) -> dict[str, Any]:
        return {"version": self.version} if self.version else {}


@dataclass(frozen=True, kw_only=True)
class Retrain(OnModel):
    """Ask the trainer to train the model again, on the latest dataset version or a named one."""

    dataset_version: str | None = None
    action = "retrain"

    def detail(self) -> dict[str, Any]:
        return {"dataset_version": self.dataset_version} if self.dataset_version else {}


@dataclass(frozen=True, kw_only=True)
class SetAlias(OnAlias):
    """Point an operator's alias at a version."""

    version: int
    action = "set-alias"

    def detail(self) -> dict[str, Any]:
        return {"version": self.version}


@dataclass(frozen=True, kw_only=True)
class DropAlias(OnAlias):
    """Remove an operator's alias."""

    action = "delete-alias"


@dataclass(frozen=True, kw_only=True)
class SetTag(OnVersion):
    """Set a tag on a version."""

    key: str
    value: str
    action = "set-tag"

    def detail(self) -> dict[str, Any]:
        return {"key": self.key, "value": self.value}


@dataclass(frozen=True, kw_only=True)
class DropTag(OnVersion):
    """Remove a tag from a version."""

    key: str
    action = "delete-tag"

    def detail(self) -> dict[str, Any]:
        return {"key": self.key}


@dataclass(frozen=True, kw_only=True)
class ApplySpec(Command):
    """Validate and apply a model spec; a changed spec is a new revision, published."""

    spec_yaml: str
    named: str  # the model the YAML names, for the audit log (read before validation)
    check: Callable[[str], ModelSpec] = field(compare=False)  # parses and validates (Feast included)
    action = "apply-spec"

    @property
    def target(self) -> str:
        return self.named


@dataclass(frozen=True, kw_only=True)
class Publish(Command):
    """Publish an outside producer's event (data or labels) as the producer would."""

    event: DataArrived | LabelsArrived

    @property
    def action(self) -> str:
        return f"publish-{self.event.event_type}"

    @property
    def target(self) -> str:
        return self.event.dataset if isinstance(self.event, DataArrived) else self.event.model

    def detail(self) -> dict[str, Any]:
        if isinstance(self.event, DataArrived):
            return {"version": self.event.version, "uri": self.event.uri}
        return {"labels": len(self.event.labels)}


@dataclass(frozen=True)
class Applied:
    """A spec applied: its revision, digest, and whether it changed anything."""

    model: str
    revision: int
    sha256: str
    changed: bool


C = TypeVar("C", bound=Command)


def audited(
    handler: Callable[[C, Work, int], Awaitable[T]],
) -> Callable[[C, Work], Awaitable[T]]:
    """The handler with its audit entry: written first (the handler gets its id), or, when the
    handler refuses, written apart as `refused` with the error."""

    async def run(command: C, uow: Work) -> T:
        audit_id = await command.audit(uow.store)
        try:
            return await handler(command, uow, audit_id)
        except REFUSALS as exc:
            refused = {**command.detail(), "error": str(exc)}

            async def keep(store: Store) -> None:
                await command.audit(store, outcome="refused", detail=refused)

            await uow.apart(keep)
            raise

    return run


def _said(verb: str, who: Actor, reason: str) -> str:
    return f"{verb} by {who.actor}: {reason}".rstrip(": ")


@audited
async def approve(command: Approve, uow: Work, audit_id: int) -> str:
    status = await uow.store.status_of(command.name, command.version, lock=True)
    domain.check_approval(command.name, command.version, status)
    said = _said("approved", command.who, command.reason)
    await move(uow.store, command.name, command.version, "approved", said)
    return uow.emit(
        RolloutCommanded(
            model=command.name,
            command="approve",
            version=command.version,
            actor=command.who.actor,
            reason=command.reason,
            audit_id=audit_id,
        )
    )


@audited
async def reject(command: Reject, uow: Work, audit_id: int) -> None:
    status = await uow.store.status_of(command.name, command.version, lock=True)
    domain.check_rejection(command.name, command.version, status)
    said = _said("rejected", command.who, command.reason)
    await move(uow.store, command.name, command.version, "rejected", said)


@audited
async def rollout(command: CommandRollout, uow: Work, audit_id: int) -> str:
    await uow.store.get_model(command.name)
    if command.command == "start":
        if command.version is None:
            raise domain.RegistryRefusal("starting a rollout needs a version")
        domain.check_rollout_start(
            command.name, command.version, await uow.store.status_of(command.name, command.version)
        )
    elif command.version is not None:
        await uow.store.status_of(command.name, command.version)
    return uow.emit(
        RolloutCommanded(
            model=command.name,
            command=command.command,
            version=command.version,
            actor=command.who.actor,
            reason=command.reason,
            audit_id=audit_id,
        )
    )


@audited
async def retrain(command: Retrain, uow: Work, audit_id: int) -> str:
    spec = await uow.store.latest_spec(command.name)
    if command.dataset_version is not None:
        await uow.store.get_dataset(spec.spec["dataset"], command.dataset_version)
    return uow.emit(
        RetrainRequested(
            model=command.name,
            reason="operator",
            dataset_version=command.dataset_version,
            requested_by=command.who.actor,
        )
    )


@audited
async def set_alias(command: SetAlias, uow: Work, audit_id: int) -> None:
    domain.check_alias(command.alias)
    await uow.store.status_of(command.name, command.version)
    await uow.store.set_alias(command.name, command.alias, command.version, by=command.who.actor)


@audited
async def drop_alias(command: DropAlias, uow: Work, audit_id: int) -> None:
    domain.check_alias(command.alias)
    if not await uow.store.drop_alias(command.name, command.alias):
        raise domain.NotFound(f"{command.name} has no alias {command.alias!r}")


@audited
async def set_tag(command: SetTag, uow: Work, audit_id: int) -> None:
    await uow.store.status_of(command.name, command.version)
    await uow.store.set_tag(command.name, command.version, command.key, command.value)


@audited
async def drop_tag(command: DropTag, uow: Work, audit_id: int) -> None:
    if not await uow.store.drop_tag(command.name, command.version, command.key):
        raise domain.NotFound(f"{command.name}@{command.version} has no tag {command.key!r}")


@audited
async def apply_spec(command: ApplySpec, uow: Work, audit_id: int) -> Applied:
    spec = await asyncio.to_thread(command.check, command.spec_yaml)
    owner = await uow.store.workspace_of(spec.model)
    for workspace in sorted({spec.workspace, owner or spec.workspace}):
        if not command.who.may(workspace, "admin"):
            raise domain.Forbidden(
                f"{command.who.actor} may not apply specs in workspace {workspace!r}: that needs admin there"
                + (f" (model {spec.model} belongs to {owner!r})" if owner and owner != spec.workspace else "")
            )
    revision, changed = await uow.store.apply_spec(spec, command.spec_yaml, applied_by=command.who.actor)
    if changed:
        uow.emit(
            ModelSpecApplied(
                model=spec.model,
                revision=revision.revision,
                spec=spec,
                spec_yaml=command.spec_yaml,
                spec_sha256=revision.sha256,
                applied_by=command.who.actor,
            )
        )
    return Applied(model=spec.model, revision=revision.revision, sha256=revision.sha256, changed=changed)


async def publish(command: Publish, uow: Work) -> str:
    """Stage the producer's event with its audit entry, which names the event's id. Labels take
    operator in their model's workspace; a dataset's new version, in the workspace of every model
    that trains on it (it starts their retraining). Refused: audited as such."""
    event = command.event
    if isinstance(event, LabelsArrived):
        needed = {await uow.store.workspace_of(event.model) or "default"}
    else:
        needed = await uow.store.workspaces_of_dataset(event.dataset) or {"default"}
    barred = [workspace for workspace in sorted(needed) if not command.who.may(workspace, "operator")]
    if barred:
        error = f"{command.who.actor} may not publish for workspace {barred[0]!r}: that needs operator there"

        async def keep(store: Store) -> None:
            await command.audit(store, outcome="refused", detail={**command.detail(), "error": error})

        await uow.apart(keep)
        raise domain.Forbidden(error)
    event_id = uow.emit(event)
    await command.audit(uow.store, detail={**command.detail(), "event_id": event_id})
    return event_id


@dataclass(frozen=True, kw_only=True)
class RegisterImport(OnModel):
    """Register a model trained elsewhere, checked in the sandbox and stored: its ModelTrained."""

    trained: ModelTrained
    facts: dict[str, Any] = field(default_factory=dict)  # what the audit entry says of the upload
    action = "import"
    changes_versions = True

    def detail(self) -> dict[str, Any]:
        return self.facts


async def register_import(command: RegisterImport, uow: Work) -> str:
    """Stage the import's ModelTrained with its audit entry, which names the event's id."""
    event_id = uow.emit(command.trained)
    await command.audit(uow.store, detail={**command.detail(), "event_id": event_id})
    return event_id


@dataclass(frozen=True, kw_only=True)
class Record(Command):
    """An audit entry alone: an action done outside the registry's tables (a dead letter replayed
    to Kafka), or refused before it reached them (an import the sandbox refused)."""

    did: str
    about: str
    outcome: str = "ok"
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def action(self) -> str:
        return self.did

    @property
    def target(self) -> str:
        return self.about

    def detail(self) -> dict[str, Any]:
        return self.facts


async def record(command: Record, uow: Work) -> int:
    return await command.audit(uow.store, outcome=command.outcome)
