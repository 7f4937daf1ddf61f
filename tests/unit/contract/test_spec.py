"""Model specs: the example is valid, and a bad spec is refused with every error at its YAML path."""

from __future__ import annotations

import importlib
import json
import typing
from pathlib import Path

import jsonschema
import pytest
import yaml
from sklearn.base import is_classifier

from shared.contract.events import ModelSpecApplied
from shared.contract.spec import ESTIMATORS, EstimatorPath, ModelSpec, estimator_params
from shared.contract.specparse import SpecError
from shared.runtime.specfile import load_spec

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = (ROOT / "schemas/examples/model-spec.yaml").read_text()


def refused(text: str) -> dict[str, tuple[int | None, str]]:
    with pytest.raises(SpecError) as caught:
        load_spec(text)
    return {issue.path: (issue.line, issue.message) for issue in caught.value.issues}


def test_the_example_spec_is_valid_and_matches_the_published_json_schema() -> None:
    spec = load_spec(EXAMPLE)
    assert spec.model == "churn" and [c.estimator.rsplit(".", 1)[1] for c in spec.candidates] == [
        "LogisticRegression",
        "RandomForestClassifier",
    ]
    schema = json.loads((ROOT / "schemas/model-spec.json").read_text())
    jsonschema.validate(yaml.safe_load(EXAMPLE), schema)


def test_every_field_error_is_reported_at_once_with_its_yaml_path_and_line() -> None:
    issues = refused(
        "model: Churn!\n"  # line 1
        "dataset: churn\n"
        "task: classification\n"
        "target: churned\n"
        "features:\n"
        "  - {name: tenure, type: numeric}\n"
        "  - {name: plan, type: numric}\n"  # line 7
        "candidates:\n"
        "  - estimator: os.system\n"  # line 9
        '    params: {cmd: "rm -rf /"}\n'  # line 10
        "selection_metric: accuracy\n"
        "rollout: {steps: [10, 100], bak_seconds: 3}\n"  # line 12
    )
    assert set(issues) == {
        "model",
        "features[1].type",
        "candidates[0].estimator",
        "candidates[0].params.cmd",
        "rollout.bak_seconds",
    }
    assert issues["model"][0] == 1 and issues["features[1].type"][0] == 7
    assert issues["candidates[0].estimator"][0] == 9 and "allowlist" in issues["candidates[0].estimator"][1]
    assert issues["candidates[0].params.cmd"][0] == 10 and "plain word" in issues["candidates[0].params.cmd"][1]
    assert issues["rollout.bak_seconds"] == (12, "unknown key (not part of the spec format)")


def test_rules_across_fields_name_their_paths() -> None:
    issues = refused(
        "model: churn\n"
        "dataset: churn\n"
        "task: classification\n"
        "target: churned\n"
        "features:\n"
        "  - {name: tenure, type: numeric}\n"
        "  - {name: tenure, type: numeric}\n"
        "  - {name: churned, type: numeric}\n"
        "contract: {columns: {ghost: {min: 0}}}\n"
        "candidates:\n"
        "  - estimator: sklearn.ensemble.RandomForestRegressor\n"
        "  - estimator: sklearn.ensemble.RandomForestClassifier\n"
        "    params: {n_estimator: 100}\n"
        "selection_metric: rmse\n"
        "gates: [{metric: accuracy, min: 0.7}, {metric: bogus, min: 1}]\n"
        "rollout: {steps: [50, 25]}\n"
    )
    assert "listed twice" in issues["features[1].name"][1]
    assert "target" in issues["features[2].name"][1]
    assert issues["contract.columns.ghost"][1] == "not a feature nor the target"
    assert "regression estimator" in issues["candidates[0].estimator"][1]
    assert "not a parameter" in issues["candidates[1].params.n_estimator"][1]
    assert "regression metric" in issues["selection_metric"][1]
    assert "unknown metric 'bogus'" in issues["gates[1].metric"][1]
    assert issues["rollout.steps[1]"][1] == "steps must increase"
    assert issues["rollout.steps"][1] == "the last step must be 100"
    assert "gates[0].metric" not in issues


