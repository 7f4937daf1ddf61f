"""`python -m services.deployer`: the rollout controller, until SIGINT or SIGTERM.

Serving is the deployer's second entrypoint: `python -m services.deployer.serving`.
"""

from __future__ import annotations

import uvloop

from services.deployer.app import build
from shared.runtime.runner import run_until_stopped

if __name__ == "__main__":
    uvloop.run(run_until_stopped("deployer", build))
