from __future__ import annotations

import re
from pathlib import Path

from shared.runtime.settings import markdown_table

README = (Path(__file__).resolve().parents[3] / "README.md").read_text()


def test_readme_configuration_table_matches_the_settings_class() -> None:
    found = re.search(r"<!-- config:start -->\n(.*?)\n<!-- config:end -->", README, re.S)
    assert found, "README.md lacks the configuration table markers"
    assert found.group(1).strip() == markdown_table(), "regenerate it with `modelbus config`"


def test_readme_gives_the_two_setup_commands() -> None:
    assert "make demo" in README
    assert "make test" in README


def test_readme_acl_table_matches_the_contract() -> None:
    from shared.contract.access import markdown_table as acl_table

    found = re.search(r"<!-- acl:start -->\n(.*?)\n<!-- acl:end -->", README, re.S)
    assert found, "README.md lacks the ACL table markers"
    assert found.group(1).strip() == acl_table(), "regenerate it from shared.contract.access.markdown_table()"
