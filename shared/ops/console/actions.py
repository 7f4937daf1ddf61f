"""What an operator does from the console, through the services' APIs with the operator's own
token: acknowledge and silence alerts (the alerter audits them) and replay dead letters (the
registry audits it). Each form carries the session's CSRF token; without it, or from a viewer, 403."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import FastAPI, Form, Request, Response
from fastapi.responses import RedirectResponse

from shared.ops.console import auth
from shared.ops.console.app import Console
from shared.ops.console.sources import Unavailable
from shared.runtime.httpapi import Principal

Csrf = Annotated[str, Form()]


def _back(path: str, done: str) -> RedirectResponse:
    return RedirectResponse(f"{auth.PREFIX}{path}?done={quote(done)}", status_code=303)


def _forbidden(why: str) -> Response:
    return Response(f"forbidden: {why}", status_code=403, media_type="text/plain")


def add_actions(api: FastAPI, console: Console) -> None:
    """Register the operator actions under /ui."""
    ui = auth.PREFIX

    async def operator(request: Request, csrf: str) -> Principal | Response:
        who = await console.who(request)
        if who is None:
            return Response("log in first", status_code=401, media_type="text/plain")
        if not console.sessions.csrf_ok(request, csrf):
            return _forbidden("the form's CSRF token is missing or wrong")
        if not auth.may(who, "operator"):
            return _forbidden(f"role {who.role} may not do this; it needs operator")
        return who

    @api.post(f"{ui}/alerts/{{fingerprint}}/ack", include_in_schema=False)
    async def ack(
        request: Request, fingerprint: str, csrf: Csrf = "", comment: Annotated[str, Form()] = ""
    ) -> Response:
        who = await operator(request, csrf)
        if isinstance(who, Response):
            return who
        try:
            await console.sources.ack(console.sessions.token_of(request) or "", fingerprint, comment[:2000])
        except Unavailable as exc:
            return console.refuse(request, who, 502, "The alert was not acknowledged", str(exc))
        return _back("/alerts", f"acknowledged {fingerprint[:12]} as {who.actor}")

    @api.post(f"{ui}/alerts/{{fingerprint}}/silence", include_in_schema=False)
    async def silence(
        request: Request,
        fingerprint: str,
        csrf: Csrf = "",
        duration: Annotated[str, Form()] = "1h",
        comment: Annotated[str, Form()] = "",
    ) -> Response:
        who = await operator(request, csrf)
        if isinstance(who, Response):
            return who
        token = console.sessions.token_of(request) or ""
        try:
            alert = next(
                (a for a in await console.sources.alerts(token, limit=1000) if a["fingerprint"] == fingerprint), None
            )
            if alert is None:
                return console.refuse(
                    request, who, 404, "No such alert", f"no alert has the fingerprint {fingerprint!r}"
                )
            matchers = [f'{k}="{v}"' for k, v in sorted(alert["labels"].items()) if k in ("model", "version", "kind")]
            await console.sources.silence(
                token, matchers, duration, comment or f"silenced from the console by {who.actor}"
            )
        except Unavailable as exc:
            return console.refuse(request, who, 502, "The alert was not silenced", str(exc))
        return _back("/alerts", f"silenced {', '.join(matchers)} for {duration}")

    @api.post(f"{ui}/dead-letters/{{letter_id}}/replay", include_in_schema=False)
    async def replay_letter(request: Request, letter_id: str, csrf: Csrf = "") -> Response:
        who = await operator(request, csrf)
        if isinstance(who, Response):
            return who
        try:
            done = await console.sources.replay(console.sessions.token_of(request) or "", letter_id)
        except Unavailable as exc:
            return console.refuse(request, who, 409, "Not replayed", str(exc))
        return _back("/dead-letters", f"replayed {letter_id} to {done['topic']}")
