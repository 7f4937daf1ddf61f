"""A small client of the registry's HTTP API, used by the CLI."""

from __future__ import annotations

from typing import Any

import httpx

from shared.runtime.settings import Settings


class ApiError(Exception):
    """The API refused a request or could not be reached; the message says why."""

    def __init__(self, message: str, *, status: int | None = None, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.errors = errors or []


class RegistryClient:
    """Calls the registry API (or, with `service="alerter"`, the alerter's) with the settings' URL
    and bearer token."""

    def __init__(self, settings: Settings, *, timeout: float = 30.0, service: str = "registry") -> None:
        token = settings.api_token.get_secret_value()
        self.service = service
        self.base = (settings.alerter_url if service == "alerter" else settings.api_url).rstrip("/")
        self.http = httpx.Client(
            base_url=self.base,
            headers={"Authorization": f"Bearer {token}"} if token else {},
            timeout=timeout,
        )

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.http.close()

    def call(self, method: str, path: str, **options: Any) -> Any:
        """One request (the options of `send`); returns the decoded JSON, raises ApiError with the API's reason."""
        return self.send(method, path, **options).json()

    def send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        files: dict[str, Any] | None = None,
        data: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """One request; returns the response, raises ApiError with the API's reason."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        extra: dict[str, Any] = {"timeout": timeout} if timeout is not None else {}
        try:
            response = self.http.request(method, path, json=json, params=query, files=files, data=data, **extra)
        except httpx.TransportError as exc:
            variable = "MODELBUS_ALERTER_URL" if self.service == "alerter" else "MODELBUS_API_URL"
            raise ApiError(
                f"the {self.service} API at {self.base} is unreachable ({type(exc).__name__}); "
                f"is the {self.service} running (`python -m services.{self.service}`) and {variable} right?"
            ) from None
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {"detail": response.text}
            detail = body.get("detail") if isinstance(body, dict) else body
            if isinstance(detail, list):  # FastAPI's request validation errors
                detail = "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" for d in detail)
            hint = " (set MODELBUS_API_TOKEN)" if response.status_code == 401 else ""
            raise ApiError(
                f"{response.status_code}: {detail}{hint}",
                status=response.status_code,
                errors=body.get("errors", []) if isinstance(body, dict) else [],
            )
        return response
