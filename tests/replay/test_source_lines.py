"""The replay's reader decodes a block of lines in one call, yet reads every line as the line-by-line
readers (``ssmd verify``) do: a line holding two objects, a value spread over two lines, a blank
line, a line nested deeper than the archive's bound — each reported at its own line number, never
served, never a crash of the server; and nothing reported past ``--to``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from ssmd_connector.archive.line import MAX_JSON_DEPTH
from ssmd_connector.replay import source
from ssmd_connector.replay.server import ReplayConfig, ReplayServer
from ssmd_connector.replay.source import messages

from ..archives import T0_NS, ts


def _line(ms: int, seq: int, *, stamp: str | None = None, kind: str = "trade", msg: Any = None) -> bytes:
    body = msg if msg is not None else {"market_ticker": "M", "trade_id": str(seq)}
    frame = {"type": kind, "sid": 3, "seq": seq, "msg": body}
    when = stamp if stamp is not None else ts(T0_NS + ms * 1_000_000)
    return b'{"ts":"' + when.encode() + b'","feed":"kalshi","data":' + msgspec.json.encode(frame) + b"}\n"


def _deep(ms: int, seq: int, levels: int, kind: str = "trade") -> bytes:
    """An archive line whose ``msg`` holds a member nested ``levels`` deep (the line: 3 more)."""
    nested = b"[" * levels + b"]" * levels
    return (
        b'{"ts":"'
        + ts(T0_NS + ms * 1_000_000).encode()
        + b'","feed":"kalshi","data":{"type":"'
        + kind.encode()
        + b'","sid":3,"seq":'
        + str(seq).encode()
        + b',"msg":{"market_ticker":"M","market_id":"id","yes_dollars_fp":[["0.5000","1.00"]],"x":'
        + nested
        + b"}}}\n"
    )


def _archive(root: Path, body: bytes) -> Path:
    day = root / ts(T0_NS)[:10]
    day.mkdir(parents=True)
    (day / "kalshi.jsonl").write_bytes(body)
    return root


def _warnings(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [x for x in capsys.readouterr().err.splitlines() if x.startswith("warning:")]


# -- a bad receive time after a line holding two objects ---------------------------------


def test_a_bad_time_after_a_line_holding_two_archive_objects_is_reported_not_raised(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # line 1: two archive objects (a lost newline, files concatenated); line 2: a time no reader knows
    root = _archive(tmp_path, _line(1, 1)[:-1] + _line(2, 2) + _line(3, 3, stamp="not a time"))

    got = list(messages(root, "kalshi"))

    assert got == []
    warnings = _warnings(capsys)
    assert any("kalshi.jsonl:1: not an archive line" in w for w in warnings), warnings
    assert any("kalshi.jsonl:2: not a receive time" in w for w in warnings), warnings


async def test_the_replay_server_starts_on_such_an_archive(tmp_path: Path) -> None:
    root = _archive(tmp_path, _line(1, 1)[:-1] + _line(2, 2) + _line(3, 3, stamp="not a time"))
    server = ReplayServer(ReplayConfig(root, "kalshi", speed=None))
    await server.start()
    await server.stop()


def test_a_bad_time_is_reported_at_its_own_line_after_a_json_value_spread_over_two_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spread = _line(1, 1).replace(b',"data"', b',\n"data"')  # lines 1-2: one object cut by a newline
    root = _archive(tmp_path, spread + _line(2, 2) + _line(3, 3, stamp="not a time") + _line(4, 4))

    got = list(messages(root, "kalshi"))

    assert [m.seq for m in got] == [2, 4]
    warnings = _warnings(capsys)
    assert any("kalshi.jsonl:4: not a receive time" in w for w in warnings), warnings


# -- one archive line = one JSON object ---------------------------------------------------


def test_a_line_holding_two_archive_objects_is_reported_not_served(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _archive(tmp_path, _line(1, 1) + _line(2, 2)[:-1] + _line(3, 3) + _line(4, 4))

    got = list(messages(root, "kalshi"))

    assert [m.seq for m in got] == [1, 4]
    assert len(_warnings(capsys)) == 1


# -- the depth bound ----------------------------------------------------------------------


@pytest.mark.parametrize("levels", [MAX_JSON_DEPTH, 300, 900])
def test_a_line_nested_deeper_than_the_bound_is_reported_when_its_block_decodes_whole(
    tmp_path: Path, levels: int, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _archive(tmp_path, _line(1, 1) + _deep(2, 2, levels) + _line(3, 3))

    got = list(messages(root, "kalshi"))

    assert [m.seq for m in got] == [1, 3]
    warnings = _warnings(capsys)
    assert len(warnings) == 1 and "kalshi.jsonl:2: not an archive line (nested too deep)" in warnings[0], warnings


async def test_a_deep_snapshot_in_the_archive_does_not_fail_the_replay(tmp_path: Path) -> None:
    """A line nested beyond the archive's bound yet within what the reading thread's decoder takes
    is not served: its snapshot would reach the books, whose decode runs on the event loop's
    deeper stack — a RecursionError there would end the replay (1011)."""

    def deepest() -> int:  # (in a worker thread, as the replay reads)
        lo, hi = MAX_JSON_DEPTH, 20_000
        while lo < hi:
            mid = (lo + hi + 1) // 2
            try:
                source._line.decode_lines(_deep(0, 1, mid))
                lo = mid
            except RecursionError:
                hi = mid - 1
        return lo

    levels = await asyncio.to_thread(deepest) - 2
    root = _archive(tmp_path, _deep(0, 1, levels, "orderbook_snapshot") + _line(10, 2))
    server = ReplayServer(ReplayConfig(root, "kalshi", speed=None))
    await server.start()
    frames: list[dict[str, Any]] = []
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(server.ws_url) as ws:
            params = {"channels": ["orderbook_delta", "trade"], "market_tickers": ["M"]}
            await ws.send_json({"id": 1, "cmd": "subscribe", "params": params})
            async for msg in ws:
                frames.append(json.loads(msg.data))
            code = ws.close_code
    finally:
        await server.stop()
    assert code == 1000
    assert [f["type"] for f in frames if f["type"] not in ("subscribed", "ok")] == ["trade"]


# -- what is reported -----------------------------------------------------------------------


@pytest.mark.parametrize("blank", [b"\n", b"   \n", b"\r\n", b"\x0c\n"])
def test_a_blank_line_is_reported(tmp_path: Path, blank: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    """``ssmd verify`` reports a blank line (the writer never writes one); so does replay."""
    root = _archive(tmp_path, _line(1, 1) + blank + _line(2, 2))

    assert [m.seq for m in messages(root, "kalshi")] == [1, 2]
    warnings = _warnings(capsys)
    assert len(warnings) == 1 and "kalshi.jsonl:2: not an archive line" in warnings[0], warnings


def test_a_torn_line_after_the_window_is_not_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _archive(tmp_path, _line(1, 1) + _line(5, 2) + b'{"ts":"2026\n' + _line(6, 3))

    got = list(messages(root, "kalshi", end_ns=T0_NS + 3_000_000))

    assert [m.seq for m in got] == [1]
    assert _warnings(capsys) == []