def test_absurd_search_spaces_are_refused() -> None:
    base = EXAMPLE.replace("search: {method: random, iterations: 8, cv: 3}", "search: {iterations: 200, cv: 10}")
    issues = refused(base)
    assert "exceed the bound" in issues["search"][1]
    issues = refused(EXAMPLE.replace("C: {low: 0.01, high: 10, log: true}", "C: {low: -1, high: 10, log: true}"))
    assert issues["candidates[0].search.C"][1] == "a log range needs low > 0"


def test_yaml_that_is_not_a_mapping_is_refused_with_a_reason() -> None:
    assert "not YAML" in refused("model: [unclosed\n")["(root)"][1]
    assert "a spec is a mapping" in refused("- just\n- a list\n")["(root)"][1]


def test_the_estimator_allowlist_names_real_scikit_learn_classes() -> None:
    assert set(typing.get_args(EstimatorPath)) == set(ESTIMATORS)
    for path, task in ESTIMATORS.items():
        module, _, name = path.rpartition(".")
        estimator = getattr(importlib.import_module(module), name)()
        assert is_classifier(estimator) == (task == "classification"), path
        assert set(estimator.get_params()) == estimator_params(path)


def test_equal_specs_have_equal_digests_whatever_their_yaml() -> None:
    reordered = yaml.safe_dump(yaml.safe_load(EXAMPLE), sort_keys=True)
    assert load_spec(reordered).sha256() == load_spec(EXAMPLE).sha256()
    assert load_spec(EXAMPLE.replace("min_rows: 200", "min_rows: 201")).sha256() != load_spec(EXAMPLE).sha256()


def test_a_spec_from_a_newer_format_on_the_bus_drops_unknown_keys_instead_of_failing() -> None:
    example = json.loads((ROOT / "schemas/examples/model-spec-applied.json").read_text())
    example["spec"]["rollout"]["future_option"] = True
    applied = ModelSpecApplied.model_validate(example)
    assert isinstance(applied.spec, ModelSpec) and applied.spec.rollout.steps == [10, 25, 50, 100]
    with pytest.raises(SpecError):
        load_spec(yaml.safe_dump(example["spec"]))


def test_a_yaml_alias_bomb_is_refused_before_it_is_expanded() -> None:
    # Nine aliases of nine aliases, eight levels deep: 43 million values from ten lines, under a
    # free-form field (an estimator's params) where the format itself cannot stop it.
    bomb = ["_b0: &a0 [x, x, x, x, x, x, x, x, x]"]
    bomb += [f"_b{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    text = EXAMPLE.replace("    params: {max_iter: 500}", "    params:\n      " + "\n      ".join(bomb))
    with pytest.raises(SpecError) as refused:
        load_spec(text)
    assert [(i.path, i.message) for i in refused.value.issues] == [
        ("(root)", "the YAML expands to over 100000 values (aliases of aliases?)")
    ]
    # Aliases as such stay allowed: a document that reuses a block is fine.
    reused = EXAMPLE.replace("params: {max_iter: 500}", "params: {max_iter: 500, random_state: &seed 7}").replace(
        "params: {n_estimators: 100, random_state: 0}", "params: {n_estimators: 100, random_state: *seed}"
    )
    assert load_spec(reused).candidates[1].params["random_state"] == 7


def test_a_spec_nested_beyond_reason_or_too_large_is_refused() -> None:
    with pytest.raises(SpecError, match="nests too deeply"):
        load_spec("model: " + "[" * 50_000 + "]" * 50_000)
    with pytest.raises(SpecError, match="over 1000000 bytes"):
        load_spec(EXAMPLE + "#" * 1_000_001)


def test_code_in_a_column_name_is_refused_by_its_path() -> None:
    issues = refused(EXAMPLE.replace("target: churned", "target: __import__('os').system('id')"))
    assert "target" in issues and "should match pattern" in issues["target"][1]
    assert "features[0].name" in refused(EXAMPLE.replace("{name: tenure_months,", "{name: 'x; DROP TABLE',"))
