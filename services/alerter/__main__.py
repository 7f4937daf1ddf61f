"""`python -m services.alerter`: the alerter and its HTTP API, until SIGINT or SIGTERM."""

from __future__ import annotations

import uvloop

from services.alerter.app import build
from shared.runtime.runner import serve_until_stopped

if __name__ == "__main__":
    uvloop.run(serve_until_stopped("alerter", build, lambda s: (s.alerter_host, s.alerter_port)))
