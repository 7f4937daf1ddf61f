"""The serving benchmark's Feast run: one model trained on the Feast example (two inline features,
ten looked up in Feast by customer_id), served by one serving process reading the example repo's
SQLite online store. The same model is called two ways, taking turns at each concurrency:
  - by key: each request carries customer_id and the two inline features; serving looks up the ten
    others (batched across concurrent requests);
  - inline: each request carries all twelve features (the same values), so serving looks up nothing.
The difference of the two is what the lookup adds. Requests go round 50 customers.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import free_port, say, serving_platform, table, vegeta
from services.trainer import fit
from shared.ops import feast as feast_ops
from shared.ops.example_data import activity_frame, churn_feast_frame
from shared.runtime import feast
from shared.runtime.settings import Settings
from shared.runtime.specfile import load_spec

ROOT = Path(__file__).resolve().parents[1]
CUSTOMERS = 50


def requests(repo: Path, refs: list[str]) -> tuple[list[str], list[str]]:
    """(by-key bodies, inline bodies) for CUSTOMERS customers, the same values both ways."""
    keys = [f"c{i:05d}" for i in range(CUSTOMERS)]
    online = (
        feast.open_store(repo)
        .get_online_features(features=refs, entity_rows=[{"customer_id": k} for k in keys], full_feature_names=True)
        .to_dict()
    )
    plans = ["basic", "plus", "pro"]
    by_key, inline = [], []
    for i, key in enumerate(keys):
        row: dict[str, Any] = {"customer_id": key, "plan": plans[i % 3], "monthly_charges": 30.0 + i}
        by_key.append(json.dumps({"instance": row}))
        inline.append(json.dumps({"instance": {**row, **{r: online[r.replace(":", "__")][i] for r in refs}}}))
    return by_key, inline


def run(
    settings: Settings,
    register: Callable[[Settings, Any, fit.Outcome], Any],
    *,
    concurrency: list[int],
    seconds: float,
    folder: Path,
    suffix: str,
) -> dict[str, Any]:
    """Train, register and serve the Feast example; p50 and p99 by key and inline at each concurrency."""
    repo = folder / "feast-repo"
    feast_ops.apply(repo, say, example=True)
    spec = load_spec((ROOT / "schemas/examples/model-spec-feast.yaml").read_text())
    spec = spec.model_copy(update={"model": f"bench-feast-{suffix}", "dataset": f"bench-feast-{suffix}"})
    data = folder / "churn-feast.csv"
    churn_feast_frame(activity_frame(), 4000).to_csv(data, index=False)
    say("[bench] training the Feast example …")
    outcome = fit.train(
        fit.Job("feast", spec, str(data), "csv", "0" * 64, str(folder / "feast"), "bench", feast_repo=str(repo))
    )
    if not outcome.ok:
        raise SystemExit(f"training the Feast example failed: {outcome.reason}")
    asyncio.run(register(settings, spec, outcome))
    by_key, inline = requests(repo, spec.feast_refs())
    port = free_port()
    env = {
        **os.environ,
        "MODELBUS_TOPIC_PREFIX": settings.topic_prefix,
        "MODELBUS_SERVING_PORT": str(port),
        "MODELBUS_SERVING_MODELS": spec.model,
        "MODELBUS_FEAST_REPO": str(repo),
        "MODELBUS_FEAST_MATERIALIZE_SECONDS": "0",
        "MODELBUS_LOG_LEVEL": "WARNING",
        "MODELBUS_OTLP_ENDPOINT": "",
    }
    runs: dict[str, dict[int, dict[str, float]]] = {"by_key": {}, "inline": {}}
    with serving_platform(
        env, folder, lambda models: spec.model in models, timeout=120, what="the Feast model", logs="feast-"
    ) as (
        base,
        _,
    ):
        url = f"{base}/v1/models/{spec.model}:predict"
        bodies = {"by_key": by_key, "inline": inline}
        for texts in bodies.values():  # warm-up
            vegeta(
                url,
                concurrency=4,
                seconds=2,
                body=texts[0],
                folder=folder / "feast-load",
                more=[(url, t) for t in texts[1:]],
            )
        for c in concurrency:
            for name, texts in bodies.items():
                result = vegeta(
                    url,
                    concurrency=c,
                    seconds=seconds,
                    body=texts[0],
                    folder=folder / "feast-load",
                    more=[(url, t) for t in texts[1:]],
                )
                if result["error_share"] > 0:
                    raise SystemExit(f"the Feast model answered errors {name}: see {folder}")
                say(
                    f"[bench]   feast {name} c={c}: {result['ops_per_s']:,.0f} req/s, p50 {result['p50_ms']:.2f} ms, "
                    f"p99 {result['p99_ms']:.2f} ms"
                )
                runs[name][c] = result
    return {"model": spec.model, "features_looked_up": len(spec.feast_refs()), "runs": runs}


def report(result: dict[str, Any], concurrency: list[int]) -> dict[str, Any]:
    """The table: inline and by key, and what the lookup adds."""
    rows = []
    for c in concurrency:
        inline, keyed = result["runs"]["inline"][c], result["runs"]["by_key"][c]
        rows.append([c, round(inline["p50_ms"], 2), round(inline["p99_ms"], 2), round(keyed["p50_ms"], 2),
                     round(keyed["p99_ms"], 2), round(keyed["p50_ms"] - inline["p50_ms"], 2),
                     round(keyed["p99_ms"] - inline["p99_ms"], 2)])  # fmt: skip
    return table(
        f"Feast: {result['features_looked_up']} features looked up per request (SQLite online store)",
        ["c", "inline p50 ms", "inline p99 ms", "by key p50 ms", "by key p99 ms", "added p50 ms", "added p99 ms"],
        rows,
    )
