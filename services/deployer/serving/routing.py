"""What is live: each model's routing table (its rollout, routing rules and loaded versions), kept
by the Host from the deployer's own tables: a RolloutChanged makes it read the model's rollout
again (loading new versions first, then swapping the table in one assignment), and the tables are
re-read as a safety net. What an event claims is never routed by itself.

The versions a rollout routes to are pinned: loaded before their routing goes live and never
evicted; they are the only ones served, by any route (a V2 request naming a version included).
A version leaving its rollout stays resident, least recently used first out, while everything
resident fits `MODELBUS_SERVING_MEMORY_BYTES`, in case the deployer routes to it again. A process
may serve a shard of the models: `MODELBUS_SERVING_SHARD=i/n` keeps the models whose stable hash
(`shared.contract.sharding`) falls in shard i.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.deployer import domain, store
from services.deployer.serving.batcher import Batcher
from services.deployer.serving.metrics import Metrics
from shared.contract.events import ArtifactRef, RolloutChanged
from shared.contract.sharding import parse_shard, shard_of
from shared.runtime.artifacts import ArtifactError, ArtifactStore
from shared.runtime.modelfile import UntrustedArtifact
from shared.runtime.served import Loaded, load
from shared.runtime.settings import Settings

log = logging.getLogger("modelbus.serving")


@dataclass(frozen=True)
class Engine:
    """A loaded version and its batcher."""

    loaded: Loaded
    batcher: Batcher
    class_names: tuple[str, ...] = ()

    @cached_property
    def classes_json(self) -> str:
        """The class names as a JSON list, as V2's `predict_proba` parameters carry them."""
        return json.dumps(list(self.class_names))

    @cached_property
    def label_type(self) -> str | None:
        """The datatype of its predictions in the Open Inference Protocol's terms (None: unknown
        until the labels are seen, as for a classifier whose classes were not recorded)."""
        if self.loaded.task == "regression":
            return "FP64"
        return label_type(list(self.loaded.classes)) if self.loaded.classes else None


@dataclass(frozen=True)
class Live:
    """One model's routing table: its rollout, its routing rules and the engines it routes to."""

    model: str
    rollout: domain.Rollout
    sticky_key: str | None
    excluded: dict[str, frozenset[str]]
    engines: dict[int, Engine]
    policy_key: int | None = None

    @cached_property
    def fields(self) -> frozenset[str]:
        """The request fields routing reads: the sticky key and the segment fields."""
        return frozenset(self.excluded) | ({self.sticky_key} if self.sticky_key else frozenset())

    def route(self, row: Any, fallback_key: str) -> domain.Route:
        """The version that answers one row."""
        request = row if isinstance(row, dict) else {}
        return domain.route(
            self.rollout, request, sticky_key=self.sticky_key, excluded=self.excluded, fallback_key=fallback_key
        )


def label_type(values: list[Any]) -> str:
    """The Open Inference Protocol datatype that holds these labels."""
    if values and all(isinstance(v, bool) for v in values):
        return "BOOL"
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "INT64"
    if values and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return "FP64"
    return "BYTES"


def needed(rollout: domain.Rollout) -> set[int]:
    """Versions a rollout routes to (or mirrors to)."""
    if rollout.state == "promoted" or rollout.stable is None:
        return {rollout.candidate}
    if rollout.state in ("rolled-back", "superseded"):
        return {rollout.stable}
    return {rollout.candidate, rollout.stable}


class NotServed(LookupError):
    """A model or version this process does not serve; the message says why."""


class OverBudget(NotServed):
    """A version that would take the versions rollouts route to over serving's memory budget."""


