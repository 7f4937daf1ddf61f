"""What operators' tools ask the registry besides models: who a token is (`GET /v1/whoami`, how
the console learns a session's role), the dead letters (`GET /v1/dead-letters`: reason, origin
and body of each, newest first, a page at a time) and their replay
(`POST /v1/dead-letters/{id}/replay`, operator, audited: the original body, key and headers
published to the original topic again)."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, HTTPException, Response
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.registry import commands, store
from shared.contract import access
from shared.runtime.commands import SqlCommands
from shared.runtime.httpapi import Limit, Operator, Viewer
from shared.runtime.settings import Settings
from shared.runtime.topicreader import (
    StoredLetter,
    dead_letter_page,
    original_value,
    parse_cursor,
    read_letter,
    replay,
    write_cursor,
)

BODY_SHOWN = 20_000  # characters of a dead letter's body the list shows


class Replay(BaseModel):
    """What a replay may change: the body (the key and the headers stay the original's)."""

    value: str | None = Field(default=None, description="A corrected message body; unset: the original one.")


def letter_view(item: StoredLetter) -> dict[str, Any]:
    """A dead letter as the API shows it: where it came from, why, and its body (as text)."""
    letter = item.letter
    raw = original_value(letter)
    try:
        body = json.dumps(json.loads(raw), indent=2)
    except ValueError:
        body = raw.decode("utf-8", "replace")
    return {
        "id": item.id,
        "occurred_at": letter.occurred_at.isoformat(),
        "consumer": letter.consumer,
        "original_topic": letter.original_topic,
        "original_partition": letter.original_partition,
        "original_offset": letter.original_offset,
        "original_key": base64.b64decode(letter.original_key_b64).decode("utf-8", "replace")
        if letter.original_key_b64
        else None,
        "original_size_bytes": letter.original_size_bytes,
        "original_truncated": letter.original_truncated,
        "error_type": letter.error_type,
        "reason": letter.reason,
        "body": body[:BODY_SHOWN],
    }


def add_operator_routes(api: FastAPI, settings: Settings, *, sessions: async_sessionmaker[AsyncSession]) -> None:
    """Add whoami and the dead-letter routes."""

    @api.get("/v1/whoami", tags=["read"])
    async def whoami(who: Viewer) -> dict[str, str]:
        """The actor, role and (for an OpenID Connect token) subject of the token presented."""
        return {"actor": who.actor, "role": who.role, "subject": who.subject}

    @api.get("/v1/dead-letters", tags=["read"])
    async def dead_letters(
        _: Viewer, response: Response, limit: Limit = 500, before: str | None = None
    ) -> list[dict[str, Any]]:
        """The dead letters, newest first, a page at a time: `limit` of them, and when older ones
        remain a `Link: <...?before=...>; rel="next"` header naming the next page (RFC 8288)."""
        try:
            cursor = parse_cursor(before) if before is not None else None
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        try:
            letters, following = await dead_letter_page(settings, limit, cursor)
        except (LookupError, TimeoutError) as exc:
            raise HTTPException(503, f"the dead-letter topic cannot be read: {exc}") from None
        if following is not None:
            query = urlencode({"limit": limit, "before": write_cursor(following)})
            response.headers["Link"] = f'</v1/dead-letters?{query}>; rel="next"'
        return [letter_view(item) for item in letters]

    @api.post("/v1/dead-letters/{letter_id}/replay", tags=["act"])
    async def replay_letter(who: Operator, letter_id: str, body: Replay | None = None) -> dict[str, str]:
        """Publish a dead letter's original message to its topic again (or, with `value`, a
        corrected body with the original key and headers); audited."""
        try:
            item = await read_letter(settings, letter_id)
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from None
        except TimeoutError as exc:
            raise HTTPException(503, f"the dead-letter topic cannot be read: {exc}") from None
        topic = item.letter.original_topic
        writers = access.topic_table().get(topic.removeprefix(f"{settings.topic_prefix}."), (frozenset(), None))[0]
        if "registry" not in writers:
            # The registry writes only what the contract lets it (data, labels, specs, commands,
            # retrains); a letter of another service's topic is replayed by the platform's admin.
            written_by = ", ".join(sorted(writers)) or "no service"
            raise HTTPException(
                409,
                f"the registry may not write {topic} (written by {written_by}); "
                f"replay it as the platform admin: modelbus dlq replay --direct {letter_id}",
            )
        value = body.value.encode() if body is not None and body.value is not None else None
        try:
            await replay(settings, [item.letter], value=value)
        except (ValueError, TimeoutError) as exc:
            raise HTTPException(409, str(exc)) from None
        facts = {
            "letter": letter_id,
            "consumer": item.letter.consumer,
            **({"corrected_sha256": hashlib.sha256(value).hexdigest()} if value is not None else {}),
        }
        replayed = commands.Record(
            who=commands.Actor.of(who),
            reason=item.letter.reason[:500],
            did="replay-dead-letter",
            about=item.letter.original_topic,
            facts=facts,
        )
        audits: SqlCommands[commands.Store] = SqlCommands(sessions, store.SqlStore, bus=None)
        await audits.run(commands.record, replayed)
        return {"action": "replay-dead-letter", "letter": letter_id, "topic": item.letter.original_topic}
