"""Drift benchmark: the monitor's statistics against Evidently, NannyML and alibi-detect, one run.

    .venv/bin/python -m bench.drift [--rows 50000,500000] [--no-peers]

The data (seeded, generated here): 25 columns, 20 numeric and 5 categorical; the current window
shifts 6 of them (a mean shift, a scale change, a slid uniform, a mixture, a log-mean shift and a
categorical whose frequencies are reversed); the other 19 come from the reference distribution.
For each size N the reference and current windows both have N rows.

modelbus is timed on what the monitor does per window: its reference is the trainer's profile of
the reference window (built once, untimed, as at training), and the window's columns are arrays
(numeric float64, categorical integer codes: the monitor encodes a batch at a time at ingestion;
that encoding is timed separately here and reported). Each peer runs in its own virtualenv under .modelbus/bench, on
pandas DataFrames read from CSV, timed around its drift call only, with its default settings:
  - Evidently: `Report([DataDriftPreset()], include_tests=True)`;
  - NannyML: `UnivariateDriftCalculator` (its default methods: Jensen-Shannon and L-infinity),
    ten chunks per window (its thresholds come from the spread across reference chunks), a
    feature flagged when any chunk of the current window alerts;
  - alibi-detect: `TabularDrift` (KS and chi-square with its default FDR correction).
Prints a table (seconds, rows/s, ratio to modelbus, features flagged, whether exactly the shifted
ones) and writes JSON (default bench/results/drift.json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.common import BENCH, publish, say, table
from services.monitor import drift
from shared.runtime.profile import categorical_profile, numeric_profile

ROOT = Path(__file__).resolve().parents[1]

NUMERIC = [f"n{i:02d}" for i in range(20)]
CATEGORICAL = [f"c{i}" for i in range(5)]
SHIFTED = ["n00", "n01", "n02", "n03", "n04", "c0"]
PEERS = {  # each peer's pins; pandas below 3, which these releases predate
    "evidently": ["evidently==0.7.23", "pandas<3"],
    "nannyml": ["nannyml==0.13.1", "pandas<3", "statsmodels"],
    "alibi-detect": ["alibi-detect==0.13.0", "pandas<3"],
}
RUNNERS = {
    "evidently": """
import json, sys, time, pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset
ref, cur = pd.read_csv(sys.argv[1]), pd.read_csv(sys.argv[2])
began = time.perf_counter()
snapshot = Report([DataDriftPreset()], include_tests=True).run(cur, ref)
result = snapshot.dict()
seconds = time.perf_counter() - began
flagged = []
for test in result.get("tests", []):
    name = test.get("name", "") + " " + json.dumps(test.get("metric_config", {}))
    for column in ref.columns:
        if f'"{column}"' in name and test.get("status") == "FAIL" and "column" in name.lower():
            flagged.append(column)
print(json.dumps({"seconds": seconds, "flagged": sorted(set(flagged))}))
""",
    "nannyml": """
import json, sys, time, pandas as pd, nannyml as nml
ref, cur = pd.read_csv(sys.argv[1]), pd.read_csv(sys.argv[2])
began = time.perf_counter()
calc = nml.UnivariateDriftCalculator(column_names=list(ref.columns), chunk_number=10)
calc.fit(ref)
frame = calc.calculate(cur).filter(period="analysis").to_df()
seconds = time.perf_counter() - began
flagged = set()
for column in ref.columns:
    for method in frame[column].columns.get_level_values(0).unique():
        if bool(frame[column][method]["alert"].any()):
            flagged.add(column)
print(json.dumps({"seconds": seconds, "flagged": sorted(flagged)}))
""",
    "alibi-detect": """
import json, sys, time, numpy as np, pandas as pd
from alibi_detect.cd import TabularDrift
ref, cur = pd.read_csv(sys.argv[1]), pd.read_csv(sys.argv[2])
columns = list(ref.columns)
categorical = [i for i, c in enumerate(columns) if ref[c].dtype == object]
codes = {c: {v: k for k, v in enumerate(sorted(set(ref[c]) | set(cur[c])))} for c in columns if ref[c].dtype == object}
def matrix(frame):
    cells = [frame[c].map(codes[c]) if c in codes else frame[c] for c in columns]
    return np.column_stack([c.to_numpy(float) for c in cells])