class Host:
    """The models this process serves, refreshed from the deployer's tables."""

    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        artifacts: ArtifactStore,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.artifacts = artifacts
        self.metrics = metrics
        self.only = frozenset(m.strip() for m in settings.serving_models.split(",") if m.strip()) or None
        self.shard = parse_shard(settings.serving_shard)
        self.budget = settings.serving_memory_bytes
        self.live: dict[str, Live] = {}
        self.engines: dict[tuple[str, int], Engine] = {}
        self.unpinned: collections.OrderedDict[tuple[str, int], None] = collections.OrderedDict()
        self.loading: dict[tuple[str, int], asyncio.Future[Engine]] = {}
        self.problems: dict[str, str] = {}
        self.refreshed = False
        self.folder = Path(tempfile.mkdtemp(prefix="modelbus-serving-"))
        self._lock = asyncio.Lock()

    def serves(self, model: str) -> bool:
        """Whether this process serves a model (MODELBUS_SERVING_MODELS, MODELBUS_SERVING_SHARD)."""
        if self.only is not None and model not in self.only:
            return False
        return self.shard is None or shard_of(model, self.shard[1]) == self.shard[0]

    def why_not(self, model: str) -> str:
        """Why this process does not serve a model."""
        if self.only is not None and model not in self.only:
            return f"{model!r} is not among the models this process serves (MODELBUS_SERVING_MODELS)"
        assert self.shard is not None
        index, count = self.shard
        return f"{model!r} is served by shard {shard_of(model, count)}/{count}; this process is shard {index}/{count}"

    @property
    def resident_bytes(self) -> int:
        """Memory taken by every resident version."""
        return sum(e.loaded.memory_bytes for e in self.engines.values())

    async def engine(self, model: str, version: int) -> Engine:
        """A version by name: resident, or loaded now from the deployer's tables (and kept, unpinned,
        while the memory budget allows). Raises NotServed."""
        key = (model, version)
        found = self.engines.get(key)
        if found is not None:
            if key in self.unpinned:
                self.unpinned.move_to_end(key)
            return found
        if not self.serves(model):
            raise NotServed(self.why_not(model))
        live = self.live.get(model)
        routed = needed(live.rollout) if live is not None else set()
        if version not in routed:
            where = ", ".join(f"v{v}" for v in sorted(routed)) if routed else "no version"
            raise NotServed(f"{model}@{version} is not rolled out: the deployer routes {model} to {where}")
        pending = self.loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Engine] = asyncio.get_running_loop().create_future()
        self.loading[key] = future
        try:
            async with self.sessions() as session:
                known = await store.SqlStore(session).version_of(model, version)
            if known is None or not known.artifacts:
                raise NotServed(f"{model}@{version} is not a version the deployer knows")
            began = time.perf_counter()
            try:
                engine = await self._load(model, version, list(known.artifacts), {(model, v) for v in routed})
            except OverBudget:
                self.metrics.load_failures.labels(model).inc()
                raise
            except (ArtifactError, UntrustedArtifact, OSError, ValueError, RuntimeError) as exc:
                self.metrics.load_failures.labels(model).inc()
                raise NotServed(f"{model}@{version} cannot be loaded: {exc}") from exc
            self.metrics.cold_load.observe(time.perf_counter() - began)
            if key not in {(m, v) for m, live in self.live.items() for v in live.engines}:
                self.unpinned[key] = None
            self._evict()
            future.set_result(engine)
            return engine
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it
            raise
        finally:
            del self.loading[key]

    @property
    def ready(self) -> bool:
        """The rollouts were read. A version that fails to load leaves the process ready (and listed
        in `problems`, `degraded`): the model's previous routing keeps answering, or, when it has
        none, that model alone is refused; taking the process out of service would fail every model.
        """
        return self.refreshed

    async def refresh(self, model: str | None = None) -> None:
        """Re-read the rollouts (of one model, or all) and swap in what changed, loading first."""
        async with self._lock:
            only = frozenset({model}) if model else self.only
            if model and not self.serves(model):
                return
            async with self.sessions() as session:
                found = await store.SqlStore(session).live_models(only)
            loaded_any = False
            for item in found:
                if self.serves(item.model):
                    loaded_any |= await self._apply(item)
            # A model the deployer no longer rolls out is no longer served.
            asked = {model} if model else set(self.live)
            for gone in asked - {item.model for item in found}:
                if self.live.pop(gone, None) is not None:
                    log.warning("%s: the deployer holds no rollout of it any more; no longer served", gone)
            if model is None:
                self.refreshed = True
            self._drop_unused()
        if loaded_any:
            _settle_heap()

    async def apply(self, event: RolloutChanged) -> None:
        """A RolloutChanged says where to look, not what to serve: the model's routing is read
        again from the deployer's own tables (which the deployer committed before it published),
        so an event the deployer did not write routes nothing."""
        await self.refresh(event.model)

    async def _apply(self, item: store.LiveModel) -> bool:
        """Swap in the model's routing if it changed; True if a version had to be loaded for it."""
        current = self.live.get(item.model)
        if (
            current is not None
            and domain.same_split(current.rollout, item.rollout)
            and current.policy_key == _policy_key(item)
        ):
            return False
        engines: dict[int, Engine] = {}
        loaded = False
        routing = {(item.model, v) for v in needed(item.rollout)}
        for version in sorted(needed(item.rollout)):
            engine = self.engines.get((item.model, version))
            if engine is None:
                loaded = True
                try:
                    engine = await self._load(item.model, version, item.artifacts.get(version), routing)
                except OverBudget as exc:
                    self.metrics.load_failures.labels(item.model).inc()
                    self.problems[item.model] = str(exc)
                    log.error("%s; still serving what was live before", exc)
                    return loaded
                except (ArtifactError, UntrustedArtifact, OSError, ValueError, RuntimeError) as exc:
                    self.metrics.load_failures.labels(item.model).inc()
                    self.problems[item.model] = f"{item.model}@{version} cannot be loaded: {exc}"
                    log.error("%s; still serving what was live before", self.problems[item.model])
                    return loaded
            engines[version] = engine
        policy = item.spec.rollout if item.spec is not None else None
        live = Live(
            model=item.model,
            rollout=item.rollout,
            sticky_key=policy.sticky_key if policy else None,
            excluded={s.field: frozenset(map(str, s.values)) for s in policy.excluded_segments} if policy else {},
            engines=engines,
            policy_key=_policy_key(item),
        )
        if current is None:
            self.metrics.watch(item.model)
        self.live[item.model] = live  # the swap: one assignment
        self.problems.pop(item.model, None)
        split = ", ".join(f"v{s.version} {s.percent:g}% {s.role}" for s in domain.traffic(item.rollout))
        log.info("%s: %s (%s) now live: %s", item.model, item.rollout.rollout_id, item.rollout.state, split)
        return loaded

    def _pinned_bytes(self, model: str, routing: set[tuple[str, int]]) -> int:
        """Memory the versions rollouts route to would take once `model`'s routing became
        `routing` (the other models' routed versions, and those of `routing` already resident)."""
        pinned = {(m, v) for m, live in self.live.items() if m != model for v in live.engines} | routing
        return sum(self.engines[key].loaded.memory_bytes for key in pinned if key in self.engines)

    def _over_budget(self, model: str, version: int, size: int, routing: set[tuple[str, int]]) -> OverBudget | None:
        taken = self._pinned_bytes(model, routing - {(model, version)})
        if taken + size <= self.budget:
            return None
        return OverBudget(
            f"{model}@{version} needs {size / 2**20:.1f} MiB; the versions rollouts route to already take "
            f"{taken / 2**20:.1f} MiB of serving's memory budget of {self.budget / 2**20:.1f} MiB "
            "(MODELBUS_SERVING_MEMORY_BYTES): raise the budget, or serve fewer models per process "
            "(MODELBUS_SERVING_MODELS, MODELBUS_SERVING_SHARD)"
        )

    async def _load(
        self, model: str, version: int, refs: list[ArtifactRef] | None, routing: set[tuple[str, int]]
    ) -> Engine:
        """Load a version for a model whose routing will be `routing`; OverBudget (nothing kept)
        when its stored size alone, or what it takes loaded, would go over the memory budget."""
        if not refs:
            raise ArtifactError(f"the deployer knows no artifacts of {model}@{version}")
        stored = sum(ref.size_bytes for ref in refs if ref.name in ("model.skops", "model.onnx"))
        refused = self._over_budget(model, version, stored, routing)
        if refused is not None:  # before any download
            raise refused
        folder = self.folder / model / str(version)
        began = time.perf_counter()
        loaded = await asyncio.to_thread(load, self.artifacts, model, version, refs, folder)
        # What the process grew by, never less than the model's stored size (which a loaded model
        # holds at least): the growth of a process's RSS can hide in memory it had freed before.
        loaded.memory_bytes = max(loaded.memory_bytes, stored)
        refused = self._over_budget(model, version, loaded.memory_bytes, routing)
        if refused is not None:
            shutil.rmtree(folder, ignore_errors=True)
            raise refused
        self.metrics.loaded.labels(model, str(version), loaded.runtime).set(loaded.memory_bytes)
        self.metrics.loads.labels(model).inc()
        log.info(
            "%s@%d loaded (%s, %.1f MiB) in %.2f s",
            model,
            version,
            loaded.runtime,
            loaded.memory_bytes / 2**20,
            time.perf_counter() - began,
        )
        batcher = Batcher(loaded, max_rows=self.settings.serving_batch_rows, observe=self.metrics.batch_rows)
        engine = Engine(loaded, batcher, tuple(str(c) for c in loaded.classes or ()))
        self.engines[(model, version)] = engine
        return engine

    def _drop_unused(self) -> None:
        """Versions no rollout routes to any more stay resident, unpinned, while the budget allows."""
        used = {(m, v) for m, live in self.live.items() for v in live.engines}
        for key in used:
            self.unpinned.pop(key, None)
        for key in self.engines:
            if key not in used and key not in self.unpinned:
                self.unpinned[key] = None
        self._evict()

    def _evict(self) -> None:
        """Evict unpinned versions, least recently used first, until what is resident fits the budget."""
        resident = self.resident_bytes
        while resident > self.budget and self.unpinned:
            key, _ = self.unpinned.popitem(last=False)
            engine = self.engines.pop(key)  # requests still holding it finish on it
            resident -= engine.loaded.memory_bytes
            shutil.rmtree(self.folder / key[0] / str(key[1]), ignore_errors=True)
            self.metrics.evictions.labels(key[0]).inc()
            with contextlib.suppress(KeyError):
                self.metrics.loaded.remove(key[0], str(key[1]), engine.loaded.runtime)
            log.info(
                "%s@%d evicted (%.1f MiB); %.1f MiB resident",
                key[0],
                key[1],
                engine.loaded.memory_bytes / 2**20,
                resident / 2**20,
            )
        self.metrics.resident.set(resident)
        if resident > self.budget:
            log.warning(
                "the versions rollouts route to take %.1f MiB, over MODELBUS_SERVING_MEMORY_BYTES (%.1f MiB)",
                resident / 2**20,
                self.budget / 2**20,
            )

    def close(self) -> None:
        """Remove downloaded artifacts."""
        shutil.rmtree(self.folder, ignore_errors=True)


GC_THRESHOLDS = (20_000, 10, 10)


def _settle_heap() -> None:
    """What is loaded now lives as long as the process: keep it out of the collector's full passes,
    which otherwise stall requests for tens of milliseconds. And collect the young generation less
    often: a request's objects die young by reference count, so at the default threshold (700) the
    collector mostly walks requests still in flight (measured at concurrency 32: 0.25 ms a pass,
    every 8 V2 requests; 5 % of the process's time)."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _policy_key(item: store.LiveModel) -> int | None:
    return hash(item.spec.rollout.model_dump_json()) if item.spec is not None else None
