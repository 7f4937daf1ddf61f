"""A version trained on the example spec, as the trainer writes it, for the judging tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.trainer import fit
from shared.ops.example_data import write_churn
from shared.runtime.specfile import load_spec

ROOT = Path(__file__).resolve().parents[3]
SPEC = load_spec((ROOT / "schemas/examples/model-spec.yaml").read_text())


@pytest.fixture(scope="package")
def trained(tmp_path_factory: pytest.TempPathFactory) -> fit.Outcome:
    folder = tmp_path_factory.mktemp("eval")
    spec = SPEC.model_copy(update={"search": SPEC.search.model_copy(update={"iterations": 2, "cv": 2})})
    data = write_churn(folder / "churn.csv", rows=3000)
    outcome = fit.train(fit.Job("r1", spec, str(data), "csv", "0" * 64, str(folder / "out"), "test"))
    assert outcome.ok
    return outcome
