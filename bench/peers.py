"""The serving benchmark's peers, each in its own virtualenv with the same scikit-learn and skops:
MLServer with its `mlserver-sklearn` runtime (speaking V2), and BentoML with a service around the
same fitted pipeline. Each runs with its default worker settings and with its best for 2 cores.

MLServer's sklearn runtime loads joblib files: the pipeline is converted from skops to joblib in
MLServer's own virtualenv (its format, its process); modelbus itself never loads a pickle.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import BENCH, free_port, say

PEERS = {
    # uvloop 0.22 refuses get_event_loop() without a loop, which MLServer 1.7.1's workers call.
    "mlserver": ("mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop<0.22"),
    "bentoml": ("bentoml==1.4.40", "pandas"),
}
TO_JOBLIB = """
import sys, joblib, skops.io as sio
source, target = sys.argv[1], sys.argv[2]
joblib.dump(sio.load(source, trusted=sio.get_untrusted_types(file=source)), target)
"""
BENTO_SERVICE = """
import os

import bentoml
import pandas as pd
import skops.io as sio

PATH = os.environ["BENCH_MODEL"]


@bentoml.service(workers=int(os.environ.get("BENCH_WORKERS", "1")))
class Pipeline:
    def __init__(self) -> None:
        self.model = sio.load(PATH, trusted=sio.get_untrusted_types(file=PATH))

    @bentoml.api
    def predict(self, rows: list[dict]) -> list:
        return self.model.predict(pd.DataFrame(rows)).tolist()
"""


def peer_python(name: str) -> Path:
    """Python of a peer's virtualenv (created on first use), with modelbus' scikit-learn and skops."""
    import numpy
    import sklearn
    import skops

    venv = BENCH / f"{name}-venv"
    python = venv / "bin" / "python"
    pins = (f"scikit-learn=={sklearn.__version__}", f"skops=={skops.__version__}", f"numpy=={numpy.__version__}")
    wanted = "\n".join((*PEERS[name], *pins))
    marker = venv / "installed.txt"
    if not marker.exists() or marker.read_text() != wanted:
        say(f"[bench] installing {', '.join(PEERS[name])} into .modelbus/bench/{name}-venv …")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PEERS[name], *pins], check=True)
        marker.write_text(wanted)
    return python


def wait_ok(url: str, *, timeout: float, what: str, process: subprocess.Popen[bytes]) -> None:
    """Until `url` answers 200 (a peer's readiness); exit naming `what` if not, or if it died."""
    import time

    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited ({process.returncode}) before it was ready")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{what} was not ready at {url} within {timeout:.0f} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate a peer; kill it if it has not gone in 20 s."""
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def v2_body(row: dict[str, Any], *, content_type: str | None = None) -> str:
    """One V2 tensor per feature, for one row."""
    inputs = [
        {"name": k, "shape": [1], "datatype": "FP64" if isinstance(v, int | float) else "BYTES", "data": [v]}
        for k, v in row.items()
    ]
    body: dict[str, Any] = {"inputs": inputs}
    if content_type:
        body["parameters"] = {"content_type": content_type}
    return json.dumps(body)


@contextmanager
def mlserver(skops_file: Path, folder: Path, *, workers: int | None) -> Iterator[tuple[str, str, int]]:
    """MLServer serving the pipeline; yields (infer URL, request body template marker, pid)."""
    python = peer_python("mlserver")
    model = folder / "model"
    model.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(python), "-c", TO_JOBLIB, str(skops_file), str(model / "model.joblib")], check=True)
    (model / "model-settings.json").write_text(
        json.dumps(
            {
                "name": "pipeline",
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib"},
            }
        )
    )
    port = free_port()
    settings: dict[str, Any] = {
        "host": "127.0.0.1",
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
    }
    if workers is not None:
        settings["parallel_workers"] = workers
    (folder / "settings.json").write_text(json.dumps(settings))
    env = {**os.environ, "PATH": f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = (folder / "mlserver.log").open("w")
    process = subprocess.Popen(
        [str(python.parent / "mlserver"), "start", str(folder)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_ok(f"http://127.0.0.1:{port}/v2/models/pipeline/ready", timeout=180, what="MLServer", process=process)
        yield f"http://127.0.0.1:{port}/v2/models/pipeline/infer", "pd", process.pid
    finally:
        stop(process)


@contextmanager
def bentoml(skops_file: Path, folder: Path, *, workers: int) -> Iterator[tuple[str, str, int]]:
    """BentoML serving the pipeline; yields (predict URL, body kind, pid)."""
    python = peer_python("bentoml")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "service.py").write_text(BENTO_SERVICE)
    port = free_port()
    env = {
        **os.environ,
        "PATH": f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "BENCH_MODEL": str(skops_file),
        "BENCH_WORKERS": str(workers),
        "BENTOML_HOME": str(folder / "home"),
        "BENTOML_DO_NOT_TRACK": "true",
    }
    log = (folder / "bentoml.log").open("w")
    process = subprocess.Popen(
        [str(python.parent / "bentoml"), "serve", "service:Pipeline", "--host", "127.0.0.1", "--port", str(port)],
        cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_ok(f"http://127.0.0.1:{port}/readyz", timeout=180, what="BentoML", process=process)
        yield f"http://127.0.0.1:{port}/predict", "rows", process.pid
    finally:
        stop(process)
