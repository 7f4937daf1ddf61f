"""`python -m services.evaluator.isolated`: a version's files judged in a child process of the
sandbox (shared.runtime.sandbox), as services.evaluator.judge.Judge asks: the request names the
spec and the folder the files were fetched into (digest-checked); the answer is the verdict."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from services.evaluator.judge import judge_files
from shared.contract.spec import ModelSpec
from shared.runtime.modelfile import preload
from shared.runtime.sandbox import serve_request


def judged(request: dict[str, Any]) -> dict[str, Any]:
    """The verdict on the files, as JSON."""
    spec = ModelSpec.model_validate(request["spec"])
    verdict = judge_files(spec, Path(request["folder"]), model_threads=int(request.get("threads", 1)))
    found = dataclasses.asdict(verdict)
    found["gates"] = [g.model_dump(mode="json") for g in verdict.gates]
    return found


HANDLE, REFUSALS = judged, ()
preload()  # a warm sandbox imports once what each forked child runs
if __name__ == "__main__":
    serve_request(HANDLE, REFUSALS)
