"""`python -m services.monitor`: the monitor, until SIGINT or SIGTERM."""

from __future__ import annotations

import uvloop

from services.monitor.app import build
from shared.runtime.runner import run_until_stopped

if __name__ == "__main__":
    uvloop.run(run_until_stopped("monitor", build))