x_ref, x_cur = matrix(ref), matrix(cur)
began = time.perf_counter()
detector = TabularDrift(x_ref, p_val=0.05, categories_per_feature={i: None for i in categorical})
prediction = detector.predict(x_cur, drift_type="feature")
seconds = time.perf_counter() - began
flagged = [columns[i] for i, d in enumerate(prediction["data"]["is_drift"]) if d]
print(json.dumps({"seconds": seconds, "flagged": flagged}))
""",
}


def generate(rows: int, *, shifted: bool, seed: int) -> pd.DataFrame:
    """The 25 columns; `shifted` moves the six named in SHIFTED."""
    rng = np.random.default_rng(seed)
    s = shifted
    columns: dict[str, Any] = {
        "n00": rng.normal(0.5 if s else 0.0, 1.0, rows),  # mean shift
        "n01": rng.normal(0.0, 1.5 if s else 1.0, rows),  # scale change
        "n02": rng.uniform(0.2 if s else 0.0, 1.2 if s else 1.0, rows),  # slid uniform
        "n03": np.where(rng.random(rows) < (0.2 if s else 0.0), rng.normal(3, 1, rows), rng.normal(0, 1, rows)),
        "n04": rng.lognormal(0.3 if s else 0.0, 0.5, rows),  # log-mean shift
    }
    for i in range(5, 20):
        kind = i % 5
        columns[f"n{i:02d}"] = (
            rng.normal(i, 1 + i / 10, rows)
            if kind == 0
            else rng.uniform(-i, i, rows)
            if kind == 1
            else rng.exponential(i, rows)
            if kind == 2
            else rng.poisson(i, rows).astype(float)
            if kind == 3
            else rng.gamma(2.0, i, rows)
        )
    frequencies = [0.4, 0.3, 0.2, 0.1]
    columns["c0"] = rng.choice(["a", "b", "c", "d"], size=rows, p=frequencies[::-1] if s else frequencies)
    for i, size in zip(range(1, 5), (3, 5, 10, 40), strict=True):
        weights = np.arange(1, size + 1, dtype=float)
        columns[f"c{i}"] = rng.choice([f"v{k}" for k in range(size)], size=rows, p=weights / weights.sum())
    return pd.DataFrame(columns)


def modelbus(reference: pd.DataFrame, current: pd.DataFrame, *, repeats: int = 5) -> dict[str, Any]:
    """The monitor's drift on the window: profile (untimed), encode (timed apart), test (timed)."""
    references: dict[str, drift.Reference] = {}
    for name in NUMERIC:
        references[name] = drift.NumericReference.from_profile(name, numeric_profile(reference[name], seed=42))
    for name in CATEGORICAL:
        references[name] = drift.CategoricalReference.from_profile(name, categorical_profile(reference[name]))
    began = time.perf_counter()
    columns: dict[str, np.ndarray[Any, Any]] = {name: current[name].to_numpy(dtype=np.float64) for name in NUMERIC}
    for name in CATEGORICAL:
        ref = references[name]
        assert isinstance(ref, drift.CategoricalReference)
        code = ref.vocabulary.code
        columns[name] = np.fromiter((code(v) for v in current[name].to_numpy()), dtype=np.int64, count=len(current))
    encode_seconds = time.perf_counter() - began
    policy = drift.Policy(drifted_share=0.2)
    timings = []
    for _ in range(repeats):
        began = time.perf_counter()
        judged = drift.window_drift(references, columns, policy)
        timings.append(time.perf_counter() - began)
    return {
        "seconds": float(np.median(timings)),
        "seconds_min": min(timings),
        "encode_seconds": encode_seconds,
        "flagged": sorted(f.feature for f in judged.features if f.drifted),
        "tests": sorted({f.test for f in judged.features}),
        "wasserstein_bound_max": max(judged.bounds.values(), default=0.0),
    }


def peer_python(name: str) -> Path:
    """The peer's own virtualenv, created on first use."""
    venv = BENCH / f"{name}-venv"
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    wanted = " ".join(PEERS[name])
    if not marker.exists() or marker.read_text() != wanted:
        say(f"[bench] installing {', '.join(PEERS[name])} into {venv} (a few minutes the first time) …")
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PEERS[name]], check=True)
        marker.write_text(wanted)
    return python


def run_peer(name: str, reference: Path, current: Path) -> dict[str, Any]:
    python = peer_python(name)
    done = subprocess.run(
        [str(python), "-c", RUNNERS[name], str(reference), str(current)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore", "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="50000,500000")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "drift.json")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="modelbus-bench-drift-"))
    results: dict[str, Any] = {"shifted": SHIFTED, "sizes": {}}
    for rows in (int(r) for r in args.rows.split(",")):
        say(f"[bench] generating {rows:,} reference and {rows:,} current rows …")
        reference, current = generate(rows, shifted=False, seed=1), generate(rows, shifted=True, seed=2)
        paths = (folder / f"reference-{rows}.csv", folder / f"current-{rows}.csv")
        reference.to_csv(paths[0], index=False)
        current.to_csv(paths[1], index=False)
        found: dict[str, Any] = {"modelbus": modelbus(reference, current)}
        say(f"[bench] modelbus {rows:,}: {found['modelbus']['seconds']:.3f} s, flagged {found['modelbus']['flagged']}")
        if not args.no_peers:
            for peer in PEERS:
                found[peer] = run_peer(peer, *paths)
                shown = found[peer].get("error") or f"{found[peer]['seconds']:.3f} s, flagged {found[peer]['flagged']}"
                say(f"[bench] {peer} {rows:,}: {shown}")
        results["sizes"][rows] = found
    tables = report(results)
    results["sizes"] = {str(rows): found for rows, found in results["sizes"].items()}
    publish(
        args.out,
        "drift",
        "Drift: the monitor's statistics against Evidently, NannyML and alibi-detect",
        tables,
        results,
    )


def report(results: dict[str, Any]) -> list[dict[str, Any]]:
    shifted = set(results["shifted"])
    rows_out: list[list[Any]] = []
    notes = []
    for rows, found in results["sizes"].items():
        ours = found["modelbus"]["seconds"]
        for system, result in found.items():
            if "error" in result:
                rows_out.append([rows, system, "failed", "-", "-", result["error"][:70]])
                continue
            flagged = set(result["flagged"])
            extra, missed = sorted(flagged - shifted), sorted(shifted - flagged)
            verdict = "yes" if not extra and not missed else f"no (+{extra} -{missed})"
            seconds = result["seconds"]
            rows_out.append([rows, system, round(seconds, 3), round(rows / seconds), f"{seconds / ours:.1f}x", verdict])
        notes.append(
            f"{rows:,} rows: categorical strings encoded at ingestion in {found['modelbus']['encode_seconds']:.3f} s"
        )
    columns = ["rows", "system", "seconds", "rows/s", "vs modelbus", f"exactly the {len(shifted)} shifted?"]
    return [table("Drift tests on one window, every feature", columns, rows_out, "; ".join(notes))]


if __name__ == "__main__":
    main()
