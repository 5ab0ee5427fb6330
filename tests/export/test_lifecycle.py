"""Lifecycle messages as Kalshi sends them (a ``created`` carries ``price_ranges`` and
``additional_metadata`` objects) reach the ``lifecycle`` table byte for byte, and the ``coverage``
table says what ``ssmd coverage --json`` says of the same archive (created, status)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from ssmd_connector.archive.reading import Reader
from ssmd_connector.export.run import Export, Options
from ssmd_connector.sim.market import MarketModel
from ssmd_connector.tools.coverage import build
from ssmd_connector.tools.read import Filter

from ..archives import T0_NS, rows, ts, write_archive


def test_created_messages_reach_lifecycle_and_coverage(tmp_path: Path) -> None:
    model = MarketModel(3, seed=2, now=T0_NS / 1e9)
    tickers = sorted(model.markets)
    created = [model.created_msg(t) for t in tickers]
    assert all("price_ranges" in m and "additional_metadata" in m for m in created)
    frames = [
        (T0_NS + 1000 * (i + 1), {"type": "market_lifecycle_v2", "sid": 9, "seq": i + 1, "msg": msg})
        for i, msg in enumerate(created)
    ]
    ledger: list[dict[str, Any]] = [
        {"ts": ts(T0_NS), "event": "connect"},
        {"ts": ts(T0_NS + 10), "event": "subscribed", "sid": 1, "channel": "orderbook_delta", "tickers": tickers},
    ]
    archive = write_archive(tmp_path / "a", frames, ledger)
    out = tmp_path / "o"
    summary = Export(archive, out, Options(tables=frozenset({"lifecycle", "coverage"}))).run()
    assert summary.malformed == 0 and summary.problems == 0

    life = rows(out, "lifecycle")
    assert [r["market"] for r in life] == tickers
    for r, msg in zip(life, created, strict=True):
        assert r["event_type"] == "created"
        assert json.loads(r["price_ranges"]) == msg["price_ranges"]
        assert json.loads(r["additional_metadata"]) == msg["additional_metadata"]

    def when(text: str | None) -> datetime | None:
        return None if text is None else datetime.fromisoformat(text.replace("Z", "+00:00"))

    want = {m.ticker: (when(m.created), m.status) for m in build(archive, Filter(), Reader())}
    got = {r["market"]: (r["created"], r["status"]) for r in rows(out, "coverage")}
    assert got == want
    assert all(c is not None and s == "created" for c, s in got.values())
