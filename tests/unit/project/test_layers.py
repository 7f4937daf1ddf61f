"""The layering contracts (import-linter, run in CI) cover every package the project installs."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[3]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
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


def _rules_applied(source: str) -> list[str]:
    """Calls of a `domain` function and reads of a `domain` constant in a module (its types are fine)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "domain":
            if node.attr[0].islower() or node.attr.isupper():
                found.append((node.lineno, f"{node.lineno}: domain.{node.attr}"))
    return [line for _, line in sorted(found)]


def test_no_store_or_twin_applies_a_domain_rule() -> None:
    services = ROOT / "services"
    stores = sorted(services.glob("*/store.py")) + sorted(services.glob("*/memory.py"))
    assert len(stores) >= 12, [str(p) for p in stores]
    applied = [f"{path.relative_to(ROOT)}:{found}" for path in stores for found in _rules_applied(path.read_text())]
    assert applied == [], "stores keep; the handlers apply domain rules"


def test_the_rule_finder_sees_a_call_and_a_constant_but_not_a_type() -> None:
    source = "def f(a):\n    domain.Kept(1)\n    domain.due_after_change(a)\n    return domain.UNTIL_CLEARED\n"
    assert _rules_applied(source) == ["3: domain.due_after_change", "4: domain.UNTIL_CLEARED"]
