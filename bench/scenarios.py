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
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.common import say
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


def report(results: dict[str, Any]) -> None:
    say("")
    say(f"{'scenario':<38} {'versions':<28} {'asked':>5} {'skipped':>7} {'run':>4} {'rollbacks':>9} {'s':>6}")
    say("-" * 104)
    for found in results["scenarios"]:
        versions = " ".join(f"v{v}:{state}" for v, state in found["versions"].items())
        say(
            f"{found['scenario']:<38} {versions:<28} {found['retrains_asked']:>5} {found['retrains_skipped']:>7} "
            f"{found['retrains_run']:>4} {found['rollbacks']:>9} {found['seconds']:>6.0f}"
        )
    say("\nverdicts, with their evidence (decisive lines: pass/fail/undecided; reported lines do not decide)")
    for found in results["scenarios"]:
        for verdict in found["verdicts"]:
            say(f"  {found['scenario'][:2]} v{verdict['version']} {verdict['verdict']}: {verdict['reason'][:150]}")
            for line in verdict["evidence"]:
                if line["metric"] in ("live_error_rate_increase", "live_mae_increase", "estimated_accuracy") or (
                    line["outcome"] == "fail"
                ):
                    interval = f" CI [{line['low']:+.4f}, {line['high']:+.4f}]" if "low" in line else ""
                    say(
                        f"      {line['metric']:<26} {line['test']:<12} {line['outcome']:<9}"
                        f" candidate {line.get('candidate', 0):.4f} stable {line.get('stable', 0):.4f}"
                        f"{interval} n={line.get('candidate_samples')}"
                    )
        for reason in found["skipped_reasons"]:
            say(f"  {found['scenario'][:2]} skipped: {reason}")
        for built in found["feedback"]:
            lineage = built["lineage"]
            say(
                f"  {found['scenario'][:2]} feedback dataset {built['version']}: {lineage['feedback_rows']} rows,"
                f" {len(lineage['windows'])} windows, {len(lineage['label_batches'])} label batches"
            )
        if found["figures"] and not found["scenario"].startswith("5."):
            say(f"  {found['scenario'][:2]} {json.dumps(found['figures'], default=str)[:200]}")
    cbpe = results["scenarios"][-1]["figures"]
    peer = results.get("nannyml", {})
    say("\nCBPE on the platform: estimated vs realised accuracy per window")
    say(f"{'phase':<9} {'windows':>7} {'rows':>6} {'modelbus MAE':>13} {'max':>7} {'NannyML MAE':>12} {'drifted':>8}")
    for phase in ("steady", "drifted"):
        mine = cbpe[phase]
        theirs = peer.get(phase, {})
        shown = f"{theirs['mae']:>12.4f}" if "mae" in theirs else f"{theirs.get('error', '-')[:12]:>12}"
        say(
            f"{phase:<9} {mine['windows']:>7} {mine['rows_per_window']:>6} {mine['mae']:>13.4f}"
            f" {mine['max_error']:>7.4f} {shown} {mine['dataset_drift_windows']:>8}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scenarios.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="modelbus-bench-scenarios-") as folder:
        results = asyncio.run(run(Settings(), args.profile, not args.no_peers, Path(folder)))
    report(results)
    results["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    say(f"\nJSON: {args.out}")


if __name__ == "__main__":
    main()
