"""Bring your own model, as a data scientist does: a notebook trains a scikit-learn pipeline outside
modelbus and saves it with MLflow (skops) and as ONNX; `modelbus models import` takes both, the
second is evaluated against the first as champion, rolled out and served; `models export` gives
MLflow models whose `mlflow.pyfunc` predictions equal serving's; the same canary answers rows
written to its Kafka input topic as `/v1` does, exactly once through a kill -9 of serving; every
bad upload is refused whole with its reason, and audited. Seven processes, real Kafka, PostgreSQL
and S3, MLflow unmodified in its own virtualenv."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import uuid
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

from shared.contract import topics
from shared.contract.events import DeadLettered, ModelEvaluated, ModelTrained, RolloutChanged
from shared.ops.example_data import churn_frame
from shared.runtime.features import prepare
from shared.runtime.settings import Settings
from tests.support import streams
from tests.support.scenarios import Loop
from tests.support.specs import example_spec
from tests.support.venvs import mlflow_python

pytestmark = pytest.mark.timeout(900)
ROOT = Path(__file__).resolve().parents[2]
MODELBUS = Path(sys.executable).parent / "modelbus"
RUN = uuid.uuid4().hex[:6]  # the database outlives a platform: model names of this run only
MODEL = f"byom-churn-{RUN}"
OPERATOR, VIEWER = "byom-operator", "byom-viewer"
LIMIT = 3 * 1024 * 1024


@pytest.fixture(scope="module")
async def loop(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Loop]:
    running = Loop(
        base_settings,
        tmp_path_factory.mktemp("byom"),
        extra_env={
            "MODELBUS_API_TOKENS": f"{OPERATOR}=operator:otto,{VIEWER}=viewer:vic",
            "MODELBUS_IMPORT_MAX_BYTES": str(LIMIT),
        },
    )
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture(scope="module")
def notebook(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The notebook's files: data, then its model saved with MLflow, as ONNX and as a pickle."""
    folder = tmp_path_factory.mktemp("notebook")
    frame = churn_frame(4000, seed=21)
    frame.iloc[:3000].to_csv(folder / "train.csv", index=False)
    frame.iloc[3000:].to_csv(folder / "test.csv", index=False)
    run = subprocess.run(
        [str(mlflow_python()), str(ROOT / "tests/support/notebook.py"), str(folder / "train.csv"), str(folder / "out")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    written = {key: Path(value) for key, value in json.loads(run.stdout.strip().splitlines()[-1]).items()}
    assert set(written) == {"skops", "onnx", "pickle", "mlflow"}, "the MLflow model is written with MLflow itself"
    return {**written, "train": folder / "train.csv", "test": folder / "test.csv", "folder": folder}


def cli(loop: Loop, *args: str, token: str = OPERATOR, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`modelbus ARGS`, as a user runs it against this platform."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MODELBUS_")},
        "MODELBUS_API_URL": f"http://127.0.0.1:{loop.settings.registry_port}",
        "MODELBUS_API_TOKEN": token,
    }
    return subprocess.run([str(MODELBUS), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)


def spec_file(folder: Path) -> Path:
    """The example spec for this model: a canary that stays at 50 % while the tests look at it (not
    judged on a busy machine's latency either: this module's tests read the split, not the
    analysis)."""
    spec = example_spec(MODEL).model_dump(mode="json", exclude_none=True)
    spec["dataset"] = f"{MODEL}-data"
    spec["rollout"] |= {"steps": [50, 100], "bake_seconds": 3600, "min_samples": 100_000}
    spec["rollout"] |= {"max_latency_ratio": 1000, "latency_slack_ms": 60_000, "max_error_rate_increase": 1.0}
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


async def predict(loop: Loop, rows: pd.DataFrame) -> list[dict[str, Any]]:
    answers: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=30) as http:
        for start in range(0, len(rows), 100):
            chunk = rows.iloc[start : start + 100].drop(columns=["churned"])
            instances = [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in chunk.to_dict("records")]
            answer = await http.post(
                f"http://127.0.0.1:{loop.settings.serving_port}/v1/models/{MODEL}:predict",
                json={"instances": instances},
            )
            assert answer.status_code == 200, answer.text
            answers += answer.json()["predictions"]
    return answers


