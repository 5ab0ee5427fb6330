"""The fast-ingest batch state machine (sans I/O): reply subjects out, server frames in."""

from __future__ import annotations

import pytest

from ssmd_connector.writers.nats.fast_batch import FastBatch


def test_reply_subjects_carry_batch_sequence_and_operation() -> None:
    b = FastBatch("_INBOX.abc", "b1", 500)
    assert b.next_reply("ssmd.kalshi.trade.X") == "_INBOX.abc.b1.500.fail.1.0.$FI"
    assert b.next_reply("ssmd.kalshi.trade.Y") == "_INBOX.abc.b1.500.fail.2.1.$FI"
    assert b.subject == "ssmd.kalshi.trade.X"  # end and ping go to the first message's subject
    assert b.ping_reply() == "_INBOX.abc.b1.500.fail.2.4.$FI"
    assert b.end_reply() == "_INBOX.abc.b1.500.fail.3.3.$FI" and b.ended


def test_cumulative_acks_then_a_complete_end() -> None:
    b = FastBatch("i", "b", 2)
    for _ in range(5):
        b.next_reply("s")
    b.on_frame(b'{"type":"ack","seq":0,"msgs":2}')
    assert b.stored == 0 and b.unstored == 5
    b.on_frame(b'{"type":"ack","seq":4,"msgs":2}')
    b.on_frame(b'{"type":"ack","seq":2,"msgs":2}')  # late and older: never moves backwards
    assert b.stored == 4 and not b.closed
    b.end_reply()
    b.on_frame(b'{"stream":"S","seq":99,"batch":"b","count":5}')
    assert b.closed and b.failure is None and b.stored == 5


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b'{"type":"gap","last_seq":3,"seq":5}', "gap"),
        (
            b'{"type":"err","seq":3,"error":{"code":400,"err_code":10208,"description":"batch publish ID unknown"}}',
            "batch publish ID unknown (code 10208)",
        ),
        (
            b'{"error":{"code":400,"err_code":10205,"description":"batch publish is disabled"},"stream":"S","seq":0}',
            "disabled",
        ),
        (b'{"stream":"S","seq":7,"batch":"b","count":3}', "abandoned by the server after 3 of 5"),
        (b"not json", "unreadable"),
    ],
)
def test_anything_but_a_complete_end_fails_the_batch(frame: bytes, reason: str) -> None:
    b = FastBatch("i", "b", 10)
    for _ in range(5):
        b.next_reply("s")
    b.on_frame(b'{"type":"ack","seq":2,"msgs":10}')
    b.on_frame(frame)
    assert b.closed and b.failure is not None and reason in b.failure
    assert b.stored == 2  # what was acknowledged before stays acknowledged
    b.on_frame(b'{"type":"ack","seq":5,"msgs":10}')  # nothing counts after the batch is over
    assert b.stored == 2


def test_unknown_frame_types_are_ignored_and_ids_are_checked() -> None:
    b = FastBatch("i", "b", 10)
    b.next_reply("s")
    b.on_frame(b'{"type":"something-new"}')
    assert not b.closed
    with pytest.raises(ValueError, match="batch id"):
        FastBatch("i", "has.dot", 10)
