"""A synthetic archive for the export benchmark: the simulator's market model, framed as Kalshi
sends it (``sid``/``seq`` per channel, a snapshot first per market) and written as archive lines.

Why not a recording: a million recorded frames take minutes of wall time at the simulator's pace;
the model is the same one the simulator serves, so the mix of message types and sizes is the
simulator's, and the file is produced in seconds. Receive times advance ``step_us`` per event.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import msgspec

from ssmd_connector.archive.compression import codec
from ssmd_connector.clock import TimestampFormatter
from ssmd_connector.sim.market import MarketModel

_encode = msgspec.json.encode
SIDS = {"orderbook_delta": 1, "trade": 2, "ticker": 3, "market_lifecycle_v2": 4}


def write_archive(
    root: Path,
    frames: int,
    *,
    markets: int = 50,
    seed: int = 7,
    step_us: int = 20,
    start: str = "2026-11-24T23:59:50",
    compression: str = "none",
) -> int:
    """Write about ``frames`` data frames under ``root/<day>/kalshi.jsonl[.zst]``; returns the exact
    number of archive lines written (a day change splits the files)."""
    t0 = datetime.fromisoformat(start).replace(tzinfo=UTC).timestamp()
    model = MarketModel(markets, seed, now=t0)
    fmt = TimestampFormatter()
    seq = dict.fromkeys(SIDS, 0)
    suffix = {"none": ".jsonl", "zstd": ".jsonl.zst"}[compression]
    files: dict[str, list[bytes]] = {}
    written = 0
    ns = int(t0) * 1_000_000_000

    def emit(channel: str, kind: str, msg: object) -> None:
        nonlocal written
        sid = SIDS[channel]
        seq[channel] += 1
        frame = _encode({"type": kind, "sid": sid, "seq": seq[channel], "msg": msg})
        ts = fmt.format(ns)
        files.setdefault(ts[:10].decode(), []).append(b'{"ts":"' + ts + b'","feed":"kalshi","data":' + frame + b"}\n")
        written += 1

    for ticker in model.open_tickers:
        emit("orderbook_delta", "orderbook_snapshot", model.snapshot_msg(ticker))
    while written < frames:
        ns += step_us * 1000
        for channel, _, kind, msg in model.step(ns / 1e9):
            emit(channel, kind, msg)
    for day, lines in files.items():
        (root / day).mkdir(parents=True, exist_ok=True)
        with (root / day / f"kalshi{suffix}").open("wb") as f:
            body = b"".join(lines)
            if compression == "none":
                f.write(body)
            else:
                f.write(codec(compression).compress(body))
    return written
