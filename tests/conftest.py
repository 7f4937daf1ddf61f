"""Every test process (and what it starts) uses the local stack as its admin principal: the tests
create and drop topics and ACLs of their own. Platforms the tests start give each service its
own principal (shared.ops.platform)."""

from __future__ import annotations

from shared.ops import credentials

credentials.adopt("admin")
