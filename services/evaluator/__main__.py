"""`python -m services.evaluator`: the evaluator, until SIGINT or SIGTERM."""

from __future__ import annotations

import uvloop

from services.evaluator.app import build
from shared.runtime.runner import run_until_stopped

if __name__ == "__main__":
    uvloop.run(run_until_stopped("evaluator", build))
