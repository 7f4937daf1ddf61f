"""Reliability report: the fault scenarios and the hostile-input corpus, with figures.

    .venv/bin/python -m bench.reliability [--profile full|short] [--skip-hostile] [--out PATH]

Needs the local stack (`modelbus stack up`) and the platform's ports free (it starts its own seven
processes, twice: once for the faults, once for the corpus). Runs:
  1. kill -9 of a random process every few seconds during concurrent lifecycles, while the
     trainer and monitor groups go 1 → 3 → 1 replicas; then every event on the bus against what
     every consumer group handled, and every effect that happened twice;
  2. the broker restarted, then the database restarted: how long until new data is handled;
  3. the S3 server stopped during artifact uploads: TrainingFailed after the retries, then recovery;
  4. the hostile corpus (tests/support/hostile.py): bad events, data, specs, requests, a tampered artifact.
Prints tables and writes JSON (default bench/results/reliability.json).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

from bench.common import publish, say, table
from shared.runtime.broker import drop_topics
from shared.runtime.settings import Settings
from tests.support.faults import PROFILES, Harness, chaos, restart, s3_outage
from tests.support.hostile import hostile_platform

ROOT = Path(__file__).resolve().parents[1]


async def faults(settings: Settings, profile: str, folder: Path) -> dict[str, Any]:
    h = Harness(settings, folder / "faults", say=say)
    await h.start()
    try:
        report = await chaos(h, PROFILES[profile])
        restarts = [await restart(h, "kafka"), await restart(h, "postgres")]
        upload = await s3_outage(h)
    finally:
        await h.stop()
    return {
        "chaos": dataclasses.asdict(report) | {"kill_count": report.kill_count},
        "restarts": [dataclasses.asdict(r) for r in restarts],
        "s3_outage": {
            "training_failed": upload.failed.model_dump(mode="json") if upload.failed else None,
            "recovered_seconds": upload.recovered_seconds,
        },
    }


async def hostile(settings: Settings, folder: Path) -> list[dict[str, Any]]:
    platform_, corpus = await hostile_platform(settings, folder / "hostile", say)
    try:
        await corpus.prepare()
        outcomes = await corpus.run()
        alive = not platform_.dead()
    finally:
        platform_.stop()
        await drop_topics(corpus.settings)
    return [dataclasses.asdict(o) | {"processes_alive_after": alive} for o in outcomes]


def show(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's tables: the faults' figures, then each hostile case."""
    chaos_ = result["faults"]["chaos"]
    rows = [
        ("lifecycles completed", f"{chaos_['completed']}/{chaos_['lifecycles']} ({chaos_['outcomes']})"),
        ("kills survived (kill -9, then restarted)", f"{chaos_['kill_count']} {chaos_['kills']}"),
        ("consumer groups scaled", chaos_["scaled"]),
        (
            "versions / evaluations / rollout changes / alerts",
            "{versions} / {evaluations} / {rollout_changes} / {alerts}".format(**chaos_),
        ),
        (
            "events produced but not handled",
            str(sum(chaos_["missing"].values())) + (f" {chaos_['missing']}" if chaos_["missing"] else ""),
        ),
        ("effects done twice", str(sum(chaos_["duplicates"].values()))),
        ("copies delivered again (absorbed by the inbox)", str(chaos_["copies"])),
        ("dead letters", str(chaos_["dead_letters"])),
    ]
    for restart_ in result["faults"]["restarts"]:
        recovered = restart_["recovered_seconds"]
        rows.append(
            (
                f"{restart_['component']} restarted",
                f"down {restart_['outage_seconds']:.1f} s; new data handled {recovered:.1f} s after it was back"
                if recovered is not None
                else "NOT recovered within 180 s",
            )
        )
    upload = result["faults"]["s3_outage"]
    failed = upload["training_failed"]
    rows.append(
        (
            "S3 down during upload",
            (f"TrainingFailed at {failed['stage']}: {failed['reason'][:70]}" if failed else "no TrainingFailed")
            + (f"; trains again {upload['recovered_seconds']:.1f} s after" if upload["recovered_seconds"] else ""),
        )
    )
    if result.get("hostile"):
        cases = result["hostile"]
        rows.append(("bad inputs rejected readably / total", f"{sum(c['passed'] for c in cases)}/{len(cases)}"))
    produced = ", ".join(f"{kind} {count:,}" for kind, count in sorted(chaos_["produced"].items()))
    tables = [table("Faults and restarts", ["measure", "result"], [list(r) for r in rows],
                    f"Events produced (distinct) per type: {produced}.")]  # fmt: skip
    if result.get("hostile"):
        tables.append(
            table(
                "Hostile inputs",
                ["case", "family", "expected", "observed", "ok"],
                [[c["case"], c["family"], c["expected"], c["observed"][:160], "yes" if c["passed"] else "NO"]
                 for c in result["hostile"]],
            )
        )  # fmt: skip
    return tables


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full")
    parser.add_argument("--skip-hostile", action="store_true", help="only the fault scenarios")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "reliability.json")
    args = parser.parse_args()
    settings = Settings()
    with tempfile.TemporaryDirectory(prefix="modelbus-reliability-") as name:
        folder = Path(name)
        result: dict[str, Any] = {
            "profile": dataclasses.asdict(PROFILES[args.profile]),
            "faults": await faults(settings, args.profile, folder),
        }
        if not args.skip_hostile:
            result["hostile"] = await hostile(settings, folder)
    tables = show(result)
    publish(args.out, "reliability", f"Reliability: faults and hostile inputs ({args.profile} profile)", tables,
            json.loads(json.dumps(result, default=str)))  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
