"""Streaming inference's messages: what a producer writes to a model's input topic and what its
scorer writes to the output topic (`shared.contract.topics.inputs` / `outputs`).

They are plain JSON values, not CloudEvents (a stream of feature records is data, not a lifecycle
event), in Kafka's usual habits: the key is the entity (it routes the canary when the rollout's
sticky field is not in the row, and keeps one entity's records in order), a `request-id` header
names a message's request (else it is `<model>-<partition>-<offset>`; row i of a list is `-i`
after it), and the output message carries the input's key and one prediction per input row.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, RootModel, TypeAdapter

from shared.contract.events import Record, Scalar, Version

REQUEST_ID_HEADER = "request-id"
# An input message holds at most this many rows (a larger one is dead-lettered whole).
MAX_ROWS = 10_000

StreamRow = Annotated[
    dict[str, Scalar], Field(description="One row: feature name to value, as the model's input schema says.")
]
StreamInput = Annotated[
    StreamRow | Annotated[list[StreamRow], Field(min_length=1, max_length=MAX_ROWS)],
    Field(description="A message of an input topic: one row, or a list of rows scored together."),
]
STREAM_INPUT: TypeAdapter[Any] = TypeAdapter(StreamInput)


class FeatureRecords(RootModel[StreamInput]):
    """A message of a model's input topic (`<prefix>.inputs.<model>`): one row, or a list of rows."""


class StreamPrediction(Record):
    """One row's prediction, as the output topic carries it."""

    request_id: str = Field(min_length=1, description="The row's request id; labels join on it.")
    key: str | None = Field(description="The input message's key (UTF-8), if it had one.")
    model: str = Field(description="Model name.")
    version: Version = Field(description="Version that answered.")
    role: Literal["stable", "canary"] = Field(description="Which side of the rollout answered (shadows never do).")
    prediction: str | int | float = Field(description="Predicted class or value.")
    probabilities: dict[str, float] | None = Field(
        default=None, description="Class probabilities, classification only."
    )
    partition: int = Field(ge=0, description="Partition of the input message.")
    offset: int = Field(ge=0, description="Offset of the input message.")
    served_at: datetime = Field(description="When it was scored (UTC).")


StreamOutput = Annotated[
    StreamPrediction | list[StreamPrediction],
    Field(description="A message of an output topic: the prediction of a one-row input, or the list of a list's."),
]
STREAM_OUTPUT: TypeAdapter[Any] = TypeAdapter(StreamOutput)


class Predictions(RootModel[StreamOutput]):
    """A message of a model's output topic (`<prefix>.outputs.<model>`): one prediction per input row."""
