"""Label-free performance estimation benchmark: the monitor's CBPE against NannyML's, one run.

    .venv/bin/python -m bench.estimate [--rows 5000,50000] [--windows 20] [--no-peers]

The data is the scenarios' simulated world (tests/support/world.py): four normal features and a
hidden logistic truth. A logistic regression is fitted on 5,000 rows of the unchanged world and
scored on a held-out 5,000 (the reference: scores, predictions, labels). Then, for each window
size N, `--windows` windows of N rows of the unchanged world (steady) and as many of a world whose
two features' means moved by one standard deviation (covariate drift, the same truth).

  - modelbus: the trainer's calibration (services.trainer.domain.calibration, isotonic, fitted on
    the reference) and the monitor's estimate per window (services.monitor.estimate), timed per
    window on the arrays the monitor holds;
  - NannyML (its own virtualenv under .modelbus/bench, as bench/drift.py): `CBPE` with accuracy
    and ROC-AUC, fitted on the reference and estimating every window (`chunk_size` = N), timed
    around fit and estimate, per window.

Error is against the truth: the realised accuracy (and ROC-AUC) of each window's drawn labels, as
mean absolute error over the windows. Prints a table and writes JSON (default
bench/results/estimate.json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from bench.common import publish, say, table
from bench.drift import peer_python
from services.monitor import estimate
from shared.contract.events import Calibration
from shared.runtime.profile import calibration
from tests.support.world import FEATURES, TARGET, World

ROOT = Path(__file__).resolve().parents[1]

NANNYML = """
import json, sys, time, pandas as pd, nannyml as nml
reference, analysis, size = pd.read_csv(sys.argv[1]), pd.read_csv(sys.argv[2]), int(sys.argv[3])
began = time.perf_counter()
estimator = nml.CBPE(
    y_pred_proba="proba", y_pred="pred", y_true="label", problem_type="classification_binary",
    metrics=["accuracy", "roc_auc"], chunk_size=size,
)
estimator.fit(reference)
fitted = time.perf_counter()
found = estimator.estimate(analysis).filter(period="analysis").to_df()
done = time.perf_counter()
print(json.dumps({
    "fit_seconds": fitted - began, "estimate_seconds": done - fitted,
    "accuracy": found[("accuracy", "value")].tolist(), "roc_auc": found[("roc_auc", "value")].tolist(),
}))
"""


def scored(model: LogisticRegression, frame: pd.DataFrame) -> pd.DataFrame:
    """The rows as a monitor sees them: the positive class's probability, the prediction, the label."""
    proba = model.predict_proba(frame[FEATURES])[:, 1]
    return pd.DataFrame({"proba": proba, "pred": (proba >= 0.5).astype(int), "label": frame[TARGET].to_numpy()})


def truth(window: pd.DataFrame) -> dict[str, float]:
    return {
        "accuracy": float((window["pred"] == window["label"]).mean()),
        "roc_auc": float(roc_auc_score(window["label"], window["proba"])),
    }


def ours(fitted: Calibration, window: pd.DataFrame, repeats: int = 5) -> tuple[dict[str, float], float]:
    """The monitor's estimate of one window and its median time (top-class confidence and score)."""
    score = window["proba"].to_numpy(dtype=np.float64)
    confidence = np.maximum(score, 1 - score)
    timings, found = [], {}
    for _ in range(repeats):
        began = time.perf_counter()
        found = estimate.estimate(fitted, confidence, score)
        timings.append(time.perf_counter() - began)
    return found, float(np.median(timings))


