"""Every test process (and what it starts) uses the local stack as its admin principal: the tests
create and drop topics and ACLs of their own. Platforms the tests start give each service its
own principal (shared.ops.platform). Generated cases (Hypothesis) are the same on every run: each
test's examples come from a seed fixed by the test itself (`derandomize`), within the budget its
settings give; HYPOTHESIS_PROFILE=explore draws new ones."""

from __future__ import annotations

import os

from hypothesis import settings

from shared.ops import credentials

credentials.adopt("admin")

settings.register_profile("fixed", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fixed"))
