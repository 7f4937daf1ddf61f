"""The example spec and its ModelSpecApplied, for any model name."""

from __future__ import annotations

import functools
from pathlib import Path

from shared.contract.events import ModelSpecApplied
from shared.contract.spec import ModelSpec
from shared.runtime.specfile import load_spec

ROOT = Path(__file__).resolve().parents[2]


@functools.cache
def _example() -> ModelSpec:
    return load_spec((ROOT / "schemas/examples/model-spec.yaml").read_text())


def example_spec(model: str | None = None) -> ModelSpec:
    """schemas/examples/model-spec.yaml, under another model name when given."""
    spec = _example()
    return spec.model_copy(update={"model": model}) if model else spec


def spec_applied(model: str | None = None, revision: int = 1, spec: ModelSpec | None = None) -> ModelSpecApplied:
    """The example spec (or `spec`) as applied at `revision`."""
    spec = spec or example_spec(model)
    return ModelSpecApplied(
        model=spec.model, revision=revision, spec=spec, spec_yaml="", spec_sha256="a" * 64, applied_by="tests"
    )
