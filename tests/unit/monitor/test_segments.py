"""Answers kept as segments: the request ids' digests, the columns kept in their order, and the
search a label makes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from services.monitor import segments
from services.monitor.segments import Answers

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def test_an_id_has_one_digest_whatever_batch_it_comes_in() -> None:
    alone = segments.digests(np.array(["req-1"]))
    beside_longer = segments.digests(np.array(["req-1", "a-much-longer-request-id-ü-✓"]))
    assert alone[0] == beside_longer[0]
    assert len(set(segments.digests(np.array([f"req-{i}" for i in range(10_000)])).tolist())) == 10_000


@settings(max_examples=200, derandomize=True)
@given(st.lists(st.text(min_size=1, max_size=40).filter(lambda s: "\x00" not in s), min_size=1, max_size=30))
def test_digests_are_those_of_each_id_alone(ids: list[str]) -> None:
    together = segments.digests(np.array(ids, dtype=np.str_)).tolist()
    assert together == [int(segments.digests(np.array([i], dtype=np.str_))[0]) for i in ids]


def test_a_segment_keeps_every_answer_and_finds_each_copy_of_a_request() -> None:
    rows = [
        ("m", 1, "a", "1", 0.9, NOW, "stable", '{"x": 1}'),
        ("m", 2, "a", "0", None, NOW, "shadow", None),
        ("m", 1, "b", "0", 0.1, NOW + timedelta(seconds=1), "stable", '{"x": 2}'),
    ]
    (answers,) = Answers.of(rows)
    kept = segments.segment(answers)
    assert (kept.rows, kept.served_from, kept.served_to) == (3, NOW, NOW + timedelta(seconds=1))
    back = segments.answers_of("m", kept.payload)
    assert sorted(back.rows(), key=str) == sorted(rows, key=str)
    sorted_digests = np.frombuffer(kept.digests, dtype=np.uint64)
    assert (np.diff(sorted_digests.astype(np.float64)) >= 0).all()
    wanted = np.unique(segments.digests(np.array(["a", "nobody"])))
    present, positions = segments.find(sorted_digests, wanted)
    assert present.sum() == 1
    assert sorted(back.take(positions).role.tolist()) == ["shadow", "stable"]


def test_instants_keep_their_microseconds() -> None:
    at = datetime(2026, 12, 7, 12, 0, 0, 123_457, tzinfo=UTC)
    assert segments.instant(segments.micros(at)) == at
