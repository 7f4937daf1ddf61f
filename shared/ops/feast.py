"""The Feast side of the local stack: the example feature repo set up, `feast apply` and
`feast materialize-incremental` run on a repo (Feast's own command line, in this environment)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from shared.ops.example_data import activity_frame

EXAMPLE_REPO = Path(__file__).resolve().parents[2] / "schemas" / "examples" / "feature_repo"
EXAMPLE_SOURCE = "data/customer_activity.parquet"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


class FeastCommandError(RuntimeError):
    """A Feast command failed; the message holds its output's end."""


def feast_command() -> list[str]:
    """Feast's command line in this environment; raises FeastCommandError when Feast is not installed."""
    found = Path(sys.executable).with_name("feast")
    if found.is_file():
        return [str(found)]
    on_path = shutil.which("feast")
    if on_path is None:
        raise FeastCommandError("Feast is not installed: pip install 'modelbus[feast]'")
    return [on_path]


def set_up_example(repo: Path, say: Callable[[str], None]) -> None:
    """Copy the example feature repo into `repo` and write its offline source (once: an existing
    source is kept, so materialized and trained data stay the same)."""
    repo.mkdir(parents=True, exist_ok=True)
    for name in ("feature_store.yaml", "customer_activity.py"):
        shutil.copyfile(EXAMPLE_REPO / name, repo / name)
    source = repo / EXAMPLE_SOURCE
    if not source.is_file():
        source.parent.mkdir(parents=True, exist_ok=True)
        frame = activity_frame()
        frame.to_parquet(source, index=False)
        say(f"[feast] wrote the example's offline source: {len(frame):,} snapshots to {source}")


def run(repo: Path, *args: str, say: Callable[[str], None]) -> None:
    """Run `feast -c REPO ARGS`, passing its output on; raises FeastCommandError if it fails."""
    command = [*feast_command(), "-c", str(repo), *args]
    say(f"[feast] {' '.join(['feast', '-c', str(repo), *args])}")
    quiet = {**os.environ, "PYTHONWARNINGS": "ignore"}
    process = subprocess.run(command, capture_output=True, text=True, check=False, env=quiet)
    lines = [ANSI.sub("", line) for line in (process.stdout + process.stderr).splitlines() if line.strip()]
    for line in lines:
        say(f"[feast]   {line}")
    if process.returncode != 0:
        raise FeastCommandError(f"feast {' '.join(args)} failed ({process.returncode}): " + " | ".join(lines[-5:]))


def apply(repo: Path, say: Callable[[str], None], *, example: bool, materialize: bool = True) -> None:
    """Apply the repo's definitions to its registry (setting the example up first when asked),
    then materialize its views into the online store up to now."""
    if example:
        set_up_example(repo, say)
    if not (repo / "feature_store.yaml").is_file():
        raise FeastCommandError(f"no feature_store.yaml in {repo}: not a Feast feature repo")
    run(repo, "apply", say=say)
    if materialize:
        materialize_incremental(repo, say)


def materialize_incremental(repo: Path, say: Callable[[str], None]) -> None:
    """`feast materialize-incremental NOW`: each view's new rows since its last materialization."""
    run(repo, "materialize-incremental", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"), say=say)
