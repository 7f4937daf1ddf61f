"""`python -m services.trainer`: the trainer, until SIGINT or SIGTERM."""

from __future__ import annotations

import uvloop

from services.trainer.app import build
from shared.runtime.runner import run_until_stopped

if __name__ == "__main__":
    uvloop.run(run_until_stopped("trainer", build))
