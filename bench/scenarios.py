"""The loop's decisions on a simulated world, full profile, with figures.

    .venv/bin/python -m bench.scenarios [--profile full|short] [--no-peers] [--out PATH]

Needs the local stack (`modelbus stack up`) and the platform's ports free (it starts its own seven
processes). Runs the five scenarios of tests/support/scenarios.py one after another:
  1. covariate drift, fresh data published: how many retrains, the new version's verdicts;
  2. covariate drift, no fresh data, over several cooldowns: versions, skips, the one alert;
  3. concept drift, labels, no producer: the feedback dataset, the paired evidence, the verdict;
  4. a candidate with constant predictions: the rollback and its evidence, with no labels;
  5. CBPE: estimated against realised accuracy per window, steady and drifted; and NannyML's CBPE
     on the same windows' rows (its own virtualenv, as bench/estimate.py), with a reference of
     1,000 rows of the unchanged world served first: as many labelled rows as the version's
     calibration had (its test split).
Prints tables and writes JSON (default bench/results/scenarios.json).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.common import publish, say, table
from bench.estimate import nannyml
from shared.runtime.settings import Settings
from tests.support.scenarios import (
    PROFILES,
    Loop,
    Report,
    broken,
    estimation,
    feedback,
    fresh_data,
    no_fresh_data,
)

ROOT = Path(__file__).resolve().parents[1]

REFERENCE_ROWS = 1000  # as many labelled rows as the version's calibration saw (its test split: 20 % of 5,000)


def frames(rows: list[dict[str, Any]]) -> pd.DataFrame:
    found = pd.DataFrame(rows)
    return pd.DataFrame({"proba": found["probability"], "pred": found["prediction"], "label": found["truth"]})


def nannyml_on(served: dict[str, list[dict[str, Any]]], size: int, folder: Path) -> dict[str, Any]:
    """NannyML's CBPE on the windows the monitor closed: consecutive runs of `size` rows, in the
    order served (one client, one partition: the monitor's order)."""
    reference = frames(served["reference"])
    found: dict[str, Any] = {}
    for phase in ("steady", "drifted"):
        rows = frames(served[phase])
        windows = [rows.iloc[i : i + size] for i in range(0, len(rows), size)]
        peer = nannyml(reference, windows, size, folder)
        if "error" in peer:
            found[phase] = peer
            continue
        realised = [float((w["pred"] == w["label"]).mean()) for w in windows]
        errors = [abs(e - r) for e, r in zip(peer["accuracy"], realised, strict=False)]
        found[phase] = {
            "windows": len(errors),
            "mae": round(float(np.mean(errors)), 4),
            "seconds_per_window": (peer["fit_seconds"] + peer["estimate_seconds"]) / len(windows),
        }
    return found


async def run(settings: Settings, profile: str, peers: bool, folder: Path) -> dict[str, Any]:
    chosen = PROFILES[profile]
    loop = Loop(settings, folder / "platform", say=say)
    await loop.start()
    reports: list[Report] = []
    try:
        for scenario in (fresh_data, no_fresh_data, feedback, broken):
            say(f"\n[bench] {scenario.__doc__}")
            reports.append(await scenario(loop, chosen))
        say("\n[bench] CBPE on the simulation")
        cbpe, served = await estimation(loop, chosen, reference_rows=REFERENCE_ROWS if peers else 0)
        reports.append(cbpe)
    finally:
        await loop.stop()
    results: dict[str, Any] = {
        "profile": dataclasses.asdict(chosen),
        "scenarios": [dataclasses.asdict(r) for r in reports],
    }
    if peers:
        results["nannyml"] = nannyml_on(served, chosen.cbpe_window_rows, folder)
    return results


DECISIVE = ("live_error_rate_increase", "live_mae_increase", "estimated_accuracy")


def report(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's tables: each scenario's outcome, the verdicts' decisive evidence, CBPE against NannyML."""
    outcomes = table(
        "The scenarios",
        ["scenario", "versions", "retrains asked", "skipped", "run", "rollbacks", "seconds"],
        [[found["scenario"], " ".join(f"v{v}: {state}" for v, state in found["versions"].items()),
          found["retrains_asked"], found["retrains_skipped"], found["retrains_run"], found["rollbacks"],
          round(found["seconds"])] for found in results["scenarios"]],
    )  # fmt: skip
    evidence = []
    for found in results["scenarios"]:
        for verdict in found["verdicts"]:
            for line in verdict["evidence"]:
                if line["metric"] in DECISIVE or line["outcome"] == "fail":
                    interval = f"[{line['low']:+.4f}, {line['high']:+.4f}]" if "low" in line else "-"
                    evidence.append([found["scenario"][:2], f"v{verdict['version']} {verdict['verdict']}",
                                     line["metric"], line["test"], line["outcome"], interval,
                                     line.get("candidate_samples") or "-"])  # fmt: skip
        skipped = found["skipped_reasons"]
        evidence += [[found["scenario"][:2], "skipped", reason[:120], "", "", "", ""] for reason in skipped]
    verdicts = table(
        "The verdicts' decisive evidence",
        ["scenario", "verdict", "metric", "test", "outcome", "interval", "n"],
        evidence,
        "Decisive lines pass, fail or stay undecided; the lines a verdict only reports are left out.",
    )
    cbpe = results["scenarios"][-1]["figures"]
    peer = results.get("nannyml", {})
    rows = []
    for phase in ("steady", "drifted"):
        mine, theirs = cbpe[phase], peer.get(phase, {})
        peer_mae = round(theirs["mae"], 4) if "mae" in theirs else theirs.get("error", "-")[:40]
        rows.append([phase, mine["windows"], mine["rows_per_window"], round(mine["mae"], 4),
                     round(mine["max_error"], 4), peer_mae, mine["dataset_drift_windows"]])  # fmt: skip
    estimates = table(
        "CBPE on the platform: estimated against realised accuracy per window",
        ["phase", "windows", "rows", "modelbus MAE", "max", "NannyML MAE", "drifted windows"],
        rows,
    )
    return [outcomes, verdicts, estimates]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scenarios.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="modelbus-bench-scenarios-") as folder:
        results = asyncio.run(run(Settings(), args.profile, not args.no_peers, Path(folder)))
    tables = report(results)
    publish(args.out, "scenarios", f"The loop's decisions on a simulated world ({args.profile} profile)", tables,
            json.loads(json.dumps(results, default=str)))  # fmt: skip


if __name__ == "__main__":
    main()
