"""Frames a feed may send that the recorder must archive whatever their content (rows 1 and 3),
and the maximum message size."""

from __future__ import annotations

import asyncio
import functools
import json
from pathlib import Path

import pytest
from aiohttp import web

from ssmd_connector.archive.line import MAX_JSON_DEPTH, decode_frame
from ssmd_connector.connectors.websocket import MAX_FRAME_BYTES

from ..helpers import ScriptedServer, frame, read_lines
from .harness import raw_websocket_server, ssmd, start_recording, streaming, until, ws_frame

KALSHI_FEED = """\
name: testfeed
type: websocket
connector: kalshi
versions:
  - {version: x, endpoint: "%s", active: true}
"""
KALSHI_ENV = """\
name: test
feed: testfeed
storage: {type: local, path: %s}
subscription: {channels: [ticker], markets: [X-1]}
"""


def _at_least(sent: list[bytes], n: int) -> bool:
    return len(sent) >= n


def deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize("connector", ["websocket", "kalshi"])
async def test_deeply_nested_json_is_archived_and_recording_goes_on(tmp_path: Path, connector: str) -> None:
    """Row 1: JSON nested 1,000, 10,000 and 100,000 deep crashed the writer with RecursionError
    (and lost the queued frames). Every frame must be archived, the deep ones as text, and the
    readers must return them byte for byte."""
    specials = {
        100: deep(1000),
        200: deep(10_000),
        300: deep(100_000),
        400: deep(MAX_JSON_DEPTH),
        500: deep(MAX_JSON_DEPTH + 1),  # (deep enough to be refused, not deep enough to hit the stack)
    }
    server = ScriptedServer(streaming(lambda i: specials.get(i, frame(i))))
    await server.start()
    kalshi = connector == "kalshi"
    rec = await start_recording(
        tmp_path,
        server.url,
        feed=KALSHI_FEED % server.url if kalshi else None,
        env=KALSHI_ENV % (tmp_path / "data") if kalshi else None,
    )
    await until(lambda: len(server.sent) > 3000, what="3,000 frames sent")
    status, health = await rec.get("/health")
    assert status == 200, health
    assert await rec.stop() == 0, rec.stderr[-3000:]
    await server.stop()
    assert "Traceback" not in rec.stderr
    archived = read_lines(rec.data)
    sent = server.sent[: server.client_closed[0]]
    assert [decode_frame(x) for x in archived][: len(sent)] == sent
    by_frame = {decode_frame(x): json.loads(x) for x in archived}
    for i in (100, 200, 300, 500):
        assert by_frame[specials[i]]["enc"] == "text"  # too deep to embed: kept as a string
    assert "enc" not in by_frame[specials[400]]  # at the limit: verbatim
    cat = ssmd("cat", str(rec.data), "--data", "--strict")
    assert cat.returncode == 0 and "Traceback" not in cat.stderr, cat.stderr
    assert cat.stdout.encode().splitlines() == [decode_frame(x) for x in archived]


async def test_numbers_beyond_float_range_are_verbatim_readable_and_survive_a_clean_restart(tmp_path: Path) -> None:
    """Row 3: ``{"a":1e400}`` is valid JSON, archived verbatim — but the readers crashed on it and
    the next start moved that last line to ``.torn-*`` after a clean stop."""
    odd = [
        b"123456789012345678901234567890",
        b'{"type":"big","v":' + b"7" * 4400 + b"}",  # more digits than msgspec builds an int from
        b'{"b":-1e999,"c":1e-999}',
        b'{"a":1e400}',  # last: the tail a restart checks
    ]

    async def script(ws: web.WebSocketResponse, srv: ScriptedServer, conn: int) -> None:
        for i in range(50):
            await srv.send(ws, frame(i))
        for f in odd:
            await srv.send(ws, f)

    server = ScriptedServer(script)
    await server.start()
    for run in range(2):
        rec = await start_recording(tmp_path / f"run{run}", server.url, data=tmp_path / "data")
        await until(functools.partial(_at_least, server.sent, 54 * (run + 1)), what="frames sent")
        await asyncio.sleep(0.3)
        assert await rec.stop() == 0, rec.stderr
    await server.stop()
    lines = read_lines(tmp_path / "data")
    assert [decode_frame(x) for x in lines] == server.sent
    assert b'"data":{"a":1e400}}' in lines[53]  # verbatim, not re-encoded
    assert not list((tmp_path / "data").rglob("*.torn-*")), "a clean stop left nothing to repair"
    for tool in (["cat", "--strict"], ["stats", "--strict"]):
        proc = ssmd(tool[0], str(tmp_path / "data"), *tool[1:])
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "frames: 108" in ssmd("stats", str(tmp_path / "data")).stdout


async def test_a_fragmented_message_over_the_limit_closes_the_connection_with_a_reason(tmp_path: Path) -> None:
    """Above MAX_FRAME_BYTES a message is not stored: the connection is closed (1009) with a
    reason naming the limit, counted as a disconnect, and recording resumes on a new connection.
    (picows bounds single frames; a message sent in many fragments was unbounded.)"""

    async def script(writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(ws_frame(0x81, b'{"ok":%d}' % n))
        if n == 0:  # a text message in 1 MiB fragments that goes on past the limit
            part = b"x" * (1 << 20)
            writer.write(ws_frame(0x01, part))
            for _ in range(MAX_FRAME_BYTES // len(part) + 1):
                writer.write(ws_frame(0x00, part))
                await writer.drain()

    server, accepted, url = await raw_websocket_server(script)
    rec = await start_recording(tmp_path, url)
    await until(lambda: len(accepted) >= 2, timeout=60, what="a second connection")
    await asyncio.sleep(0.5)
    assert await rec.metric("ssmd_errors_total", kind="disconnect") >= 1
    assert await rec.stop() == 0
    server.close()
    assert "grew past the" in rec.stderr and "MAX_FRAME_BYTES" in rec.stderr
    frames = [decode_frame(x) for x in read_lines(rec.data)]
    assert frames[:2] == [b'{"ok":0}', b'{"ok":1}']  # both connections recorded, nothing oversized


async def test_a_new_message_inside_a_fragmented_one_is_a_protocol_error_said_loudly(tmp_path: Path) -> None:
    """A peer that starts a new message before finishing a fragmented one breaks the protocol:
    the unfinished message cannot be stored, and the connection is closed saying why (it was
    dropped without a word); every complete message that arrived is kept."""

    async def script(writer: asyncio.StreamWriter, n: int) -> None:
        broken = ws_frame(0x01, b'{"part":') + ws_frame(0x81, b'{"whole":1}') if n == 0 else b""
        writer.write(broken + ws_frame(0x81, b'{"ok":%d}' % n))

    server, accepted, url = await raw_websocket_server(script)
    rec = await start_recording(tmp_path, url)
    await until(lambda: len(accepted) >= 2, what="a second connection")
    await asyncio.sleep(0.3)
    assert await rec.stop() == 0
    server.close()
    assert "a new message began before a fragmented one was finished" in rec.stderr
    recorded = [decode_frame(x) for x in read_lines(rec.data)]
    # What came in the read that broke the protocol is kept; after our close, nothing more is read.
    assert recorded[0] == b'{"whole":1}' and recorded[-1] == b'{"ok":1}' and len(recorded) <= 3
