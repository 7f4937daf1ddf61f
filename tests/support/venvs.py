"""The peers' own virtualenvs under .modelbus/bench/, made on first use: MLflow (its interop tests,
the tracking mirror and the serving benchmark) and the Open Inference Protocol's clients
(tritonclient, kserve), each tested unmodified. Tests, benchmarks and `scripts/bootstrap.sh --test`
take them from here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / ".modelbus" / "bench"


def say(line: str) -> None:
    print(line, flush=True)


CLIENTS = ("tritonclient[http]==2.73.0", "kserve==0.21.0")


def pinned_python(name: str, packages: tuple[str, ...], what: str) -> Path:
    """Python of the virtualenv .modelbus/bench/NAME holding exactly `packages` (made, or
    installed again, when the list changed)."""
    venv = BENCH / name
    python = venv / "bin" / "python"
    marker = venv / "installed.txt"
    if not marker.exists() or marker.read_text() != "\n".join(packages):
        say(f"[bench] installing {what} into .modelbus/bench/{name} …")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *packages], check=True)
        marker.write_text("\n".join(packages))
    return python


def clients_python() -> Path:
    """Python of a virtualenv with the Open Inference Protocol's own clients, unmodified: Triton's
    `tritonclient.http` and KServe's `InferenceRESTClient` (their pins clash with the project's)."""
    return pinned_python("clients-venv", CLIENTS, "tritonclient and kserve")


def mlflow_python() -> Path:
    """Python of the benchmark's own MLflow virtualenv (created on first use), with the same
    scikit-learn, skops and ONNX packages as modelbus, to read its models and write notebook ones."""
    import onnx
    import onnxruntime
    import skl2onnx
    import sklearn
    import skops

    venv = BENCH / "mlflow-venv"
    python = venv / "bin" / "python"
    if not (venv / "bin" / "mlflow").exists():
        say("[bench] installing MLflow into .modelbus/bench/mlflow-venv (a few minutes the first time) …")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "mlflow", "psycopg2-binary"], check=True)
    pins = {
        "sklearn": f"scikit-learn=={sklearn.__version__}",
        "skops": f"skops=={skops.__version__}",
        "skl2onnx": f"skl2onnx=={skl2onnx.__version__}",
        "onnx": f"onnx=={onnx.__version__}",
        "onnxruntime": f"onnxruntime=={onnxruntime.__version__}",
    }
    probe = "import importlib.metadata as m, sys; " + "; ".join(
        f"sys.exit(1) if m.version({pin.split('==')[0]!r}) != {pin.split('==')[1]!r} else None" for pin in pins.values()
    )
    if subprocess.run([str(python), "-c", probe], capture_output=True).returncode != 0:
        say(f"[bench] installing {', '.join(pins.values())} into the MLflow virtualenv …")
        subprocess.run([str(python), "-m", "pip", "install", "-q", *pins.values()], check=True)
    return python
