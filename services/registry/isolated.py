"""`python -m services.registry.isolated`: an upload opened, checked, smoke-tested and profiled in
a child process of the sandbox (shared.runtime.sandbox: no secrets, resource limits), as the
import route asks; the answer is the prepared version (its files in the request's folder) or the
refusal's reason. Nothing of an upload is loaded in the registry's own process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.registry.importing import Upload, prepare_import
from services.registry.sources import ImportRefused
from shared.contract.spec import ModelSpec
from shared.runtime.sandbox import serve_request


def prepared(request: dict[str, Any]) -> dict[str, Any]:
    """The import's files and facts, as JSON."""
    paths = {k: Path(request[k]) if request.get(k) else None for k in ("model", "reference", "test")}
    upload = Upload(
        model=Path(request["model"]),
        model_name=request["model_name"],
        reference=paths["reference"],
        reference_name=request["reference_name"],
        test=paths["test"],
        test_name=request["test_name"],
        target=request["target"],
        reason=request["reason"],
        actor=request["actor"],
    )
    spec = ModelSpec.model_validate(request["spec"])
    found = prepare_import(
        upload, spec, run_id=request["run_id"], work=Path(request["work"]), max_bytes=request["max_bytes"]
    )
    return found.as_json()


HANDLE, REFUSALS = prepared, (ImportRefused,)
if __name__ == "__main__":
    serve_request(HANDLE, REFUSALS)
