"""A search's cross-validation fits on a Dask cluster: a scheduler and two workers as separate
processes on loopback. The same seeded search gives the same winner and the same scores as in
the trainer's own process, and a worker killed in the middle of a search loses nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.trainer import fit
from shared.ops.example_data import write_churn
from shared.runtime.specfile import load_spec
from tests.integration.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
SPEC = load_spec((ROOT / "schemas/examples/model-spec.yaml").read_text())
DASK = Path(sys.executable).with_name("dask")


@dataclass
class Cluster:
    address: str
    scheduler: subprocess.Popen[bytes]
    workers: list[subprocess.Popen[bytes]]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    logs = (tmp_path / "dask.log").open("ab")
    common = {"stdout": logs, "stderr": subprocess.STDOUT, "cwd": ROOT}
    scheduler = subprocess.Popen(
        [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], **common
    )  # type: ignore[call-overload]
    workers = [
        subprocess.Popen(
            [str(DASK), "worker", address, "--host", "127.0.0.1", "--nworkers", "1", "--nthreads", "1",
             "--no-dashboard", "--name", f"w{index}", "--death-timeout", "60"],
            **common,
        )  # type: ignore[call-overload]
        for index in range(2)
    ]  # fmt: skip
    try:
        client = fit.dask_client(address)
        client.wait_for_workers(2, timeout=60)
        yield Cluster(address, scheduler, workers)
    finally:
        for process in [*workers, scheduler]:
            if process.poll() is None:
                process.terminate()
        for process in [*workers, scheduler]:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        fit._CLIENTS.pop(address, None)


def run(tmp_path: Path, name: str, **where: object) -> fit.Outcome:
    data = tmp_path / "churn.csv"
    if not data.exists():
        write_churn(data, rows=4000, seed=11)
    job = fit.Job(name, SPEC, str(data), "csv", "0" * 64, str(tmp_path / name), "test", **where)  # type: ignore[arg-type]
    outcome = fit.train(job)
    assert outcome.ok, outcome.reason
    return outcome


def searched(outcome: fit.Outcome) -> list[tuple[str, dict[str, object], float | None, float]]:
    return [(c.estimator, c.params, c.cv_score, c.score) for c in outcome.candidates]


def test_a_seeded_search_on_dask_picks_the_same_winner_with_the_same_scores_as_in_process(
    tmp_path: Path, cluster: Cluster
) -> None:
    here = run(tmp_path, "here", n_jobs=1)
    there = run(tmp_path, "there", dask_scheduler=cluster.address)
    assert searched(there) == searched(here)
    assert (there.estimator, there.params, there.metrics) == (here.estimator, here.params, here.metrics)
    manifest = json.loads(Path(there.files["manifest.json"]).read_text())
    assert manifest["search_ran_on"] == f"Dask at {cluster.address} (2 workers)"
    assert json.loads(Path(here.files["manifest.json"]).read_text())["search_ran_on"] == "this process, n_jobs=1"
    print("\nin-process and on Dask:", json.dumps([(e.rsplit(".", 1)[1], p, cv) for e, p, cv, _ in searched(here)]))


def test_a_worker_killed_in_the_middle_of_a_search_is_survived(tmp_path: Path, cluster: Cluster) -> None:
    here = run(tmp_path, "here", n_jobs=1)
    client = fit.dask_client(cluster.address)
    victim = cluster.workers[0]
    killed = threading.Event()

    def kill_when_busy() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            processing = client.processing()
            if sum(len(keys) for keys in processing.values()) >= 2:
                time.sleep(0.5)  # in the middle of a fit
                victim.send_signal(signal.SIGKILL)
                killed.set()
                return
            time.sleep(0.05)

    threading.Thread(target=kill_when_busy, daemon=True).start()
    there = run(tmp_path, "there", dask_scheduler=cluster.address)
    assert killed.is_set() and victim.wait(timeout=10) == -signal.SIGKILL
    assert searched(there) == searched(here), "the killed worker's fits ran again on the other"
    assert len(client.scheduler_info()["workers"]) == 1


def test_without_a_scheduler_the_fits_use_every_core(tmp_path: Path) -> None:
    outcome = run(tmp_path, "cores")
    manifest = json.loads(Path(outcome.files["manifest.json"]).read_text())
    assert manifest["search_ran_on"] == f"this process, n_jobs={os.cpu_count()}"


def test_an_unreachable_scheduler_fails_the_run_naming_it(tmp_path: Path) -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    data = tmp_path / "churn.csv"
    write_churn(data, rows=500, seed=11)
    fit._CLIENTS.pop(address, None)
    job = fit.Job("x", SPEC, str(data), "csv", "0" * 64, str(tmp_path / "x"), "test", dask_scheduler=address)
    outcome = fit.train(job)
    assert not outcome.ok and outcome.stage == "fit"
    assert f"the Dask scheduler at {address} does not answer" in outcome.reason
