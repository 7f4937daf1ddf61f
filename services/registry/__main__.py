"""`python -m services.registry`: the registry's consumers and its HTTP API in one process."""

from __future__ import annotations

import uvloop

from services.registry.app import build
from shared.runtime.runner import serve_until_stopped

if __name__ == "__main__":
    uvloop.run(
        serve_until_stopped("registry", build, lambda settings: (settings.registry_host, settings.registry_port))
    )
