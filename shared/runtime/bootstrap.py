"""The one composition step shared by a process and its in-memory twin: a service's HANDLERS table
with its dependencies bound (cosmicpython's bootstrap). A handler names what it needs as
keyword-only parameters (`*, judge: Judge`); `bind` hands those in, so the same table runs on the
real bus and on `shared.runtime.memory.InMemoryBus`."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from shared.contract.events import Event
from shared.runtime.consume import Handler

HandlerTable = Mapping[type[Event], Sequence[Callable[..., Any]]]


def bind(handlers: HandlerTable, **dependencies: Any) -> dict[type[Event], list[Handler]]:
    """The table with each handler's keyword-only dependencies given; a missing one is an error now,
    not at the first event."""
    bound: dict[type[Event], list[Handler]] = {}
    for cls, functions in handlers.items():
        for function in functions:
            wanted = [
                name
                for name, parameter in inspect.signature(function).parameters.items()
                if parameter.kind is inspect.Parameter.KEYWORD_ONLY and parameter.default is inspect.Parameter.empty
            ]
            missing = [name for name in wanted if name not in dependencies]
            if missing:
                raise TypeError(f"{function.__qualname__} needs {', '.join(missing)}, which the bootstrap lacks")
            given = {name: dependencies[name] for name in wanted}
            bound.setdefault(cls, []).append(functools.partial(function, **given) if given else function)
    return bound
