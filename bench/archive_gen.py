"""A synthetic archive for the export benchmark: the simulator's market model, framed as Kalshi
sends it (``sid``/``seq`` per channel, a snapshot first per market) and written as archive lines.

Why not a recording: a million recorded frames take minutes of wall time at the simulator's pace;
the model is the same one the simulator serves, so the mix of message types and sizes is the
simulator's, and the file is produced in seconds. Receive times advance ``step_us`` per event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from ssmd_connector.archive.compression import codec
from ssmd_connector.clock import TimestampFormatter
from ssmd_connector.sim.market import MarketModel

_encode = msgspec.json.encode
SIDS = {"orderbook_delta": 1, "trade": 2, "ticker": 3, "market_lifecycle_v2": 4}


@dataclass
class Generated:
    """What was written: the exact number of archive lines, per channel, the markets, and the
    receive times of the first and last line (ns)."""

    frames: int = 0
    per_channel: dict[str, int] = field(default_factory=dict)
    tickers: list[str] = field(default_factory=list)
    first_ns: int = 0
    last_ns: int = 0


def write_archive(
    root: Path,
    frames: int,
    *,
    markets: int = 50,
    seed: int = 7,
    step_us: int = 20,
    start: str = "2026-11-24T23:59:50",
    compression: str = "none",
) -> Generated:
    """Write about ``frames`` data frames under ``root/<day>/kalshi.jsonl[.zst]`` (a day change
    splits the files)."""
    t0 = datetime.fromisoformat(start).replace(tzinfo=UTC).timestamp()
    model = MarketModel(markets, seed, now=t0)
    fmt = TimestampFormatter()
    seq = dict.fromkeys(SIDS, 0)
    suffix = {"none": ".jsonl", "zstd": ".jsonl.zst"}[compression]
    files: dict[str, list[bytes]] = {}
    ns = int(t0) * 1_000_000_000
    out = Generated(tickers=list(model.open_tickers), first_ns=ns)

    def emit(channel: str, kind: str, msg: object) -> None:
        sid = SIDS[channel]
        seq[channel] += 1
        frame = _encode({"type": kind, "sid": sid, "seq": seq[channel], "msg": msg})
        ts = fmt.format(ns)
        files.setdefault(ts[:10].decode(), []).append(b'{"ts":"' + ts + b'","feed":"kalshi","data":' + frame + b"}\n")
        out.frames += 1
        out.per_channel[channel] = out.per_channel.get(channel, 0) + 1
        out.last_ns = ns

    for ticker in model.open_tickers:
        emit("orderbook_delta", "orderbook_snapshot", model.snapshot_msg(ticker))
    while out.frames < frames:
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
    return out
