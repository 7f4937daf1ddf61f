"""`python -m services.deployer.serving`: serving, until SIGINT or SIGTERM."""

from __future__ import annotations

import uvloop

from services.deployer.serving.app import build
from shared.runtime.runner import serve_until_stopped

if __name__ == "__main__":
    uvloop.run(serve_until_stopped("serving", build, lambda settings: (settings.serving_host, settings.serving_port)))
