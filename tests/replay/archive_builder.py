"""Replay tests' archives, message by message, in milliseconds from :data:`T0`
(written by :func:`tests.archives.write_archive`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..archives import ts, write_archive

T0 = 1_790_000_000 * 1_000_000_000
"""A whole second (2026-09-21T14:13:20Z), the archive's first receive time."""


class ArchiveBuilder:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._frames: list[tuple[int, dict[str, Any]]] = []
        self._events: list[dict[str, Any]] = []

    def frame(self, ms: int, kind: str, msg: dict[str, Any], sid: int = 1, seq: int | None = None) -> None:
        frame: dict[str, Any] = {"type": kind, "sid": sid}
        if seq is not None:
            frame["seq"] = seq
        frame["msg"] = msg
        self._frames.append((T0 + ms * 1_000_000, frame))

    def event(self, ms: int, event: str, **fields: Any) -> None:
        self._events.append({"ts": ts(T0 + ms * 1_000_000), "event": event, **fields})

    def write(self) -> Path:
        return write_archive(self.root, self._frames, self._events)


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
