"""High availability and network faults, with figures: the platform on a three-broker Kafka
cluster and behind toxiproxy.

    .venv/bin/python -m bench.faults [--profile full|short] [--skip-cluster] [--skip-network] [--out PATH]

Needs the local stack (`modelbus stack up`: PostgreSQL and the S3 server; its own Kafka is left
alone), toxiproxy (built by scripts/bootstrap.sh) and the platform's ports free. Runs:
  1. a three-node KRaft cluster on ports 19092-19097 (topics replicated 3 times,
     min.insync.replicas=2) under seven processes: concurrent lifecycles and prediction load
     while the leader of the busiest partitions is killed -9 and restarted, again and again;
     then two brokers of three stopped at once;
  2. the platform behind toxiproxy (Kafka, PostgreSQL and S3 each through a proxy): latency of
     200 ms ± 50, 64 KB/s to S3, a 30 s PostgreSQL blackhole for one service, Kafka connections
     reset every 5 s.
Prints tables and writes JSON (default bench/results/faults.json).
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
from shared.runtime.settings import Settings
from tests.support import cluster, toxics

ROOT = Path(__file__).resolve().parents[1]


async def on_cluster(settings: Settings, profile: str, folder: Path) -> dict[str, Any]:
    async with cluster.three_brokers(folder / "cluster", say) as brokers:
        h = cluster.cluster_harness(settings, brokers, folder / "cluster-platform", say)
        await h.start()
        try:
            leaders = await cluster.kill_leaders(h, brokers, cluster.PROFILES[profile])
            quorum = await cluster.lose_two(h, brokers)
        finally:
            await h.stop()
    return {"leader_kills": dataclasses.asdict(leaders), "two_brokers_down": dataclasses.asdict(quorum)}


async def behind_toxiproxy(settings: Settings, profile: str, folder: Path) -> list[dict[str, Any]]:
    chosen = toxics.PROFILES[profile]
    reports = []
    async with toxics.behind_toxiproxy(settings, folder / "toxiproxy", say) as (h, proxy):
        for scenario in (toxics.latency, toxics.slow_uploads, toxics.database_blackhole, toxics.kafka_resets):
            reports.append(dataclasses.asdict(await scenario(h, proxy, chosen)))
    return reports


def show(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's tables: each leader kill, the cluster's figures, and each network fault."""
    tables = []
    if "cluster" in result:
        leaders = result["cluster"]["leader_kills"]
        tables.append(
            table(
                "Leader kills on a three-broker cluster",
                ["kill", "node", "partitions it led", "writes resumed after (s)", "back in sync after restart (s)"],
                [[number, k["node"], k["partitions_led"], _seconds(k["resumed_seconds"]),
                  _seconds(k["back_in_sync_seconds"], 1)] for number, k in enumerate(leaders["kills"], 1)],
            )
        )  # fmt: skip
        resumed = sorted(k["resumed_seconds"] for k in leaders["kills"] if k["resumed_seconds"] is not None)
        quorum = result["cluster"]["two_brokers_down"]
        rows: list[list[Any]] = [
            ["lifecycles completed", f"{leaders['completed']}/{leaders['lifecycles']} {leaders['outcomes']}"],
            ["leader kills (kill -9, restarted)", len(leaders["kills"])],
            ["writes resumed after a kill, median / max (s)",
             f"{resumed[len(resumed) // 2]:.2f} / {max(resumed):.2f}" if resumed else "-"],
            ["events produced but not handled", sum(leaders["missing"].values())],
            ["effects done twice", sum(leaders["duplicates"].values())],
            ["acknowledged writes (probe) / lost", f"{leaders['probe_acked']} / {leaders['probe_lost']}"],
            ["2 of 3 brokers down: writes acknowledged", quorum["acked_during"]],
            ["2 of 3 brokers down: writes refused", json.dumps(quorum["refused_during"])],
            ["2 of 3 brokers down: acknowledged and lost", quorum["acked_lost"]],
            ["writes resumed after one broker came back (s)", _seconds(quorum["resumed_seconds"])],
            ["lifecycle begun in the outage", str(quorum["lifecycle_after"])],
        ]  # fmt: skip
        tables.append(table("The cluster under kills and a lost quorum", ["measure", "result"], rows))
    if "network" in result:
        tables.append(
            table(
                "The platform behind toxiproxy",
                ["fault", "lasted (s)", "lifecycles ended", "not handled", "twice", "processes alive", "recovered (s)"],
                [[r["fault"], r["lasted_seconds"], f"{r['completed']}/{r['lifecycles']}", sum(r["missing"].values()),
                  sum(r["duplicates"].values()), "yes" if r["processes_alive"] else "NO",
                  _seconds(r["recovered_seconds"])] for r in result["network"]],
            )
        )  # fmt: skip
    return tables


def _seconds(value: float | None, places: int = 2) -> str:
    return "-" if value is None else f"{value:.{places}f}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=["short", "full"], default="full")
    parser.add_argument("--skip-cluster", action="store_true", help="only the network faults")
    parser.add_argument("--skip-network", action="store_true", help="only the three-broker scenario")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "faults.json")
    args = parser.parse_args()
    settings = Settings()
    result: dict[str, Any] = {"profile": args.profile}
    with tempfile.TemporaryDirectory(prefix="modelbus-faults-") as name:
        folder = Path(name)
        if not args.skip_cluster:
            result["cluster"] = await on_cluster(settings, args.profile, folder)
        if not args.skip_network:
            result["network"] = await behind_toxiproxy(settings, args.profile, folder)
    tables = show(result)
    publish(args.out, "faults", f"Faults: a three-broker cluster and network faults ({args.profile} profile)", tables,
            json.loads(json.dumps(result, default=str)))  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