async def test_a_notebook_model_imported_from_mlflow_then_as_onnx_is_judged_against_it_rolled_out_and_served(
    loop: Loop, notebook: dict[str, Path]
) -> None:
    applied = cli(loop, "apply", "-f", str(spec_file(notebook["folder"])), token=loop.token)
    assert applied.returncode == 0, applied.stderr
    first = cli(
        loop, "models", "import", MODEL, "--model", str(notebook["mlflow"]),
        "--reference", str(notebook["train"]), "--test", str(notebook["test"]), "--reason", "notebook forest",
    )  # fmt: skip
    assert first.returncode == 0, first.stdout + first.stderr
    assert "(mlflow, served as onnx)" in first.stdout and "from the MLflow signature" in first.stdout
    assert f"{MODEL}@1  serving" in first.stdout, first.stdout
    second = cli(
        loop, "models", "import", MODEL, "--model", str(notebook["onnx"]),
        "--reference", str(notebook["train"]), "--test", str(notebook["test"]),
    )  # fmt: skip
    assert second.returncode == 0, second.stdout + second.stderr
    assert "(onnx, served as onnx)" in second.stdout and "from the ONNX inputs" in second.stdout

    evaluated: ModelEvaluated = await loop.wait(
        MODEL, lambda e: isinstance(e, ModelEvaluated) and e.version == 2, 120, "v2's evaluation"
    )
    canary: RolloutChanged = await loop.wait(
        MODEL, lambda e: isinstance(e, RolloutChanged) and e.candidate_version == 2, 120, "v2's canary"
    )
    trained = loop.events(MODEL, ModelTrained)
    assert [t.trigger for t in trained] == ["imported", "imported"]
    assert [t.estimator for t in trained] == ["sklearn.ensemble.RandomForestClassifier", "onnx.skl2onnx"]
    assert evaluated.champion_version == 1 and evaluated.decision == "approved", evaluated
    assert evaluated.test_rows == 1000, "judged on the test rows sent with the import"
    assert evaluated.metrics["roc_auc"] == pytest.approx(evaluated.champion_metrics["roc_auc"], abs=1e-6)
    assert canary.to_state == "canary" and {s.version: s.percent for s in canary.traffic} == {1: 50, 2: 50}

    answers = await predict(loop, pd.read_csv(notebook["test"]))
    served = {a["version"] for a in answers}
    assert served == {1, 2}, "the champion and the imported candidate both answer"


async def test_exported_versions_predict_in_mlflow_pyfunc_as_serving_does(
    loop: Loop, notebook: dict[str, Path], tmp_path: Path
) -> None:
    exported = {}
    for version, flavor in ((1, "sklearn"), (2, "auto")):
        target = tmp_path / f"v{version}"
        done = cli(loop, "models", "export", f"{MODEL}@{version}", "--format", "mlflow", "--flavor", flavor,
                   str(target), token=VIEWER)  # fmt: skip
        assert done.returncode == 0, done.stderr
        mlmodel = yaml.safe_load((target / "MLmodel").read_text())
        assert mlmodel["metadata"]["modelbus"]["manifest"]["trigger"] == "imported"
        assert json.loads(mlmodel["signature"]["inputs"])[0]["name"] == "tenure_months"
        assert (target / "input_example.json").exists()
        exported[version] = target
    assert "sklearn" in yaml.safe_load((exported[1] / "MLmodel").read_text())["flavors"]
    assert "onnx" in yaml.safe_load((exported[2] / "MLmodel").read_text())["flavors"]

    rows = churn_frame(1000, seed=99)
    answers = await predict(loop, rows)
    spec = example_spec(MODEL)
    prepare(rows, spec.features).to_parquet(tmp_path / "rows.parquet", index=False)
    compared = 0
    for version, folder in exported.items():
        script = ROOT / "tests/support/pyfunc_predict.py"
        run = await asyncio.to_thread(
            subprocess.run,
            [str(mlflow_python()), str(script), str(folder), str(tmp_path / "rows.parquet")],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]
        pyfunc = json.loads(run.stdout)
        mine = [i for i, a in enumerate(answers) if a["version"] == version]
        assert len(mine) > 100, f"v{version} answered {len(mine)} of 1,000 rows"
        assert [pyfunc["labels"][i] for i in mine] == [answers[i]["prediction"] for i in mine]
        if pyfunc["probabilities"] is not None:
            theirs = np.array([[pyfunc["probabilities"][i][k] for k in ("0", "1")] for i in mine])
            ours = np.array([[answers[i]["probabilities"][k] for k in ("0", "1")] for i in mine])
            assert np.max(np.abs(theirs - ours)) < 1e-6
        compared += len(mine)
    assert compared == 1000