def nannyml(reference: pd.DataFrame, windows: list[pd.DataFrame], size: int, folder: Path) -> dict[str, Any]:
    python = peer_python("nannyml")
    paths = folder / "reference.csv", folder / f"analysis-{size}.csv"
    reference.to_csv(paths[0], index=False)
    pd.concat(windows, ignore_index=True).to_csv(paths[1], index=False)
    done = subprocess.run(
        [str(python), "-c", NANNYML, str(paths[0]), str(paths[1]), str(size)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def errors(estimates: list[dict[str, float]], truths: list[dict[str, float]]) -> dict[str, float]:
    return {
        metric: float(np.mean([abs(e[metric] - t[metric]) for e, t in zip(estimates, truths, strict=True)]))
        for metric in ("accuracy", "roc_auc")
    }


def run(sizes: list[int], windows: int, peers: bool, folder: Path) -> dict[str, Any]:
    base = World()
    model = LogisticRegression(max_iter=500).fit(base.frame(5000, seed=1)[FEATURES], base.frame(5000, seed=1)[TARGET])
    held_out = base.frame(5000, seed=2)
    fitted = calibration(model, held_out[FEATURES], held_out[TARGET])
    assert fitted is not None
    reference = scored(model, held_out)
    results: dict[str, Any] = {"windows_per_phase": windows, "reference_rows": len(reference), "sizes": {}}
    for size in sizes:
        for phase, world in (("steady", base), ("drifted", base.moved(x1=1.0, x2=1.0))):
            say(f"[bench] {size:,} rows x {windows} windows, {phase} …")
            frames = [scored(model, world.frame(size, seed=1000 * size + 10 * i + len(phase))) for i in range(windows)]
            truths = [truth(w) for w in frames]
            mine = [ours(fitted, w) for w in frames]
            found: dict[str, Any] = {
                "truth_accuracy": float(np.mean([t["accuracy"] for t in truths])),
                "modelbus": {
                    "mae": errors([m[0] for m in mine], truths),
                    "seconds_per_window": float(np.median([m[1] for m in mine])),
                },
            }
            if peers:
                peer = nannyml(reference, frames, size, folder)
                if "error" in peer:
                    found["nannyml"] = peer
                else:
                    estimates = [
                        {"accuracy": a, "roc_auc": r} for a, r in zip(peer["accuracy"], peer["roc_auc"], strict=True)
                    ]
                    found["nannyml"] = {
                        "mae": errors(estimates[:windows], truths),
                        "seconds_per_window": (peer["fit_seconds"] + peer["estimate_seconds"]) / windows,
                        "fit_seconds": peer["fit_seconds"],
                        "estimate_seconds_per_window": peer["estimate_seconds"] / windows,
                    }
            results["sizes"].setdefault(size, {})[phase] = found
    return results


def report(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[list[Any]] = []
    for size, phases in results["sizes"].items():
        for phase, found in phases.items():
            ours_seconds = found["modelbus"]["seconds_per_window"]
            for system in ("modelbus", "nannyml"):
                if system not in found:
                    continue
                result = found[system]
                if "error" in result:
                    rows.append([size, phase, system, "failed", result["error"][:60], "-", "-", "-"])
                    continue
                ratio = result["seconds_per_window"] / ours_seconds
                alone = result.get("estimate_seconds_per_window", result["seconds_per_window"]) / ours_seconds
                mae = result["mae"]
                timing = [f"{result['seconds_per_window']:.5f}", f"{ratio:.1f}x", f"{alone:.1f}x"]
                rows.append([size, phase, system, round(mae["accuracy"], 4), round(mae["roc_auc"], 4), *timing])
    note = (
        f"windows per phase: {results['windows_per_phase']}; error against each window's realised value;"
        " NannyML's s/window includes its fit on the reference, spread over the windows; 'estimate only' leaves it out"
    )
    columns = ["rows", "phase", "system", "accuracy MAE", "ROC-AUC MAE", "s/window", "vs modelbus", "estimate only"]
    return [table("Label-free performance estimation (CBPE) against NannyML", columns, rows, note)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="5000,50000")
    parser.add_argument("--windows", type=int, default=20)
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "estimate.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="modelbus-bench-estimate-") as folder:
        results = run([int(r) for r in args.rows.split(",")], args.windows, not args.no_peers, Path(folder))
    tables = report(results)
    results["sizes"] = {str(size): phases for size, phases in results["sizes"].items()}
    publish(args.out, "estimate", "Estimation: the monitor's CBPE against NannyML's", tables, results)


if __name__ == "__main__":
    main()
