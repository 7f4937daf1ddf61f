"""Features from a Feast feature store (`pip install modelbus[feast]`): the spec's Feast references
checked against the registry, point-in-time training frames, online lookups for serving, and the
digests that go into a version's lineage.

A spec's `features` name Feast features as `feature_view:feature`; the frame and the model see them
under that same name. Feast itself is imported only here, and only when a spec uses it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from shared.contract.spec import ModelSpec
from shared.contract.specparse import FeatureCheck
from shared.runtime.settings import Settings

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger(__name__)

NOT_INSTALLED = "this spec names Feast features, and Feast is not installed: pip install 'modelbus[feast]'"
ROW = "__modelbus_row__"  # the entity rows' own order, through Feast's join and back
# Feast value types, as the spec's feature types that may declare them.
_KINDS = {
    "Int32": "numeric",
    "Int64": "numeric",
    "Float32": "numeric",
    "Float64": "numeric",
    "String": "categorical",
    "Bool": "boolean",
    "UnixTimestamp": "datetime",
}


class FeatureStoreError(RuntimeError):
    """The feature store cannot answer (not installed, no repo, registry or online store unreachable)."""


class FeatureStoreMissing(FeatureStoreError):
    """This deployment has no Feast: not installed, or no feature repo where MODELBUS_FEAST_REPO points."""


PASSWORD_VARIABLE = "MODELBUS_FEAST_POSTGRES_PASSWORD"  # noqa: S105 (a variable's name)


def configure(settings: Settings) -> None:
    """Hand the Feast stores' password (a secret file, like the others) to feature_store.yaml, which
    names it as ${MODELBUS_FEAST_POSTGRES_PASSWORD} (Feast expands variables there)."""
    if settings.feast_postgres_password is not None:
        os.environ[PASSWORD_VARIABLE] = settings.feast_postgres_password.get_secret_value()


def _feast() -> Any:
    try:
        import feast
    except ImportError:
        raise FeatureStoreMissing(NOT_INSTALLED) from None
    return feast


_stores: dict[Path, FeatureStore] = {}
_lock = threading.Lock()


def open_store(repo: Path) -> FeatureStore:
    """The FeatureStore of the repo at `repo` (its feature_store.yaml), opened once per process."""
    repo = repo.resolve()
    with _lock:
        found = _stores.get(repo)
        if found is None:
            feast = _feast()
            if not (repo / "feature_store.yaml").is_file():
                raise FeatureStoreMissing(
                    f"no Feast feature repo at {repo} (no feature_store.yaml; MODELBUS_FEAST_REPO): "
                    "see `modelbus feast apply`"
                )
            found = _stores[repo] = feast.FeatureStore(repo_path=str(repo))
        return found


def forget_store(repo: Path) -> None:
    """Drop the repo's FeatureStore: the next use opens it afresh (new connections to its stores)."""
    with _lock:
        _stores.pop(repo.resolve(), None)


def materialize(repo: Path, end: datetime) -> list[str]:
    """`materialize-incremental` up to `end`: each online view's rows since its last run into the
    online store (Feast keeps where each view got to); returns the views materialized."""
    store = open_store(repo)
    store.refresh_registry()  # type: ignore[no-untyped-call,unused-ignore]
    views = [view.name for view in store.list_feature_views() if view.online]
    if views:
        store.materialize_incremental(end_date=end, feature_views=views)
    return views


def catalog(store: FeatureStore) -> dict[str, dict[str, str]]:
    """The registry's feature views: view -> feature -> Feast type name (read fresh)."""
    store.refresh_registry()  # type: ignore[no-untyped-call,unused-ignore]
    return {view.name: {f.name: str(f.dtype) for f in view.features} for view in store.list_feature_views()}


def feature_check(repo: Path) -> FeatureCheck:
    """A spec check against the Feast registry at `repo`."""
    store = open_store(repo)  # FeatureStoreMissing without Feast or its repo
    try:
        views = catalog(store)
    except Exception as exc:  # the registry file or database cannot be read
        raise FeatureStoreError(f"the Feast registry at {repo} cannot be read: {exc}") from exc

    def check(ref: str, declared: str) -> str | None:
        view, _, feature = ref.partition(":")
        if view not in views:
            known = ", ".join(sorted(views)) or "none"
            return f"unknown feature view {view!r} in the Feast registry (known: {known})"
        if feature not in views[view]:
            return f"feature view {view!r} has no feature {feature!r} (it has: {', '.join(sorted(views[view]))})"
        kind = _KINDS.get(views[view][feature])
        if kind is not None and kind != declared:
            return f"Feast types {ref} as {views[view][feature]}, a {kind} feature, not {declared}"
        return None

    return check


@dataclass(frozen=True)
class Lineage:
    """What a training frame's Feast features came from: for the manifest and ModelTrained."""

    views: list[str]
    registry_sha256: str
    sources: dict[str, str]  # view -> sha256 of its offline source (files' bytes, else its definition)


