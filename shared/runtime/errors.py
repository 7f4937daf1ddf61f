"""What a handler may raise: a failure worth retrying, told apart from a bad message."""

from __future__ import annotations

from aiokafka.errors import KafkaError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from shared.runtime.artifacts import ArtifactUnavailable


class TransientError(Exception):
    """Raised by a handler for a failure worth retrying (a dependency is briefly away)."""


class Refused(Exception):
    """Raised by a handler for an event whose claims fail a check (a spec revision that skips
    ahead, a command with no audit entry): it is dead-lettered at once with this reason."""


TRANSIENT = (
    TransientError,
    OperationalError,
    InterfaceError,
    KafkaError,
    ConnectionError,
    TimeoutError,
    ArtifactUnavailable,
)


def is_transient(exc: BaseException) -> bool:
    """Whether a handler failure is worth retrying with backoff."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, TRANSIENT)