async def test_a_file_scored_with_modelbus_score_equals_the_v1_answers_row_for_row(loop: Loop, tmp_path: Path) -> None:
    rows = churn_frame(10_000, seed=98)
    answers = await predict(loop, rows)  # the canary splits them between the two versions
    rows.drop(columns=["churned"]).to_parquet(tmp_path / "rows.parquet", index=False)
    for version in (1, 2):
        out = tmp_path / f"scored-v{version}"
        done = cli(loop, "score", f"{MODEL}@{version}", "--input", str(tmp_path / "rows.parquet"),
                   "--output", str(out), "--keep", "customer_id", "--chunk-rows", "3000", "--job", f"j{version}",
                   token=VIEWER)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "10000 rows in 4 parts: 10000 scored, 0 refused" in done.stdout, done.stdout
        scored = pd.concat([pd.read_parquet(part) for part in sorted(out.glob("part-*.parquet"))])
        assert list(scored["customer_id"]) == list(rows["customer_id"])
        assert list(scored["request_id"][:2]) == [f"j{version}-0", f"j{version}-1"]
        mine = [i for i, a in enumerate(answers) if a["version"] == version]
        assert len(mine) > 1000, f"v{version} answered {len(mine)} of 10,000 rows"
        assert [scored["prediction"].iloc[i] for i in mine] == [answers[i]["prediction"] for i in mine]
        ours = scored[["probability_0", "probability_1"]].to_numpy()[mine]
        theirs = np.array([[answers[i]["probabilities"][k] for k in ("0", "1")] for i in mine])
        assert np.max(np.abs(ours - theirs)) < 1e-6
    again = cli(loop, "score", f"{MODEL}@1", "--input", str(tmp_path / "rows.parquet"), "--output",
                str(tmp_path / "scored-v1"), "--chunk-rows", "3000", "--job", "j1", token=VIEWER)  # fmt: skip
    assert again.returncode == 0 and "4 of them resumed" in again.stdout, again.stdout + again.stderr


def rows_of(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {k: (None if pd.isna(v) else v) for k, v in r.items()}
        for r in frame.drop(columns=["churned"]).to_dict("records")
    ]


async def test_rows_on_the_input_topic_come_back_on_the_output_topic_as_v1_answers_them_bad_ones_dead_lettered(
    loop: Loop,
) -> None:
    rows = rows_of(churn_frame(600, seed=77))
    answers = await predict(loop, pd.DataFrame(rows).assign(churned=0))  # the canary splits by customer_id
    # One row per message, keyed by the entity; a hundred rows in one message; two bad ones.
    singles: list[tuple[str | None, Any]] = [(r["customer_id"], r) for r in rows[:500]]
    listed: list[tuple[str | None, Any]] = [(None, rows[500:])]
    bad: list[tuple[str | None, Any]] = [("bad-1", b"{not json"), ("bad-2", {**rows[0], "monthly_charges": "lots"})]
    await streams.write(loop.settings, MODEL, singles[:250] + bad + singles[250:] + listed)
    out = await streams.read(loop.settings, loop.settings.topic(topics.outputs(MODEL)), 501, timeout=120)
    assert len(out) == 501, f"{len(out)} output messages for 500 one-row messages and one of 100 rows"
    assert isinstance(out[-1], list) or any(isinstance(o, list) for o in out)
    streamed: dict[str, tuple[int, Any]] = {}
    roles = set()
    for message in out:
        if isinstance(message, list):
            for index, p in enumerate(message):
                assert p["request_id"].endswith(f"-{index}")
                streamed[rows[500 + index]["customer_id"]] = (p["version"], p["prediction"])
                roles.add(p["role"])
        else:
            streamed[message["key"]] = (message["version"], message["prediction"])
            roles.add(message["role"])
    assert roles == {"stable", "canary"}, "a shadow answer is never written"
    by_customer = {r["customer_id"]: (a["version"], a["prediction"]) for r, a in zip(rows, answers, strict=True)}
    assert streamed == by_customer, "each row's version and prediction are what /v1 answered for it"
    assert {v for v, _ in streamed.values()} == {1, 2}

    def letters() -> list[DeadLettered]:
        seen = [e.event for e in loop.seen if isinstance(e.event, DeadLettered)]
        return [e for e in seen if e.consumer == loop.settings.topic(topics.SCORER)]

    async def dead_lettered() -> bool:
        return len(letters()) >= 2

    await loop.until(dead_lettered, timeout=60, what="two dead letters from the scorer")
    found = {letter.original_key_b64: letter for letter in letters()}
    assert found[base64.b64encode(b"bad-1").decode()].error_type == "parse"
    assert "not JSON" in found[base64.b64encode(b"bad-1").decode()].reason
    wrong = found[base64.b64encode(b"bad-2").decode()]
    assert wrong.error_type == "validation" and "monthly_charges" in wrong.reason, wrong.reason
    ids = {p["request_id"] for o in out for p in (o if isinstance(o, list) else [o])}
    told = await streams.logged(loop.settings, MODEL, ids, timeout=60)  # as HTTP answers are
    assert len(told) == 600, f"the monitor was told of {len(told)} of the stream's 600 answers"


