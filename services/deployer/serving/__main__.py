"""`python -m services.deployer.serving`: serving, until SIGINT or SIGTERM."""

from __future__ import annotations

import uvloop

from services.deployer.serving.app import Serving, build
from shared.runtime.runner import serve_until_stopped
from shared.runtime.settings import Settings
from shared.runtime.threads import narrow


def process(settings: Settings) -> Serving:
    """The serving process: its models' calls on `model_threads` native threads (shared.runtime.threads)."""
    narrow(settings.model_threads)
    return build(settings)


if __name__ == "__main__":
    uvloop.run(serve_until_stopped("serving", process, lambda settings: (settings.serving_host, settings.serving_port)))
