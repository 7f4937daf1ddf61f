"""The README is a front door and the docs site is generated where it can be: the reference pages
and the generated tables inside written pages match the code they come from."""

from __future__ import annotations

from pathlib import Path

from shared.ops import docs

ROOT = Path(__file__).resolve().parents[3]
README = (ROOT / "README.md").read_text()


def test_readme_fits_on_a_few_screens_and_gives_the_two_setup_commands() -> None:
    assert len(README.splitlines()) <= 200
    assert "make demo" in README and "make test" in README


def test_every_generated_page_and_table_matches_the_code() -> None:
    stale = [str(p.relative_to(ROOT)) for p in docs.stale(ROOT)]
    assert not stale, f"out of date (run `modelbus docs generate`): {stale}"


def test_a_generated_region_is_refilled_from_the_code_and_an_unknown_one_is_an_error() -> None:
    page = "intro\n<!-- generated:acl -->\nstale table\n<!-- /generated:acl -->\nafter\n"
    filled = docs.fill(page, {"acl": "| fresh |"})
    assert filled == "intro\n<!-- generated:acl -->\n| fresh |\n<!-- /generated:acl -->\nafter\n"
    try:
        docs.fill(page.replace("acl", "nothing"), {"acl": "x"})
    except KeyError as exc:
        assert "nothing" in str(exc)
    else:
        raise AssertionError("an unknown region was left as it was")


def test_the_architecture_table_names_what_each_service_handles() -> None:
    from services.monitor.app import HANDLERS

    page = (ROOT / "docs" / "architecture.md").read_text()
    row = next(line for line in page.splitlines() if line.startswith("| monitor |"))
    assert all(cls.event_type in row for cls in HANDLERS)


def test_the_configuration_reference_names_every_variable_the_client_reads() -> None:
    page = (ROOT / "docs" / "reference" / "configuration.md").read_text()
    for variable in (
        "MODELBUS_SERVING_URL",
        "MODELBUS_SERVING_TOKEN",
        "MODELBUS_API_TOKEN",
        "MODELBUS_KAFKA_BOOTSTRAP",
    ):
        assert f"`{variable}`" in page


def test_the_architecture_names_every_room_of_every_service() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text()
    rooms = {p.name for p in (ROOT / "services").rglob("*.py") if p.name != "__init__.py"}
    assert not {r for r in rooms if f"`{r}`" not in page}, "docs/architecture.md leaves rooms out"


def test_a_published_benchmark_is_a_dated_section_naming_its_machine_and_command(tmp_path: Path) -> None:
    from shared.ops import benchmarks

    table = {"title": "resolve", "columns": ["measure", "modelbus"], "rows": [["c=1, ops/s", 3485.04]]}
    found = benchmarks.document("registry", "Registry", "python -m bench.registry --versions 3000", [table], {})
    (tmp_path / "registry.json").write_text(__import__("json").dumps(found))
    (tmp_path / "raw.json").write_text('{"older": "no tables"}')
    page = benchmarks.results_page(tmp_path)
    assert "## Registry" in page and "`python -m bench.registry --versions 3000`" in page
    assert found["date"][:10] in page and f"{found['machine']['cores']} cores" in page
    assert "| c=1, ops/s | 3,485 |" in page and "older" not in page


def test_a_benchmark_table_with_a_short_row_is_refused() -> None:
    from shared.ops import benchmarks

    table = {"title": "t", "columns": ["a", "b"], "rows": [["only a"]]}
    try:
        benchmarks.document("x", "X", "python -m bench.x", [table], {})
    except ValueError as exc:
        assert "does not have 2 cells" in str(exc)
    else:
        raise AssertionError("a short row was published")


def test_a_figure_keeps_the_decimals_its_benchmark_rounded_it_to() -> None:
    from shared.ops.benchmarks import shown

    assert [shown(v) for v in (0.7915, 5.6, 14.12, 2129.0, 0.0043, 3, "1.5x")] == [
        "0.7915", "5.60", "14.12", "2,129", "0.0043", "3", "1.5x",
    ]  # fmt: skip


def test_text_in_a_benchmark_table_is_never_read_as_a_link_or_a_tag(tmp_path: Path) -> None:
    from shared.ops import benchmarks

    row = ["hostile name", "model: [a-z]{0,3}(x) <script>alert(1)</script> a|b"]
    table = {"title": "t", "columns": ["case", "observed"], "rows": [row], "note": "see [here](x.md)"}
    found = benchmarks.document("x", "X", "python -m bench.x", [table], {})
    (tmp_path / "x.json").write_text(__import__("json").dumps(found))
    page = benchmarks.results_page(tmp_path)
    assert r"model: \[a-z\]{0,3}(x) &lt;script\>alert(1)&lt;/script\> a\|b" in page
    assert r"see \[here\](x.md)" in page