async def test_a_scorer_killed_mid_stream_writes_each_prediction_once(loop: Loop) -> None:
    rows = rows_of(churn_frame(3000, seed=78))
    messages = [(f"k-{r.pop('customer_id')}", r) for r in rows]  # routed by the message key
    out_topic = loop.settings.topic(topics.outputs(MODEL))
    before = await streams.until_end(loop.settings, out_topic, 0, timeout=10)
    writing = asyncio.create_task(streams.write(loop.settings, MODEL, messages, pace=0.001))
    await streams.until_end(loop.settings, out_topic, before + 300, timeout=60)  # it is scoring them
    loop.platform.kill("serving")  # kill -9 while it scores, mid-transaction most likely
    await writing

    def mine(found: list[Any]) -> list[str]:
        return [p["key"] for p in found if isinstance(p, dict) and p["key"].startswith("k-")]

    committed = mine(await streams.read(loop.settings, out_topic, None, timeout=30, settle=0, idle=2))
    assert len(committed) < 3000, f"all {len(committed)} rows were scored before serving was killed"
    print(f"rows committed when serving was killed: {len(committed)} of 3000")
    loop.platform.restart("serving")
    await loop.platform.wait_ready()
    out = await streams.read(loop.settings, out_topic, lambda found: len(mine(found)) >= 3000, timeout=180, settle=5)
    keys = mine(out)
    assert len(set(keys)) == 3000, f"{len(set(keys))} of 3000 rows scored: none lost"
    assert len(keys) == 3000, f"{len(keys) - len(set(keys))} rows written twice"
    # What the killed scorer had written in its open transaction is there, aborted: a reader
    # that does not ask for committed records sees those rows twice.
    seen = await streams.read(loop.settings, out_topic, len(out), timeout=60, settle=3, committed=False)
    twice = len(mine(seen)) - 3000
    print(f"rows in the aborted transaction, seen by a read-uncommitted reader only: {twice}")


