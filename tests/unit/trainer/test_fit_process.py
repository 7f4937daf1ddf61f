"""The trainer's fit process does not outlive the trainer: killed or shut down, the trainer leaves
no process behind holding a model's memory, neither the fit process nor the workers its fit started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

SCRIPT = textwrap.dedent(
    """
    import multiprocessing, os, sys, time
    from concurrent.futures import ProcessPoolExecutor
    from services.trainer.worker import _fit_process_init, stop_fit_processes
    from shared.runtime.settings import Settings
    from tests.unit.trainer.test_fit_process import fit_with_workers, pids

    pool = ProcessPoolExecutor(
        max_workers=1, mp_context=multiprocessing.get_context("spawn"),
        initializer=_fit_process_init, initargs=(Settings(service_name="trainer", otlp_endpoint=None),),
    )
    print(*pool.submit(pids).result(), flush=True)
    pool.submit(fit_with_workers)
    time.sleep(3)  # the fit is running on its workers
    if sys.argv[1] == "shutdown":
        stop_fit_processes(pool)
        print("stopped", flush=True)
    time.sleep(120)
    """
)


def pids() -> list[int]:
    """In the fit process: its own pid, then its loky workers' (as a fit with n_jobs=2 starts them)."""
    from joblib import Parallel, delayed

    workers = Parallel(n_jobs=2)(delayed(os.getpid)() for _ in range(20))
    return [os.getpid(), *sorted(set(workers) - {os.getpid()})]


def fit_with_workers() -> None:
    """In the fit process: a long fit on two loky workers."""
    from joblib import Parallel, delayed

    Parallel(n_jobs=2)(delayed(time.sleep)(1) for _ in range(200))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is gone too
        return stat.read().split(") ", 1)[1][0] != "Z"


def _gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return [pid for pid in pids if alive(pid)]


@pytest.mark.parametrize("how", ["killed", "shutdown"])
def test_the_fit_process_and_its_workers_end_with_the_trainer(how: str) -> None:
    trainer = subprocess.Popen([sys.executable, "-c", SCRIPT, how], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert trainer.stdout is not None
        fit_pid, *workers = (int(pid) for pid in trainer.stdout.readline().split())
        assert workers and all(alive(pid) for pid in [fit_pid, *workers])
        if how == "killed":
            time.sleep(3)
            trainer.send_signal(signal.SIGKILL)
            trainer.wait(10)
        else:
            assert trainer.stdout.readline().strip() == "stopped"
            assert trainer.poll() is None, "the trainer itself goes on"
        assert _gone([fit_pid], 10) == [], "the fit process outlived the trainer"
        assert _gone(workers, 10) == [], "the fit's workers outlived the fit process"
    finally:
        trainer.kill()
