"""Events built from the examples in schemas/examples/, with fields changed as a test needs."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, TypeVar

from shared.contract.events import Event
from shared.contract.schemas import kebab

ROOT = Path(__file__).resolve().parents[2]
E = TypeVar("E", bound=Event)


@functools.cache
def _document(event_type: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((ROOT / f"schemas/examples/{kebab(event_type)}.json").read_text())
    return loaded


def example(cls: type[E], **changes: Any) -> E:
    """The example of `cls` with `changes`, validated as a consumer would."""
    document = {**_document(cls.event_type), **changes}
    document.pop("correlation_id", None)
    document.pop("causation_id", None)
    return cls.model_validate(document)