def bad_uploads(notebook: dict[str, Path], folder: Path) -> list[tuple[str, dict[str, Any], int, str]]:
    """(what, multipart files, status, the message's telling part) for each bad upload."""
    folder.mkdir(exist_ok=True)
    train = ("train.csv", notebook["train"].read_bytes())
    traversal, symlink, unknown = folder / "traversal.zip", folder / "symlink.zip", folder / "pytorch.zip"
    with zipfile.ZipFile(traversal, "w") as archive:
        archive.writestr("model/MLmodel", "flavors: {sklearn: {serialization_format: skops}}")
        archive.writestr("../../escaped.txt", "x")
    with zipfile.ZipFile(symlink, "w") as archive:
        archive.writestr("model/MLmodel", "flavors: {sklearn: {serialization_format: skops}}")
        link = zipfile.ZipInfo("model/model.skops")
        link.external_attr = 0o120777 << 16
        archive.writestr(link, "/etc/passwd")
    with zipfile.ZipFile(unknown, "w") as archive:
        archive.writestr("model/MLmodel", yaml.safe_dump({"flavors": {"pytorch": {}, "python_function": {}}}))
    import skops.io as sio
    from sklearn.ensemble import RandomForestRegressor

    from tests.support.notebook import CATEGORICAL, NUMERIC
    from tests.support.notebook import train as notebook_train

    frame = churn_frame(500, seed=3)
    regressor = notebook_train(frame, "churned", 5, 0).set_params(forest=RandomForestRegressor(n_estimators=5))
    regressor.fit(frame[NUMERIC + CATEGORICAL].astype({n: str for n in CATEGORICAL}), frame["churned"])
    sio.dump(regressor, folder / "regressor.skops")
    short = pd.read_csv(notebook["train"]).drop(columns=["region"]).to_csv(index=False).encode()
    return [
        ("a pickle", {"model": ("model.joblib", notebook["pickle"].read_bytes()), "reference": train}, 422,
         "is pickled. modelbus never opens pickles"),
        ("an unknown MLflow flavor", {"model": ("pytorch.zip", unknown.read_bytes()), "reference": train}, 422,
         "flavor(s) pytorch cannot be imported"),
        ("an MLflow model without signature or reference",
         {"model": ("nosig.zip", _without_signature(notebook["mlflow"], folder))}, 422,
         "has no signature and no reference data"),
        ("an ONNX file that does not load", {"model": ("model.onnx", b"\x08\x07not a graph" * 50), "reference": train},
         422, "an ONNX model that loads"),
        ("a regressor as a classifier", {"model": ("regressor.skops", (folder / "regressor.skops").read_bytes()),
         "reference": train}, 422, "looks like a regressor"),
        ("a reference without a feature", {"model": ("model.onnx", notebook["onnx"].read_bytes()),
         "reference": ("short.csv", short)}, 422, "the reference data lacks feature(s) region"),
        ("an upload over the limit", {"model": ("big.onnx", os.urandom(LIMIT + 1024))}, 413, "over the import limit"),
        ("a zip with ../", {"model": ("traversal.zip", traversal.read_bytes())}, 422, "path traversal"),
        ("a zip with a symlink", {"model": ("symlink.zip", symlink.read_bytes())}, 422, "is a symlink"),
    ]  # fmt: skip


def _without_signature(folder: Path, into: Path) -> bytes:
    target = into / "nosig.zip"
    with zipfile.ZipFile(target, "w") as archive:
        for path in folder.rglob("*"):
            data = path.read_bytes()
            if path.name == "MLmodel":
                mlmodel = yaml.safe_load(data)
                mlmodel.pop("signature", None)
                data = yaml.safe_dump(mlmodel).encode()
            archive.writestr(f"model/{path.relative_to(folder)}", data)
    return target.read_bytes()


async def test_bad_imports_are_refused_whole_with_their_reason_and_audited(
    loop: Loop, notebook: dict[str, Path], tmp_path: Path
) -> None:
    base = f"http://127.0.0.1:{loop.settings.registry_port}"
    async with httpx.AsyncClient(timeout=120) as http:
        before = (await http.get(f"{base}/v1/models/{MODEL}", headers={"Authorization": f"Bearer {VIEWER}"})).json()
        refused = await http.post(
            f"{base}/v1/models/{MODEL}/import",
            files={"model": ("model.onnx", notebook["onnx"].read_bytes()), "reference": ("t.csv", b"a\n1\n")},
            headers={"Authorization": f"Bearer {VIEWER}"},
        )
        assert refused.status_code == 403 and "needs operator" in refused.json()["detail"]
        for what, files, status, telling in bad_uploads(notebook, tmp_path):
            answer = await http.post(
                f"{base}/v1/models/{MODEL}/import", files=files, headers={"Authorization": f"Bearer {OPERATOR}"}
            )
            assert answer.status_code == status, f"{what}: {answer.status_code} {answer.text[:500]}"
            assert telling in answer.json()["detail"], f"{what}: {answer.json()['detail']}"
        after = (await http.get(f"{base}/v1/models/{MODEL}", headers={"Authorization": f"Bearer {VIEWER}"})).json()
        audit = (
            await http.get(
                f"{base}/v1/audit",
                params={"target": MODEL, "action": "import", "limit": 50},
                headers={"Authorization": f"Bearer {VIEWER}"},
            )
        ).json()
        cyclic = yaml.safe_load(example("derived-features.yaml", f"byom-cycle-{RUN}"))
        cyclic["derived"] = [
            {"name": "a", "op": "sum", "of": ["total_spend", "b"]},
            {"name": "b", "op": "log1p", "of": "a"},
        ]
        spec_refused = await http.post(
            f"{base}/v1/specs",
            json={"spec_yaml": yaml.safe_dump(cyclic)},
            headers={"Authorization": f"Bearer {loop.token}"},
        )
        spec_audit = (
            await http.get(
                f"{base}/v1/audit",
                params={"target": f"byom-cycle-{RUN}", "action": "apply-spec"},
                headers={"Authorization": f"Bearer {VIEWER}"},
            )
        ).json()
    assert spec_refused.status_code == 422
    [issue] = [e for e in spec_refused.json()["errors"] if e["path"] == "derived[0].of[1]"]
    assert issue["message"].endswith("a cycle: a → b → a") and issue["line"]
    assert [a["outcome"] for a in spec_audit] == ["refused"]
    assert after["latest_version"] == before["latest_version"], "nothing half-registered"
    refusals = [a for a in audit if a["outcome"] == "refused"]
    assert len(refusals) == len(bad_uploads(notebook, tmp_path)) + 1
    assert {a["actor"] for a in refusals} == {"otto", "vic"}
    assert all(a["detail"]["error"] for a in refusals)
    assert not (tmp_path / "escaped.txt").exists()