def lineage(store: FeatureStore, refs: Sequence[str]) -> Lineage:
    """The views `refs` use, the registry's digest and each view's offline source digest."""
    views = sorted({ref.split(":", 1)[0] for ref in refs})
    registry = store.registry.proto().SerializeToString(deterministic=True)
    sources = {}
    for name in views:
        source = store.get_feature_view(name).batch_source
        path = getattr(source, "path", None)
        files = _files(store, path) if path else []
        digest = hashlib.sha256()
        if files:  # one file: its own sha256 (as sha256sum prints it); a folder: names and bytes
            for file in files:
                if len(files) > 1:
                    digest.update(str(file.relative_to(files[0].parent)).encode())
                with file.open("rb") as handle:
                    while block := handle.read(1 << 20):
                        digest.update(block)
        elif source is not None:  # a table or query: its definition is what can be named
            digest.update(source.to_proto().SerializeToString(deterministic=True))
        sources[name] = digest.hexdigest()
    return Lineage(views, hashlib.sha256(registry).hexdigest(), sources)


def _files(store: FeatureStore, path: str) -> list[Path]:
    found = Path(path)
    if not found.is_absolute():
        found = Path(store.repo_path) / found
    if found.is_dir():
        return sorted(p for p in found.rglob("*") if p.is_file())
    return [found] if found.is_file() else []


def historical(store: FeatureStore, frame: pd.DataFrame, spec: ModelSpec) -> pd.DataFrame:
    """The training frame with the spec's Feast features joined point-in-time: each row gets the
    values as of its own event timestamp (never later ones), in the rows' own order."""
    assert spec.feast is not None
    entity, at = spec.feast.entity, spec.feast.event_timestamp
    for column in (entity, at):
        if column not in frame.columns:
            raise ValueError(f"the dataset has no {column!r} column, which the spec's feast section names")
    refs = spec.feast_refs()
    rows = pd.DataFrame(
        {entity: frame[entity].to_numpy(), at: pd.to_datetime(frame[at], utc=True), ROW: range(len(frame))}
    )
    found = store.get_historical_features(entity_df=rows, features=refs, full_feature_names=True).to_df()
    if found[ROW].duplicated().any():
        raise ValueError("Feast answered some entity rows twice (duplicate snapshots at one timestamp?)")
    # Every entity row, in its own order: Feast's file offline store (0.67) leaves out the rows of a
    # known entity that have no snapshot within the view's ttl before them, where null is the answer.
    joined = rows[[ROW]].merge(found, on=ROW, how="left")
    out = frame.drop(columns=[r for r in refs if r in frame.columns]).reset_index(drop=True)
    for ref in refs:
        out[ref] = joined[ref.replace(":", "__", 1)].to_numpy()
    return out


@dataclass
class Lookup:
    """Online lookups of a version's Feast features by entity key (serving). After a failure the
    store is opened afresh, so a store that comes back is used again."""

    repo: Path
    refs: list[str]
    entity: str

    def __call__(self, keys: Sequence[Any]) -> tuple[dict[str, list[Any]], list[tuple[int, str, str]]]:
        """The features of each key, as columns named by reference, and the misses as (row, feature,
        status) — a key the store lacks, or whose values are past the view's ttl. Raises
        FeatureStoreError when the online store cannot answer."""
        began = time.perf_counter()
        store = open_store(self.repo)  # FeatureStoreMissing without Feast or its repo
        from feast.protos.feast.serving.ServingService_pb2 import FieldStatus

        try:
            response = store.get_online_features(
                features=self.refs, entity_rows=[{self.entity: key} for key in keys], full_feature_names=True
            )
        except Exception as exc:
            forget_store(self.repo)
            raise FeatureStoreError(f"the Feast online store cannot answer: {type(exc).__name__}: {exc}") from exc
        proto = response.proto
        position = {name: j for j, name in enumerate(proto.metadata.feature_names.val)}
        # A key the store lacks, or holds past the view's ttl (not a null value: that is data).
        lacking = {FieldStatus.NOT_FOUND: "NOT_FOUND", FieldStatus.OUTSIDE_MAX_AGE: "OUTSIDE_MAX_AGE"}
        misses = []
        columns = {}
        values = _scalars(proto, position) or response.to_dict()
        for ref in self.refs:
            name = ref.replace(":", "__", 1)
            columns[ref] = values[name]
            statuses = list(proto.results[position[name]].statuses)
            if lacking.keys() & set(statuses):
                misses += [(row, ref, lacking[status]) for row, status in enumerate(statuses) if status in lacking]
        log.debug("feast lookup of %d keys in %.2f ms", len(keys), 1000 * (time.perf_counter() - began))
        return columns, misses


_SCALAR_KINDS = frozenset({"int32_val", "int64_val", "float_val", "double_val", "string_val", "bool_val"})


def _scalars(proto: Any, position: dict[str, int]) -> dict[str, list[Any]] | None:
    """The response's values read straight from its protobuf when every one is a plain scalar or
    null (the usual case, and 4 times faster than OnlineResponse.to_dict); None otherwise."""
    found: dict[str, list[Any]] = {}
    for name, j in position.items():
        column: list[Any] = []
        for value in proto.results[j].values:
            kind = value.WhichOneof("val")
            if kind is None or kind == "null_val":
                column.append(None)
            elif kind in _SCALAR_KINDS:
                column.append(getattr(value, kind))
            else:
                return None
        found[name] = column
    return found
