"""The trainer's fit process does not outlive the trainer: killed, the trainer leaves no process
behind holding a model's memory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

SCRIPT = textwrap.dedent(
    """
    import multiprocessing, os, time
    from concurrent.futures import ProcessPoolExecutor
    from services.trainer.worker import _fit_process_init
    from shared.runtime.settings import Settings

    pool = ProcessPoolExecutor(
        max_workers=1, mp_context=multiprocessing.get_context("spawn"),
        initializer=_fit_process_init, initargs=(Settings(service_name="trainer", otlp_endpoint=None),),
    )
    print(pool.submit(os.getpid).result(), flush=True)
    time.sleep(120)
    """
)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is gone too
        return stat.read().split(") ", 1)[1][0] != "Z"


def test_the_fit_process_ends_when_the_trainer_is_killed() -> None:
    trainer = subprocess.Popen([sys.executable, "-c", SCRIPT], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert trainer.stdout is not None
        fit_pid = int(trainer.stdout.readline())
        assert alive(fit_pid)
        trainer.send_signal(signal.SIGKILL)
        trainer.wait(10)
        deadline = time.monotonic() + 10
        while alive(fit_pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not alive(fit_pid), "the fit process outlived the trainer"
    finally:
        trainer.kill()
