"""Everything the console shows comes through an API, with the viewer's own token: the registry
(who a token is, models, versions, history, lineage, datasets, dead letters and their replay), the
alerter (alerts, silences, acknowledgements), the monitor (window history), Jaeger (traces) and
Prometheus (latency and throughput). A source that does not answer is named on the page; only the
registry's absence fails a page (it is what the page is about)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from shared.runtime.settings import Settings

TIMEOUT = httpx.Timeout(5.0, connect=2.0)


class Unavailable(Exception):
    """A source did not answer, or refused; the message names it and why."""


@dataclass
class Sources:
    """HTTP clients of the other services, shared by every page of one process."""

    settings: Settings
    client: httpx.AsyncClient = field(default_factory=lambda: httpx.AsyncClient(timeout=TIMEOUT))

    async def _get(self, what: str, url: str, token: str | None, **params: Any) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            answer = await self.client.get(url, params=params, headers=headers)
        except httpx.HTTPError as exc:
            raise Unavailable(f"{what} did not answer at {url}: {type(exc).__name__}") from None
        if answer.status_code == 404:
            raise LookupError(f"{what}: not found")
        if answer.status_code >= 400:
            raise Unavailable(f"{what} answered {answer.status_code}: {answer.text[:200]}")
        return answer.json()

    async def _post(self, what: str, url: str, token: str, body: dict[str, Any]) -> Any:
        try:
            answer = await self.client.post(url, json=body, headers={"Authorization": f"Bearer {token}"})
        except httpx.HTTPError as exc:
            raise Unavailable(f"{what} did not answer at {url}: {type(exc).__name__}") from None
        if answer.status_code >= 400:
            detail = answer.json().get("detail") if "json" in answer.headers.get("content-type", "") else answer.text
            raise Unavailable(f"{what} refused ({answer.status_code}): {str(detail)[:300]}")
        return answer.json()

    # ------------------------------------------------------------ registry

    def _registry(self, path: str) -> str:
        return f"{self.settings.api_url.rstrip('/')}{path}"

    async def registry(self, token: str, path: str, **params: Any) -> Any:
        """A registry read (LookupError when it answers 404)."""
        return await self._get("the registry", self._registry(path), token, **params)

    async def whoami(self, token: str) -> dict[str, str] | None:
        """The token's actor and role, None if the registry does not know it."""
        if not token.strip():
            return None
        try:
            answer = await self.client.get(self._registry("/v1/whoami"), headers={"Authorization": f"Bearer {token}"})
        except httpx.HTTPError as exc:
            raise Unavailable(f"the registry did not answer at {self.settings.api_url}: {type(exc).__name__}") from None
        if answer.status_code in (401, 403):
            return None
        if answer.status_code != 200:
            raise Unavailable(f"the registry answered {answer.status_code}: {answer.text[:200]}")
        found: dict[str, str] = answer.json()
        return found

    async def registry_up(self) -> None:
        """Unavailable unless the registry's /healthz answers 200."""
        try:
            answer = await self.client.get(self._registry("/healthz"))
        except httpx.HTTPError as exc:
            raise Unavailable(f"the registry did not answer at {self.settings.api_url}: {type(exc).__name__}") from None
        if answer.status_code != 200:
            raise Unavailable(f"the registry's /healthz answered {answer.status_code}")

    async def replay(self, token: str, letter: str) -> dict[str, Any]:
        done: dict[str, Any] = await self._post(
            "the registry", self._registry(f"/v1/dead-letters/{letter}/replay"), token, {}
        )
        return done

    # ------------------------------------------------------------ alerter

    def _alerter(self, path: str) -> str:
        return f"{self.settings.alerter_url.rstrip('/')}{path}"

    async def alerts(self, token: str, **params: Any) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await self._get("the alerter", self._alerter("/v1/alerts"), token, **params)
        return found

    async def silences(self, token: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await self._get("the alerter", self._alerter("/v1/silences"), token)
        return found

    async def ack(self, token: str, fingerprint: str, comment: str) -> dict[str, Any]:
        done: dict[str, Any] = await self._post(
            "the alerter", self._alerter(f"/v1/alerts/{fingerprint}/ack"), token, {"comment": comment}
        )
        return done

    async def silence(self, token: str, matchers: list[str], duration: str, comment: str) -> dict[str, Any]:
        body = {"matchers": matchers, "duration": duration, "comment": comment}
        done: dict[str, Any] = await self._post("the alerter", self._alerter("/v1/silences"), token, body)
        return done

    # ------------------------------------------------------------ monitor

    async def windows(self, token: str, model: str, limit: int = 500) -> dict[str, Any]:
        url = f"{self.settings.monitor_url.rstrip('/')}/v1/models/{model}/windows"
        found: dict[str, Any] = await self._get("the monitor", url, token, limit=limit)
        return found

    # ------------------------------------------------------------ traces

    async def trace(self, trace_id: str) -> dict[str, Any]:
        url = f"{self.settings.trace_query_url.rstrip('/')}/api/traces/{trace_id}"
        found = await self._get("Jaeger", url, None)
        data = found.get("data") or []
        if not data:
            raise LookupError(f"trace {trace_id} is not in Jaeger")
        trace: dict[str, Any] = data[0]
        return trace

    # ------------------------------------------------------------ metrics

    async def series(self, queries: dict[str, str], *, seconds: float = 3600, step: float = 15) -> dict[str, Any]:
        """Several Prometheus range queries at once: name -> the `result` list of each."""
        end = time.time()
        url = f"{self.settings.prometheus_url.rstrip('/')}/api/v1/query_range"

        async def one(query: str) -> Any:
            found = await self._get("Prometheus", url, None, query=query, start=end - seconds, end=end, step=step)
            return found["data"]["result"]

        answers = await asyncio.gather(*(one(q) for q in queries.values()))
        return dict(zip(queries, answers, strict=True))

    async def close(self) -> None:
        await self.client.aclose()