def example(name: str, model: str, *, iterations: int = 2) -> str:
    """An example spec from schemas/examples under this platform's model name (its own dataset),
    with a short search."""
    spec = yaml.safe_load((ROOT / "schemas/examples" / name).read_text())
    spec |= {"model": model, "dataset": model, "search": {**spec["search"], "iterations": iterations, "cv": 2}}
    return yaml.safe_dump(spec)


async def apply_text(loop: Loop, text: str, folder: Path) -> None:
    path = folder / "spec.yaml"
    path.write_text(text)
    applied = await asyncio.to_thread(cli, loop, "apply", "-f", str(path), token=loop.token)
    assert applied.returncode == 0, applied.stderr


async def test_xgboost_and_lightgbm_candidates_win_or_lose_on_their_metric_among_three_families(
    loop: Loop, tmp_path: Path
) -> None:
    model = f"byom-boosted-{RUN}"
    await apply_text(loop, example("gradient-boosting.yaml", model), tmp_path)
    await loop.publish(model, "d1", churn_frame(3000, seed=31))
    trained: ModelTrained = await loop.wait(model, lambda e: isinstance(e, ModelTrained), 300, "the training")
    scores = {c.estimator: c.score for c in trained.candidates}
    assert set(scores) == {
        "sklearn.linear_model.LogisticRegression",
        "xgboost.XGBClassifier",
        "lightgbm.LGBMClassifier",
    }
    assert trained.estimator == max(scores, key=lambda name: scores[name]), scores
    assert all(c.cv_score is not None and 0.5 < c.cv_score < 1 for c in trained.candidates)
    if trained.estimator != "sklearn.linear_model.LogisticRegression":  # a booster won: it serves as ONNX
        assert "model.onnx" in {a.name for a in trained.artifacts}


async def test_the_derived_features_example_is_served_from_raw_columns_exactly_as_its_pipeline_predicts(
    loop: Loop, tmp_path: Path
) -> None:
    from shared.ops.example_data import purchases_frame
    from shared.runtime.artifacts import ArtifactStore
    from shared.runtime.modelfile import load_model

    model = f"byom-purchases-{RUN}"
    await apply_text(loop, example("derived-features.yaml", model), tmp_path)
    await loop.publish(model, "d1", purchases_frame(3000, seed=41))
    await loop.rollout_end(model, 1, timeout=300)
    await loop.serving(model, 1)
    trained: ModelTrained = loop.events(model, ModelTrained)[0]
    assert {"spend_per_transaction", "days_since_registration"} <= set(trained.reference_profile.features)
    [skops] = [a for a in trained.artifacts if a.name == "model.skops"]
    pipeline = load_model(
        await asyncio.to_thread(
            ArtifactStore(loop.settings).get_file, skops.uri, tmp_path / "m.skops", sha256=skops.sha256
        )
    )
    raw = purchases_frame(1000, seed=99).drop(columns=["churned"])
    expected = pipeline.predict_proba(prepare(raw, example_spec_of(model).features))
    answers: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=60) as http:
        for start in range(0, 1000, 250):
            chunk = raw.iloc[start : start + 250]
            instances = [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in chunk.to_dict("records")]
            assert set(instances[0]) == set(raw.columns), "raw columns only: no derived feature is sent"
            answer = await http.post(
                f"http://127.0.0.1:{loop.settings.serving_port}/v1/models/{model}:predict",
                json={"instances": instances},
            )
            assert answer.status_code == 200, answer.text
            answers += answer.json()["predictions"]
    served = np.array([[a["probabilities"]["0"], a["probabilities"]["1"]] for a in answers])
    assert np.max(np.abs(served - expected)) < 1e-9, "serving computes the derived features as training did"
    assert [a["prediction"] for a in answers] == pipeline.predict(
        prepare(raw, example_spec_of(model).features)
    ).tolist()

    from shared.contract import topics
    from shared.contract.envelope import decode
    from shared.ops.tools import read_all

    async def logged_with_derived() -> bool:
        records = await read_all(loop.settings, topics.PREDICTIONS_LOGGED)
        batches = [decode(r.value, list(r.headers)).event for r in records]
        mine = [b for b in batches if getattr(b, "model", None) == model]
        return any("spend_per_transaction" in b.features and "total_spend" in b.features for b in mine)

    await loop.until(logged_with_derived, 60, "PredictionsLogged with the derived features")


