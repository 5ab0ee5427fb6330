"""Small archives written line by line for replay tests: the recorder's own line format
(:class:`~ssmd_connector.archive.line.LineEncoder`) and ledger lines, at chosen receive times."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ssmd_connector.archive.layout import day_file, ledger_path
from ssmd_connector.archive.line import LineEncoder
from ssmd_connector.clock import TimestampFormatter
from ssmd_connector.message import Message

T0 = 1_790_000_000 * 1_000_000_000
"""A whole second (2026-09-21T14:13:20Z), the archive's first receive time."""


class ArchiveBuilder:
    def __init__(self, root: Path, feed: str = "kalshi") -> None:
        self.root, self.feed = root, feed
        self.path = day_file(root, feed, T0, ".jsonl")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._enc = LineEncoder()
        self._lines: list[bytes] = []
        self._events: list[str] = []

    def frame(self, ms: int, kind: str, msg: dict[str, Any], sid: int = 1, seq: int | None = None) -> None:
        frame: dict[str, Any] = {"type": kind, "sid": sid}
        if seq is not None:
            frame["seq"] = seq
        frame["msg"] = msg
        ns = T0 + ms * 1_000_000
        self._lines.append(self._enc.encode(Message(ns, self.feed, json.dumps(frame).encode(), json_valid=True)))

    def event(self, ms: int, event: str, **fields: Any) -> None:
        stamp = TimestampFormatter().format(T0 + ms * 1_000_000).decode()
        self._events.append(
            json.dumps({"ts": stamp, "feed": self.feed, "shard": f"{self.feed}-0", "event": event, **fields})
        )

    def write(self) -> Path:
        self.path.write_bytes(b"".join(self._lines))
        if self._events:
            ledger_path(self.path.parent, self.feed).write_text("".join(e + "\n" for e in self._events))
        return self.root


def snapshot(ticker: str, yes: list[list[str]], no: list[list[str]] | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"market_ticker": ticker, "market_id": f"id-{ticker}", "yes_dollars_fp": yes}
    if no:
        msg["no_dollars_fp"] = no
    return msg


def delta(ticker: str, price: str, change: str, side: str = "yes") -> dict[str, Any]:
    return {
        "market_ticker": ticker,
        "market_id": f"id-{ticker}",
        "price_dollars": price,
        "delta_fp": change,
        "side": side,
    }
