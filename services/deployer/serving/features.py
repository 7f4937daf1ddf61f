"""Feast features at serving: a version trained on Feast features gets them from the online store
by entity key, for every row that does not carry them itself.

Lookups of concurrent requests for one version go to the store together, in one call (in a worker
thread: the store is I/O), like the model's own micro-batches.
"""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path
from typing import Any

from services.deployer.serving.metrics import Metrics
from shared.runtime import feast
from shared.runtime.served import Loaded

Found = tuple[dict[str, list[Any]], list[tuple[int, str, str]]]
INLINE_LOOKUP_SECONDS = 0.003


class Coalescer:
    """One version's online lookups: keys of concurrent requests, looked up in one call."""

    def __init__(self, lookup: feast.Lookup, metrics: Metrics, model: str) -> None:
        self.lookup = lookup
        self.metrics = metrics
        self.model = model
        self.waiting: collections.deque[tuple[list[Any], asyncio.Future[Found]]] = collections.deque()
        self.busy = False
        self.seconds = 0.0  # a lookup's usual time (moving average); 0: not known yet

    async def __call__(self, keys: list[Any]) -> Found:
        future: asyncio.Future[Found] = asyncio.get_running_loop().create_future()
        self.waiting.append((keys, future))
        if not self.busy:
            self.busy = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self.waiting:
                await asyncio.sleep(0)  # let the requests of this turn of the loop join
                batch = list(self.waiting)
                self.waiting.clear()
                keys = [key for wanted, _ in batch for key in wanted]
                unique = list(dict.fromkeys(keys))  # a key asked twice in one batch is read once
                began = time.perf_counter()
                try:
                    # A store that answers fast (a local SQLite file) is read inline, as cheap models
                    # are predicted inline; one that is slow, or new, in a worker thread.
                    if 0 < self.seconds < INLINE_LOOKUP_SECONDS:
                        found, lacking = self.lookup(unique)
                    else:
                        found, lacking = await asyncio.to_thread(self.lookup, unique)
                    columns, misses = _spread(keys, unique, found, lacking)
                except Exception as exc:
                    self.seconds = 0.0  # after a failure, the thread again
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                took = time.perf_counter() - began
                self.seconds = took if not self.seconds else 0.8 * self.seconds + 0.2 * took
                self.metrics.feature_lookup.labels(self.model).observe(took)
                self.metrics.feature_keys.labels(self.model).observe(len(unique))
                start = 0
                for wanted, future in batch:
                    end = start + len(wanted)
                    mine = {ref: values[start:end] for ref, values in columns.items()}
                    missed = [(row - start, ref, status) for row, ref, status in misses if start <= row < end]
                    if not future.done():
                        future.set_result((mine, missed))
                    start = end
        finally:
            self.busy = False


def _spread(
    keys: list[Any], unique: list[Any], columns: dict[str, list[Any]], misses: list[tuple[int, str, str]]
) -> Found:
    """The answers for `unique` keys, back in the order (and the repeats) of `keys`."""
    if len(unique) == len(keys):
        return columns, misses
    row_of = {key: row for row, key in enumerate(unique)}
    rows = [row_of[key] for key in keys]
    missed: dict[int, list[tuple[str, str]]] = {}
    for row, ref, status in misses:
        missed.setdefault(row, []).append((ref, status))
    spread = {ref: [values[row] for row in rows] for ref, values in columns.items()}
    return spread, [(i, ref, status) for i, row in enumerate(rows) for ref, status in missed.get(row, [])]


class FeatureLookups:
    """The Feast lookups of every served version that needs them."""

    def __init__(self, repo: Path, metrics: Metrics) -> None:
        self.repo = repo
        self.metrics = metrics
        self.versions: dict[tuple[str, int], Coalescer] = {}

    def _coalescer(self, loaded: Loaded) -> Coalescer:
        key = (loaded.model, loaded.version)
        found = self.versions.get(key)
        if found is None:
            lineage = loaded.features_from or {}
            lookup = feast.Lookup(self.repo, list(lineage["features"]), str(lineage["entity"]))
            found = self.versions[key] = Coalescer(lookup, self.metrics, loaded.model)
        return found

    async def enrich(self, loaded: Loaded, rows: list[Any], indices: list[int], where: str) -> list[str]:
        """Fill in the Feast features of the rows at `indices` that lack any, in place; returns the
        errors of rows that cannot be served (no entity key; an entity the store lacks, under the
        reject policy). Raises feast.FeatureStoreError when the online store cannot answer."""
        lineage = loaded.features_from
        assert lineage is not None
        refs, entity, policy = list(lineage["features"]), str(lineage["entity"]), str(lineage["on_missing"])
        errors: list[str] = []
        wanting: list[int] = []
        for index in indices:
            row = rows[index]
            if not isinstance(row, dict) or all(ref in row for ref in refs):
                continue  # fed inline (or not a record: check_rows says what is wrong)
            if row.get(entity) is None:
                errors.append(f"{where}[{index}]: no {entity!r}, the entity key its Feast features are looked up by")
                continue
            wanting.append(index)
        if not wanting:
            return errors
        try:
            columns, misses = await self._coalescer(loaded)([rows[i][entity] for i in wanting])
        except feast.FeatureStoreError:
            raise
        except Exception as exc:  # the store failed in a way Lookup did not name
            raise feast.FeatureStoreError(f"the Feast online store cannot answer: {exc}") from exc
        missed: dict[int, dict[str, str]] = {}
        for row, ref, status in misses:
            missed.setdefault(row, {})[ref] = status
        for k, index in enumerate(wanting):
            lacking = missed.get(k, {})
            if lacking:
                self.metrics.feature_misses.labels(loaded.model, policy).inc()
                if policy == "reject":
                    ref, status = next(iter(lacking.items()))
                    key = rows[index][entity]
                    errors.append(
                        f"{where}[{index}]: {entity}={key!r} has no {ref} in the Feast online store ({status})"
                    )
                    continue
            # Under the impute policy a missing (or expired) value is null, imputed as in training.
            found = {ref: None if ref in lacking else columns[ref][k] for ref in refs if ref not in rows[index]}
            rows[index] = {**rows[index], **found}
        return errors
