"""The layering contracts (import-linter, run in CI) cover every package the project installs."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

PYPROJECT = tomllib.loads((Path(__file__).parents[3] / "pyproject.toml").read_text())
ALLOWED_IN_CONTRACT = {"pydantic", "pydantic_core", "annotated_types", "typing_extensions"}


def _contract(name: str) -> dict[str, object]:
    contracts = PYPROJECT["tool"]["importlinter"]["contracts"]
    return next(c for c in contracts if c["name"].startswith(name))


def _top_level_modules(distribution: str) -> set[str]:
    """The importable top-level modules a distribution installs."""
    by_module = importlib.metadata.packages_distributions()
    wanted = distribution.lower().replace("_", "-")
    return {
        module
        for module, dists in by_module.items()
        if any(d.lower().replace("_", "-") == wanted for d in dists) and not module.startswith("_")
    }


def test_the_contract_layer_is_forbidden_every_runtime_dependency_but_pydantic() -> None:
    forbidden = set(_contract("contract imports only")["forbidden_modules"])  # type: ignore[arg-type]
    missing = {}
    project = PYPROJECT["project"]
    for requirement in project["dependencies"] + project["optional-dependencies"]["platform"]:
        distribution = re.split(r"[\[<>=!~ ]", requirement, maxsplit=1)[0]
        modules = _top_level_modules(distribution) - ALLOWED_IN_CONTRACT
        uncovered = {m for m in modules if m not in forbidden}
        if uncovered and distribution != "pydantic":
            missing[distribution] = sorted(uncovered)
    assert missing == {}, f"add these to the contract's forbidden_modules: {missing}"


def test_the_client_is_forbidden_every_platform_dependency_so_it_installs_alone() -> None:
    forbidden = set(_contract("the client imports only")["forbidden_modules"])  # type: ignore[arg-type]
    contract = set(_contract("contract imports only")["forbidden_modules"])  # type: ignore[arg-type]
    assert contract - {"httpx"} <= forbidden
    platform = PYPROJECT["project"]["optional-dependencies"]["platform"]
    assert not {re.split(r"[\[<>=!~ ]", r, maxsplit=1)[0] for r in PYPROJECT["project"]["dependencies"]} & {
        re.split(r"[\[<>=!~ ]", r, maxsplit=1)[0] for r in platform
    }
