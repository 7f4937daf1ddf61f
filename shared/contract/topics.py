"""The topic catalog: one topic per event type, keyed by model (or dataset) name.

Constants here are topic names without the configurable prefix; `Settings.topic()`
turns one into the full name, e.g. ``modelbus.data-arrived``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

# Every client of the bus is one of these authenticated principals: one per service (serving is
# the deployer's second entrypoint, with a principal of its own), `producer` for outside
# producers, `consumer` for outside readers of the models' predictions, `autoscaler` for what
# reads consumer lag (KEDA; it reads no event), `admin` for the platform's own tasks (topics,
# ACLs, credentials).
Principal = Literal[
    "registry",
    "trainer",
    "evaluator",
    "deployer",
    "serving",
    "monitor",
    "alerter",
    "producer",
    "consumer",
    "autoscaler",
    "admin",
]
PRINCIPALS: tuple[Principal, ...] = get_args(Principal)
SERVICES: tuple[Principal, ...] = PRINCIPALS[:7]
# The services that consume through a consumer group, named `<prefix>.<service>`; serving follows
# its topic without one (every replica reads every event).
GROUP_MEMBERS: tuple[Principal, ...] = ("registry", "trainer", "evaluator", "deployer", "monitor", "alerter")


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic of the catalog: its name (without prefix), partitions and cleanup policy."""

    name: str
    partitions: int
    compacted: bool = False
    description: str = ""


DATA_ARRIVED = "data-arrived"
MODEL_SPEC_APPLIED = "model-spec-applied"
TRAINING_STARTED = "training-started"
MODEL_TRAINED = "model-trained"
TRAINING_FAILED = "training-failed"
MODEL_REGISTERED = "model-registered"
MODEL_EVALUATED = "model-evaluated"
ROLLOUT_COMMANDED = "rollout-commanded"
ROLLOUT_CHANGED = "rollout-changed"
PREDICTIONS_LOGGED = "predictions-logged"
LABELS_ARRIVED = "labels-arrived"
CANARY_ANALYZED = "canary-analyzed"
DRIFT_DETECTED = "drift-detected"
PERFORMANCE_DEGRADED = "performance-degraded"
RETRAIN_REQUESTED = "retrain-requested"
RETRAIN_SKIPPED = "retrain-skipped"
ALERTS = "alerts"
# The alerter's Kafka receivers publish to topics under this name (alerts, alerts.payments, …).
ALERT_RECEIVER_PREFIX = ALERTS
DEAD_LETTER = "dead-letter"

CATALOG: tuple[TopicSpec, ...] = (
    TopicSpec(DATA_ARRIVED, 3, description="A producer published a new dataset version."),
    TopicSpec(MODEL_SPEC_APPLIED, 1, compacted=True, description="Applied model specs, latest per model."),
    TopicSpec(TRAINING_STARTED, 3, description="A training run began."),
    TopicSpec(MODEL_TRAINED, 3, description="A training run produced a model."),
    TopicSpec(TRAINING_FAILED, 3, description="A training run failed."),
    TopicSpec(MODEL_REGISTERED, 3, description="The registry recorded a model version."),
    TopicSpec(MODEL_EVALUATED, 3, description="A version was gated against the champion."),
    TopicSpec(ROLLOUT_COMMANDED, 3, description="An operator commanded a rollout."),
    TopicSpec(ROLLOUT_CHANGED, 3, description="A rollout changed state or traffic split."),
    TopicSpec(PREDICTIONS_LOGGED, 6, description="Serving logged a batch of predictions."),
    TopicSpec(LABELS_ARRIVED, 6, description="Ground truth arrived for earlier predictions."),
    TopicSpec(CANARY_ANALYZED, 3, description="The monitor compared canary and stable."),
    TopicSpec(DRIFT_DETECTED, 3, description="A window drifted from the reference profile."),
    TopicSpec(PERFORMANCE_DEGRADED, 3, description="A live metric fell below its threshold."),
    TopicSpec(RETRAIN_REQUESTED, 3, description="A model should be trained again."),
    TopicSpec(RETRAIN_SKIPPED, 3, description="A retrain was asked for but could not help: nothing new to learn from."),
    TopicSpec(ALERTS, 3, description="AlertRaised and AlertResolved, for ops."),
    TopicSpec(DEAD_LETTER, 3, description="Messages a consumer could not handle, with the reason."),
)

BY_NAME: dict[str, TopicSpec] = {spec.name: spec for spec in CATALOG}


# Streaming inference: per model, a topic of feature records to score and one of their
# predictions (`<prefix>.inputs.<model>`, `<prefix>.outputs.<model>`), created by serving when the
# model goes live. The direction comes first so that one prefixed ACL covers every model's.
INPUTS = "inputs"
OUTPUTS = "outputs"
STREAM_PARTITIONS = 3
# The consumer group of serving's scorers, and the start of each scorer's transactional id.
SCORER = "scorer"
STREAMS: tuple[TopicSpec, ...] = (
    TopicSpec(f"{INPUTS}.<model>", STREAM_PARTITIONS, description="Feature records to score, keyed by entity."),
    TopicSpec(f"{OUTPUTS}.<model>", STREAM_PARTITIONS, description="Their predictions, written in transactions."),
)


def inputs(model: str) -> str:
    """A model's input topic (without the prefix)."""
    return f"{INPUTS}.{model}"


def outputs(model: str) -> str:
    """A model's output topic (without the prefix)."""
    return f"{OUTPUTS}.{model}"
