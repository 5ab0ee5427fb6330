"""The Kalshi connector's read path without sockets: every frame archived, metrics counted."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from ssmd_connector.connectors.kalshi.connector import KalshiShard, ShardSettings
from ssmd_connector.kalshi.client import ShardPlan
from ssmd_connector.message import Message
from ssmd_connector.metrics import ShardStats


class Sink:
    feed = "kalshi"

    def __init__(self) -> None:
        self.reads: list[list[Message]] = []

    def put(self, batch: list[Message]) -> None:
        self.reads.append(batch)


class Ledger:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any] | None]] = []

    def record(self, event: str, shard: str, fields: dict[str, Any] | None = None) -> None:
        self.events.append((event, fields))


def shard() -> tuple[KalshiShard, Sink, ShardStats]:
    stats = ShardStats("kalshi-0")
    s = KalshiShard("kalshi-0", ShardPlan(("ticker",), ("A-1",)), ShardSettings("ws://x"), None, Ledger(), stats)  # type: ignore[arg-type]
    sink = Sink()
    s._sink = sink  # type: ignore[assignment]
    from ssmd_connector.kalshi.client import ClientSession  # noqa: PLC0415

    s._session = ClientSession(s.plan)
    s._session.start(time.monotonic())
    return s, sink, stats


def test_a_read_is_archived_whole_with_types_counted_and_age_sampled_once() -> None:
    s, sink, stats = shard()
    now_ns = 1_000_250_000_000
    frames = [
        json.dumps({"type": "ticker", "sid": 1, "msg": {"market_ticker": "A-1", "ts_ms": 1_000_000}}).encode(),
        json.dumps({"type": "ticker", "sid": 1, "msg": {"market_ticker": "A-1", "ts_ms": 1_000_100}}).encode(),
        b"not json",
        b"\x00\x01",
    ]
    s._on_read(frames, now_ns, [3])
    (read,) = sink.reads
    assert [m.frame for m in read] == frames
    assert [(m.json_valid, m.binary, m.kind) for m in read] == [
        (True, False, "ticker"),
        (True, False, "ticker"),
        (False, False, ""),
        (False, True, ""),
    ]
    assert stats.frames_by_type == {"ticker": 2, "_unparsed": 1}
    assert stats.age.count == 1 and stats.age.total == pytest.approx(0.25)  # once per read


def test_age_is_sampled_from_the_first_data_frame_that_carries_ts_ms() -> None:
    s, _, stats = shard()
    frames = [
        json.dumps({"type": "ticker", "sid": 1, "msg": {"market_ticker": "A-1"}}).encode(),  # no ts_ms
        json.dumps({"type": "ticker", "sid": 1, "msg": {"market_ticker": "A-1", "ts_ms": 1_000_000}}).encode(),
        json.dumps({"type": "ticker", "sid": 1, "msg": {"market_ticker": "A-1", "ts_ms": 999_000}}).encode(),
    ]
    s._on_read(frames, 1_000_500_000_000, [])
    assert stats.age.count == 1 and stats.age.total == pytest.approx(0.5)


def test_a_bug_while_reacting_still_archives_the_whole_read(monkeypatch: pytest.MonkeyPatch) -> None:
    s, sink, _ = shard()

    def broken(*_: Any) -> Any:
        raise RuntimeError("a bug")

    assert s._session is not None
    monkeypatch.setattr(s._session, "receive", broken)
    frames = [b'{"type":"ticker","sid":1,"msg":{}}', b'{"type":"ticker","sid":1,"msg":{}}']
    with pytest.raises(RuntimeError):
        s._on_read(frames, 1, [])
    assert [m.frame for m in sink.reads[0]] == frames