def example_spec_of(model: str) -> Any:
    from shared.runtime.specfile import load_spec

    return load_spec(example("derived-features.yaml", model))


NUMERIC = ["tenure_months", "monthly_charges", "support_calls"]


async def imported_and_served(loop: Loop, name: str, model: tuple[str, bytes], frame: pd.DataFrame) -> list[Any]:
    """Apply a numeric spec for `name`, import `model` as an operator, wait for serving to answer."""
    spec = example_spec(name).model_dump(mode="json", exclude_none=True)
    spec |= {"dataset": f"{name}-data", "features": [f for f in spec["features"] if f["name"] in NUMERIC]}
    spec |= {"gates": [], "contract": None, "evaluation": {}}  # no quality gate: the import path is tested
    base = f"http://127.0.0.1:{loop.settings.registry_port}"
    rows = frame[[*NUMERIC, "churned"]]
    async with httpx.AsyncClient(timeout=120) as http:
        applied = await http.post(
            f"{base}/v1/specs",
            json={"spec_yaml": yaml.safe_dump({k: v for k, v in spec.items() if v is not None}), "reason": "byom"},
            headers={"Authorization": f"Bearer {loop.token}"},
        )
        assert applied.status_code in (200, 201), applied.text
        imported = await http.post(
            f"{base}/v1/models/{name}/import",
            files={"model": model, "reference": ("reference.csv", rows.iloc[:800].to_csv(index=False).encode())},
            data={"reason": "a plain notebook model"},
            headers={"Authorization": f"Bearer {OPERATOR}"},
        )
        assert imported.status_code == 201, imported.text
        instances = rows.iloc[800:820].drop(columns=["churned"]).to_dict("records")
        deadline = asyncio.get_running_loop().time() + 240
        while True:
            answer = await http.post(
                f"http://127.0.0.1:{loop.settings.serving_port}/v1/models/{name}:predict",
                json={"instances": instances},
            )
            if answer.status_code == 200:
                return list(answer.json()["predictions"])
            assert asyncio.get_running_loop().time() < deadline, f"{name} never served: {answer.text[:300]}"
            await asyncio.sleep(2)


async def test_a_plain_estimator_and_an_onnx_classifier_without_zipmap_import_roll_out_and_answer(loop: Loop) -> None:
    import skops.io as sio
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    frame = churn_frame(2000, seed=31).dropna(subset=NUMERIC)
    x, y = frame[NUMERIC].to_numpy(dtype=np.float64), frame["churned"]
    plain = LogisticRegression(max_iter=500).fit(x, y)
    answers = await imported_and_served(loop, f"byom-plain-{RUN}", ("model.skops", sio.dumps(plain)), frame)
    assert len(answers) == 20 and {a["version"] for a in answers} == {1}
    assert {a["prediction"] for a in answers} <= {0, 1}
    graph = to_onnx(plain, x[:1].astype(np.float32), options={id(plain): {"zipmap": False}}, target_opset=17)
    assert "ZipMap" not in {node.op_type for node in graph.graph.node}
    answers = await imported_and_served(loop, f"byom-onnx-{RUN}", ("model.onnx", graph.SerializeToString()), frame)
    assert len(answers) == 20 and {a["prediction"] for a in answers} <= {0, 1}
    assert all(abs(sum(a["probabilities"].values()) - 1) < 1e-4 for a in answers)
