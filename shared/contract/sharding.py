"""Which serving shard answers a model: a stable hash of its name, the same in every process and
client (`MODELBUS_SERVING_SHARD=i/n`)."""

from __future__ import annotations

import hashlib


def shard_of(model: str, count: int) -> int:
    """The shard (0..count-1) that serves a model among `count`."""
    digest = hashlib.blake2b(model.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def parse_shard(text: str) -> tuple[int, int] | None:
    """`i/n` as (i, n); empty as None (every model). Raises ValueError naming what is wrong."""
    if not text.strip():
        return None
    index, sep, count = text.strip().partition("/")
    if not sep or not index.isdigit() or not count.isdigit() or int(count) < 1 or int(index) >= int(count):
        raise ValueError(f"a shard is i/n with 0 <= i < n, e.g. 0/3; got {text!r}")
    return int(index), int(count)
