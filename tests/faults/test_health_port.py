"""The health port must not be a way to stall the recorder (row 5)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
from pathlib import Path

import aiohttp
import pytest

from ssmd_connector.archive.line import decode_frame
from ssmd_connector.metrics import FeedStats, make_registry
from ssmd_connector.runner import Runner
from ssmd_connector.server import CONNECTION_SECONDS, MAX_CONNECTIONS, ConnectionGuard, HealthServer

from ..helpers import ScriptedServer, frame, read_lines
from .harness import start_recording, streaming, until

FD_LIMIT = 1024


def _limit_fds() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def test_a_thousand_idle_connections_do_not_stall_recording(tmp_path: Path) -> None:
    """Row 5: 1,100 idle connections to the health port (fd limit 1,024) were never closed; archive
    opens and reconnects failed with "Too many open files" and asyncio wrote 1.9 M log lines."""
    server = ScriptedServer(streaming(frame, per_ms=2))
    await server.start()
    rec = await start_recording(tmp_path, server.url, preexec_fn=_limit_fds)
    await until(lambda: len(server.sent) > 1000)
    idle: list[asyncio.StreamWriter] = []
    for _ in range(1100):
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", rec.port)
            idle.append(writer)
    stderr_before = len(rec.stderr)
    during = len(read_lines(rec.data))
    peak_fds = 0
    for _ in range(15):  # 3 s under attack
        await asyncio.sleep(0.2)
        peak_fds = max(peak_fds, _fds(rec.proc.pid))
    assert len(read_lines(rec.data)) > during + 1000, "recording goes on at full rate"
    # 64 places and a few being closed to make room, plus ~30 of the recorder's own.
    assert peak_fds < 64 + 8 + 40, f"{peak_fds} fds open: the connection bound does not hold"
    # A probe gets through even now: it takes the place of an idle connection.
    status, health = await rec.get("/health")
    assert status == 200, health
    for writer in idle:
        writer.close()
    await until(lambda: True)
    async with aiohttp.ClientSession() as http:
        for _ in range(100):  # the slots free up as the server sees the closes
            try:
                async with http.get(f"http://127.0.0.1:{rec.port}/health") as r:
                    assert r.status == 200
                    break
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
        else:
            raise AssertionError("/health unreachable after the idle connections closed")
    assert await rec.stop() == 0
    await server.stop()
    noise = rec.stderr[stderr_before:]
    assert len(noise.splitlines()) <= 5, noise[:2000]  # one summary line, not one per connection
    assert "Too many open files" not in rec.stderr
    sent = server.sent[: server.client_closed[0]]
    assert [decode_frame(x) for x in read_lines(rec.data)][: len(sent)] == sent


async def test_a_connection_that_never_completes_its_request_is_closed_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Slowloris: a request trickled in (or never sent) is cut at the time limit; rejected and
    timed-out connections make one summary line, not one line each."""
    stats = FeedStats("f")
    health = HealthServer(Runner("f", [], [], stats=stats), make_registry([stats]))
    assert (health.guard.max_connections, health.guard.seconds) == (MAX_CONNECTIONS, CONNECTION_SECONDS)
    assert MAX_CONNECTIONS <= 64 and CONNECTION_SECONDS <= 10
    health.guard = ConnectionGuard(max_connections=3, seconds=0.5, summary_every=3600)
    await health.start("127.0.0.1", 0)
    slow = []
    for _ in range(5):  # 3 places: the 4th and 5th take the places of the two oldest, idle ones
        reader, writer = await asyncio.open_connection("127.0.0.1", health.port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        slow.append((reader, writer))
        await asyncio.sleep(0.02)
    with caplog.at_level(logging.INFO):
        for _ in range(200):  # malformed requests: aiohttp logged a traceback for each
            reader, writer = await asyncio.open_connection("127.0.0.1", health.port)
            writer.write(b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n")
            await reader.read()
            writer.close()
        closed = await asyncio.wait_for(asyncio.gather(*(r.read() for r, _ in slow), return_exceptions=True), 3)
        assert all(c == b"" or isinstance(c, ConnectionError) for c in closed)
        assert health.guard.evicted >= 2 and health.guard.bad_requests == 200
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{health.port}/health") as r:
            assert r.status in (200, 503)
        await health.stop()
    noisy = [r for r in caplog.records if r.name.startswith("aiohttp")]
    assert not noisy, noisy[:3]
    summary = [r for r in caplog.records if "health server:" in r.getMessage()]
    assert len(summary) == 1 and "200 malformed request(s)" in summary[0].getMessage()
