"""Batch scoring a file: chunk by chunk with the version serving runs, the same answers as its
one-row path, bad rows reported by number (or failing the job), and a job stopped mid-way resumed
from its last finished chunk to the same output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from services.trainer import fit
from shared.ops.example_data import churn_frame
from shared.runtime import batchscore as batch
from shared.runtime.served import Loaded, check_rows, open_version
from tests.unit.trainer.test_fit import SPEC, job

SMALL = SPEC.model_copy(
    update={
        "candidates": [SPEC.candidates[0].model_copy(update={"search": {}})],
        "evaluation": SPEC.evaluation.model_copy(update={"fairness": None}),
    }
)
FEATURES = [f.name for f in SMALL.features]


@pytest.fixture(scope="module")
def version(tmp_path_factory: pytest.TempPathFactory) -> Loaded:
    folder = tmp_path_factory.mktemp("batch")
    churn_frame(2000, seed=1).to_csv(folder / "churn.csv", index=False)
    outcome = fit.train(job(folder, SMALL, folder / "churn.csv"))
    assert outcome.ok and outcome.onnx == "ok", outcome.reason
    return open_version("churn", 3, Path(outcome.files["manifest.json"]).parent)


def rows_of(out: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(out / part) for part in sorted(p.name for p in out.glob("part-*.parquet"))])


def test_a_file_is_scored_in_chunks_with_the_answers_serving_gives_row_for_row(version: Loaded, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    frame = churn_frame(10_000, seed=8)
    frame.to_csv(source, index=False)
    seen: list[batch.Progress] = []
    scored = batch.score_file(
        version, source, tmp_path / "out", job="job1", chunk_rows=3000, keep=["customer_id"], progress=seen.append
    )
    assert (scored.rows, scored.scored, scored.bad, scored.chunks) == (10_000, 10_000, 0, 4)
    assert [p.rows for p in seen] == [3000, 6000, 9000, 10_000]
    out = rows_of(tmp_path / "out")
    assert list(out["customer_id"]) == list(frame["customer_id"])
    assert list(out["request_id"][:2]) == ["job1-0", "job1-1"] and set(out["version"]) == {3}
    one_by_one = [
        version.predict(check_rows(version.features, [row]))[0][0] for row in frame[FEATURES].to_dict("records")
    ]
    assert list(out["prediction"]) == one_by_one, "the same labels as /v1 gives, row for row"
    sample = frame[FEATURES].iloc[[0, 4321, 9999]].to_dict("records")
    _, probabilities = version.predict(check_rows(version.features, sample))
    assert probabilities is not None
    got = out[[f"probability_{c}" for c in version.classes or []]].to_numpy()[[0, 4321, 9999]]
    assert np.allclose(got, probabilities, atol=1e-6)
    success = json.loads((tmp_path / "out" / batch.SUCCESS).read_text())
    assert success["rows"] == 10_000 and len(success["sha256"]) == 64


def test_bad_rows_are_reported_by_number_and_the_rest_scored(version: Loaded, tmp_path: Path) -> None:
    frame = churn_frame(500, seed=9).astype({"monthly_charges": object})
    frame.loc[7, "monthly_charges"] = "lots"
    frame.loc[402, "monthly_charges"] = float("inf")
    source = tmp_path / "in.parquet"
    frame.astype({"monthly_charges": str}).to_parquet(source)
    scored = batch.score_file(version, source, tmp_path / "out", job="j", chunk_rows=200)
    assert (scored.rows, scored.scored, scored.bad) == (500, 498, 2)
    assert [(b.row, b.reason) for b in scored.bad_rows] == [
        (7, "monthly_charges: expected a number"),
        (402, "monthly_charges: expected a finite number"),
    ]
    out = rows_of(tmp_path / "out")
    assert "j-7" not in set(out["request_id"]) and len(out) == 498
    kept = json.loads(pq.read_metadata(tmp_path / "out" / batch.part_name(2)).metadata[b"modelbus"])
    assert kept["bad_rows"] == [{"row": 402, "reason": "monthly_charges: expected a finite number"}]
    with pytest.raises(batch.BatchError, match="row 7: monthly_charges: expected a number"):
        batch.score_file(version, source, tmp_path / "failing", job="j", chunk_rows=200, on_bad="fail")


def test_a_job_stopped_mid_way_resumes_from_its_last_finished_chunk_to_the_same_output(
    version: Loaded, tmp_path: Path
) -> None:
    source = tmp_path / "in.parquet"
    churn_frame(5000, seed=10).to_parquet(source)
    whole = batch.score_file(version, source, tmp_path / "whole", job="j", chunk_rows=1000)

    def stop_after_two(progress: batch.Progress) -> None:
        if progress.chunks == 2:
            raise KeyboardInterrupt  # killed after its second chunk

    with pytest.raises(KeyboardInterrupt):
        batch.score_file(version, source, tmp_path / "again", job="j", chunk_rows=1000, progress=stop_after_two)
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == [batch.part_name(0), batch.part_name(1)]
    resumed = batch.score_file(version, source, tmp_path / "again", job="j", chunk_rows=1000)
    assert resumed.resumed_chunks == 2 and resumed.chunks == 5 and resumed.rows == 5000
    assert resumed.sha256 == whole.sha256, "the resumed output is the uninterrupted one"


def test_an_input_without_a_feature_is_refused_naming_it(version: Loaded, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    churn_frame(100, seed=1).drop(columns=["plan"]).to_csv(source, index=False)
    with pytest.raises(batch.BatchError, match="the input has no column 'plan'"):
        batch.score_file(version, source, tmp_path / "out", job="j")
    with pytest.raises(batch.BatchError, match=r"must be a \.parquet or \.csv file"):
        batch.score_file(version, tmp_path / "in.json", tmp_path / "out", job="j")
