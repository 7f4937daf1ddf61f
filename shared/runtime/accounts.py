"""Service accounts: long-lived bearer tokens for automation (a CI pipeline importing models into
one workspace), each with one role in one workspace (or `*`: every one), made and revoked by an
admin through the registry's API. The token is shown once, when it is made; the platform keeps
only its SHA-256 (the token is 256 random bits, so a digest cannot be searched back) and finds an
account by that digest. Every API reads the accounts table: a revoked or expired token stops
working within `Accounts.seconds`.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, String, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from shared.runtime.db import Base
from shared.runtime.settings import Role

PREFIX = "mbsa_"  # what a service account's token starts with (secret scanners can look for it)


class AccountRow(Base):
    """A service account: its name, scope, who made it, and its token's digest."""

    __tablename__ = "service_accounts"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    workspace: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_by: Mapped[str | None] = mapped_column(String(200))


@dataclass(frozen=True)
class Account:
    """A service account as the API shows it (never its token)."""

    id: str
    name: str
    workspace: str
    role: Role
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    revoked_by: str | None

    @classmethod
    def of(cls, row: AccountRow) -> Account:
        return cls(
            row.id,
            row.name,
            row.workspace,
            row.role,  # type: ignore[arg-type]
            row.created_by,
            row.created_at,
            row.expires_at,
            row.revoked_at,
            row.revoked_by,
        )

    def active(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "workspace": self.workspace,
            "role": self.role,
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "revoked_by": self.revoked_by,
        }


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


async def create(
    session: AsyncSession, *, name: str, workspace: str, role: Role, by: str, expires_at: datetime | None
) -> tuple[Account, str]:
    """A new account and its token (the only time the token is known)."""
    token = new_token()
    row = AccountRow(
        id=str(uuid.uuid4()),
        name=name,
        workspace=workspace,
        role=role,
        token_sha256=digest(token),
        created_by=by,
        created_at=datetime.now(UTC),
        expires_at=expires_at,
    )
    session.add(row)
    await session.flush()
    return Account.of(row), token


async def revoke(session: AsyncSession, account_id: str, *, by: str) -> Account | None:
    """Revoke an account now (again: nothing changes); None if there is no such account."""
    row = await session.get(AccountRow, account_id, with_for_update=True)
    if row is None:
        return None
    if row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)
        row.revoked_by = by
    await session.flush()
    return Account.of(row)


async def listed(session: AsyncSession, workspaces: frozenset[str] | None) -> list[Account]:
    """The accounts of these workspaces (None: all), newest first."""
    query = select(AccountRow).order_by(AccountRow.created_at.desc())
    if workspaces is not None:
        query = query.where(AccountRow.workspace.in_(sorted(workspaces)))
    return [Account.of(row) for row in (await session.scalars(query)).all()]


async def found(session: AsyncSession, account_id: str) -> Account | None:
    row = await session.get(AccountRow, account_id)
    return Account.of(row) if row is not None else None


class Accounts:
    """Token -> active account, read from the table at most every `seconds` per token."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, seconds: float = 5.0) -> None:
        self.sessions = sessions
        self.seconds = seconds
        self._known: dict[str, tuple[float, Account | None]] = {}

    async def of(self, token: str) -> Account | None:
        key = digest(token)
        now = time.monotonic()
        kept = self._known.get(key)
        if kept is None or now - kept[0] >= self.seconds:
            async with self.sessions() as session:
                row = await session.scalar(select(AccountRow).where(AccountRow.token_sha256 == key))
            if len(self._known) > 10_000:
                self._known.clear()
            kept = (now, Account.of(row) if row is not None else None)
            self._known[key] = kept
        account = kept[1]
        return account if account is not None and account.active(datetime.now(UTC)) else None
