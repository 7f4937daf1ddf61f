"""References to model versions as operators write them: NAME, NAME@VERSION, NAME@ALIAS."""

from __future__ import annotations

import re
from dataclasses import dataclass

from shared.contract.events import MAX_VERSION

ALIAS = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


@dataclass(frozen=True)
class Ref:
    """NAME, NAME@VERSION or NAME@ALIAS; NAME alone (or NAME@latest) is the highest version."""

    model: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        suffix = self.version if self.version is not None else self.alias
        return f"{self.model}@{suffix}" if suffix is not None else self.model


def parse_ref(text: str) -> Ref:
    """Parse NAME[@VERSION|@ALIAS]; raises ValueError naming the problem."""
    model, sep, rest = text.partition("@")
    if not model:
        raise ValueError(f"{text!r}: a reference is NAME, NAME@VERSION or NAME@ALIAS")
    if not sep:
        return Ref(model)
    if rest.isascii() and rest.isdigit() and 1 <= int(rest) <= MAX_VERSION:
        return Ref(model, version=int(rest))
    if rest.isascii() and rest.isdigit():
        raise ValueError(f"{text!r}: a version number runs from 1 to {MAX_VERSION}")
    if rest == "latest":
        return Ref(model)
    if ALIAS.match(rest):
        return Ref(model, alias=rest)
    raise ValueError(f"{text!r}: after '@' comes a version number (1, 2, …) or an alias")
