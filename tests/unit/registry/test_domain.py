"""The registry's rules: which status may follow which, what rollouts do to aliases, references."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from services.registry import domain
from shared.contract.events import RolloutChanged
from shared.contract.refs import Ref, parse_ref

EXAMPLE = json.loads((Path(__file__).resolve().parents[3] / "schemas/examples/rollout-changed.json").read_text())


def changed(**fields: Any) -> RolloutChanged:
    return RolloutChanged.model_validate({**EXAMPLE, **fields})


def test_canary_makes_the_candidate_the_challenger_and_leaves_the_champion() -> None:
    effects = domain.rollout_effects(changed(to_state="canary", candidate_version=3, stable_version=2), {"champion": 2})
    assert effects.set_aliases == {"challenger": 3} and not effects.drop_aliases and not effects.statuses


def test_promotion_moves_the_champion_and_retires_the_previous_one() -> None:
    effects = domain.rollout_effects(
        changed(to_state="promoted", candidate_version=3, stable_version=2), {"champion": 2, "challenger": 3}
    )
    assert effects.set_aliases == {"champion": 3}
    assert effects.drop_aliases == {"challenger"}
    assert effects.statuses[3][0] == "serving" and effects.statuses[2][0] == "retired"


def test_rollback_moves_the_champion_back_and_rejects_the_candidate() -> None:
    effects = domain.rollout_effects(
        changed(to_state="rolled-back", candidate_version=3, stable_version=2, reason="error rate doubled"),
        {"champion": 3},
    )
    assert effects.set_aliases == {"champion": 2}
    assert effects.statuses[3] == ("rejected", "rolled back: error rate doubled")
    assert effects.statuses[2][0] == "serving"


def test_rolling_back_a_first_version_leaves_no_champion() -> None:
    effects = domain.rollout_effects(
        changed(to_state="rolled-back", candidate_version=1, stable_version=None), {"champion": 1}
    )
    assert effects.drop_aliases == {"champion"} and not effects.set_aliases


def test_lifecycle_transitions() -> None:
    assert domain.can_move("registered", "evaluating")
    assert domain.can_move("held-for-review", "approved")
    assert domain.can_move("retired", "serving")
    assert not domain.can_move("rejected", "approved")
    assert not domain.can_move("approved", "evaluating"), "a late ModelRegistered must not undo an evaluation"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("churn", Ref("churn")),
        ("churn@latest", Ref("churn")),
        ("churn@7", Ref("churn", version=7)),
        ("churn@champion", Ref("churn", alias="champion")),
    ],
)
def test_references(text: str, expected: domain.Ref) -> None:
    assert parse_ref(text) == expected


@pytest.mark.parametrize("text", ["@3", "churn@0", "churn@2147483648", "churn@Bad Alias", "churn@"])
def test_bad_references_say_what_a_reference_looks_like(text: str) -> None:
    with pytest.raises(ValueError, match=r"NAME|version number"):
        parse_ref(text)


def test_metric_filters() -> None:
    assert domain.parse_metric_filter("accuracy>=0.8") == domain.MetricFilter("accuracy", ">=", 0.8)
    with pytest.raises(ValueError, match=re.escape("accuracy>=0.8")):
        domain.parse_metric_filter("accuracy is good")


def test_operators_cannot_set_the_aliases_rollouts_own() -> None:
    for alias in ("champion", "challenger", "latest"):
        with pytest.raises(domain.RegistryRefusal):
            domain.check_alias(alias)
    domain.check_alias("staging")
