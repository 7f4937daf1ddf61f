"""The modelbus console: a web UI at /ui of the registry's process.

Pages: Models, Model (versions, rollout timeline, drift, live performance, latency), Version
(gates, manifest, artifacts, candidates, lineage graph), Dataset, Alerts (ack and silence),
Dead letters (replay), Trace (a lifecycle's waterfall), and search. It lives in the registry
because the registry already holds most of what it shows (models, versions, lineage, rollout and
drift history) and already checks the API's tokens and roles: one process fewer to run, and the
same login. The rest it reads through the other services' APIs.
"""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.registry.console.actions import add_actions
from services.registry.console.app import Console, add_frame
from services.registry.console.pages import add_pages
from services.registry.console.sources import Sources
from shared.runtime.settings import Settings


def add_console(api: FastAPI, settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> Console:
    """Mount the console's pages, actions and assets on the registry's application."""
    console = Console(settings=settings, sessions=sessions, sources=Sources(settings))
    add_frame(api, console)
    add_pages(api, console)
    add_actions(api, console)
    return console
