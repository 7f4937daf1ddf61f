"""The Python client as a user gets it: `pip install 'modelbus[pandas]'` into a fresh virtualenv
(no platform packages), then the Python client page's notebook session, run as written against a platform of
its own (7 processes, real Kafka, PostgreSQL and S3)."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.contract import topics
from shared.ops.tools import read_all
from shared.runtime.settings import Settings
from tests.support.scenarios import BASE, Loop, Pace, name

pytestmark = pytest.mark.timeout(900)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
async def loop(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Loop]:
    running = Loop(base_settings, tmp_path_factory.mktemp("client"))
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


def session() -> str:
    """The Python client page's session block, as written."""
    page = (ROOT / "docs" / "integrations" / "python-client.md").read_text()
    found = re.search(r"A session, as in a notebook.*?```python\n(.*?)```", page, re.S)
    assert found, "the Python client page has its session"
    return found.group(1)


def fresh_virtualenv(folder: Path) -> Path:
    """A virtualenv with `modelbus[pandas]` installed from this checkout's sources, and nothing else."""
    source = folder / "source"
    source.mkdir()
    for item in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / item, source / item)
    for item in ("shared", "services"):
        shutil.copytree(ROOT / item, source / item, ignore=shutil.ignore_patterns("__pycache__"))
    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", f"{source}[pandas]"], capture_output=True, text=True, check=False
    )
    assert install.returncode == 0, install.stderr[-3000:]
    return python


async def test_the_client_installs_alone_and_runs_the_readme_session(loop: Loop, tmp_path: Path) -> None:
    model = name("client")
    await loop.first_version(model, Pace(), BASE.frame(3000, seed=1))
    python = await asyncio.to_thread(fresh_virtualenv, tmp_path)
    platform = ("fastapi", "sklearn", "aiokafka", "sqlalchemy", "pydantic_settings", "onnxruntime")
    probe = f"import importlib.util as u; print([m for m in {platform!r} if u.find_spec(m)])"
    alone = await asyncio.to_thread(
        subprocess.run, [str(python), "-c", probe], capture_output=True, text=True, check=True
    )
    assert alone.stdout.strip() == "[]", f"the client's virtualenv holds platform packages: {alone.stdout}"

    folder = tmp_path / "notebook"
    folder.mkdir()
    BASE.frame(40, seed=7).to_csv(folder / "new-customers.csv", index=False)
    (folder / "session.py").write_text(session().replace('"churn', f'"{model}'))
    env = {
        "PATH": "/usr/bin:/bin",
        "MODELBUS_API_URL": f"http://127.0.0.1:{loop.settings.registry_port}",
        "MODELBUS_SERVING_URL": f"http://127.0.0.1:{loop.settings.serving_port}",
        "MODELBUS_ALERTER_URL": f"http://127.0.0.1:{loop.settings.alerter_port}",
        "MODELBUS_API_TOKEN": loop.token,
    }
    run = await asyncio.to_thread(
        subprocess.run,
        [str(python), "session.py"], cwd=folder, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    printed = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in run.stdout.splitlines() if ":" in line}
    assert model in printed["models"]
    assert printed["champion"].startswith("1 sklearn.linear_model.LogisticRegression"), run.stdout
    assert printed["pinned"] == "{1} 40", run.stdout  # the pinned V2 answers equal the rollout's, row for row
    assert printed["labels"].startswith("LabelsArrived")
    assert printed["refused"].startswith("422 ['instances[0].x1: required'")
    assert printed["lineage"].startswith("d1 ")
    assert "('publish-LabelsArrived', 'ok')" in printed["audit"]
    assert printed["newest"] == "1"

    event_id = printed["labels"].split()[1]

    async def on_the_bus() -> bool:
        records = await read_all(loop.settings, topics.LABELS_ARRIVED)
        return any(dict(r.headers).get("ce_id") == event_id.encode() for r in records)

    await loop.until(on_the_bus, 30, "the client's LabelsArrived on the labels topic")
