"""Attacks on the console's sessions (the hostile edges' list): what the cookie holds, a login
posted from another site, a logout that must end the session, and a burst of wrong tokens."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from tests.support.hostile import Corpus

GUESSES = 300


async def _login(http: httpx.AsyncClient, token: str, origin: str | None) -> httpx.Response:
    headers = {"Origin": origin} if origin else {}
    return await http.post("/ui/login", data={"token": token, "next": "/ui/"}, headers=headers)


async def run(corpus: Corpus) -> None:
    """Every case of the phase, recorded on the corpus."""
    console = f"http://127.0.0.1:{corpus.settings.console_port}"
    here = console
    token = corpus.tokens["viewer"]
    async with httpx.AsyncClient(base_url=console, timeout=30) as http:
        forged = await _login(http, token, "https://evil.example")
        corpus.record(
            "session: a valid token posted to the login from another site", "session",
            "403, no session cookie", f"{forged.status_code}, cookie {forged.cookies.get('modelbus_console')!r}",
            forged.status_code == 403 and "modelbus_console" not in forged.cookies,
        )  # fmt: skip

        answer = await _login(http, token, here)
        cookie = answer.cookies.get("modelbus_console") or ""
        opened = (await http.get("/ui/", cookies={"modelbus_console": cookie})).status_code
        corpus.record(
            "session: what the console's cookie holds", "session",
            "a random id that opens the console, not the API token",
            f"{answer.status_code}; cookie of {len(cookie)} characters, token in it: {token in cookie}; /ui/ {opened}",
            answer.status_code == 303 and bool(cookie) and token not in cookie and opened == 200,
        )  # fmt: skip
        page = (await http.get("/ui/", cookies={"modelbus_console": cookie})).text
        csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0] if 'name="csrf"' in page else ""
        out = await http.post(
            "/ui/logout", data={"csrf": csrf}, cookies={"modelbus_console": cookie}, headers={"Origin": here}
        )
        after = await http.get("/ui/", cookies={"modelbus_console": cookie})
        corpus.record(
            "session: the cookie kept after logout", "session", "logout 303, then the cookie opens nothing (401)",
            f"logout {out.status_code}, then /ui/ {after.status_code}",
            out.status_code == 303 and after.status_code == 401,
        )  # fmt: skip

        statuses: list[int] = []
        retry_after = ""
        for index in range(GUESSES):
            guess = await _login(http, f"guess-{index:04d}", here)
            statuses.append(guess.status_code)
            retry_after = guess.headers.get("retry-after", retry_after)
        right = await _login(http, token, here)
        checked, slowed = statuses.count(401), statuses.count(429)
        corpus.record(
            f"session: {GUESSES} wrong tokens in a burst from one address", "session",
            "5 checked, the rest 429 with Retry-After (the right token too, meanwhile)",
            f"{checked} checked (401), {slowed} slowed (429, Retry-After {retry_after} s); the right token then:"
            f" {right.status_code}",
            checked == 5 and slowed == GUESSES - 5 and bool(retry_after) and right.status_code == 429,
        )  # fmt: skip
