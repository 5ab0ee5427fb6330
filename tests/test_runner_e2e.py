"""The whole pipeline over real sockets: a WebSocket server on 127.0.0.1, the runner, real files."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from ssmd_connector.archive.line import decode_frame
from ssmd_connector.backoff import Backoff
from ssmd_connector.connectors.websocket import WebSocketConnector
from ssmd_connector.message import Message
from ssmd_connector.runner import Runner
from ssmd_connector.writers.jsonl import JsonlWriter

from .helpers import CLI, ScriptedServer, cli_env, frame, read_lines, write_config

FAST = Backoff(initial=0.05, maximum=0.2)


async def wait_for(cond: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def make_runner(server: ScriptedServer, root: Path, **kw: object) -> Runner:
    return Runner(
        "testfeed",
        [WebSocketConnector(server.url, label="testfeed")],
        [JsonlWriter(root)],
        backoff=FAST,
        **kw,  # type: ignore[arg-type]
    )


async def test_n_frames_become_n_lines_in_order(tmp_path: Path) -> None:
    n = 5000

    async def script(ws: web.WebSocketResponse, srv: ScriptedServer, _: int) -> None:
        for i in range(n):
            await srv.send(ws, frame(i), binary=(i % 1000 == 999))

    server = ScriptedServer(script)
    await server.start()
    runner = make_runner(server, tmp_path)
    task = asyncio.create_task(runner.run())
    await wait_for(lambda: runner.stats.messages == n)
    runner.stop()
    await task
    await server.stop()
    lines = read_lines(tmp_path)
    assert [decode_frame(x) for x in lines] == server.sent
    assert runner.stats.messages == n
    assert runner.stats.bytes_written == sum(len(x) + 1 for x in lines)
    assert sum(1 for x in lines if json.loads(x).get("enc") == "base64") == 5


async def test_reconnects_after_the_server_drops_the_connection(tmp_path: Path) -> None:
    async def script(ws: web.WebSocketResponse, srv: ScriptedServer, conn: int) -> None:
        for i in range(100):
            await srv.send(ws, frame(conn * 1000 + i))
        if conn < 2:
            await ws.close()  # clean close from the server side
        if conn == 2:
            # Abrupt: no close frame, just a dropped TCP connection.
            assert ws._writer is not None
            ws._writer.transport.abort()

    server = ScriptedServer(script)
    await server.start()
    runner = make_runner(server, tmp_path)
    task = asyncio.create_task(runner.run())
    await wait_for(lambda: server.connections >= 4 and runner.stats.messages >= 400)
    runner.stop()
    await task
    await server.stop()
    assert [decode_frame(x) for x in read_lines(tmp_path)] == server.sent
    assert runner.stats.reconnects >= 3
    assert runner.stats.errors["disconnect"] >= 3


async def test_keeps_retrying_while_the_server_is_down(tmp_path: Path) -> None:
    async def script(ws: web.WebSocketResponse, srv: ScriptedServer, _: int) -> None:
        await srv.send(ws, frame(1))

    server = ScriptedServer(script)
    await server.start()
    port = server.port
    await server.stop()  # nothing listens now
    runner = make_runner(server, tmp_path)
    task = asyncio.create_task(runner.run())
    await wait_for(lambda: runner.stats.reconnects >= 3)
    assert runner.stats.errors["connect"] == 1  # one outage, however many attempts
    assert "connection failed" in runner.not_ready_reasons()[0]
    await server.start(port)  # comes back on the same port
    await wait_for(lambda: runner.stats.messages == 1)
    await wait_for(lambda: runner.stats.connected)
    runner.stop()
    await task
    assert len(read_lines(tmp_path)) == 1


class SlowWriter(JsonlWriter):
    """A writer that manages ~1,000 frames/s: several times slower than the server sends."""

    async def write(self, batch: Sequence[Message]) -> None:
        await asyncio.sleep(len(batch) / 1000)
        await super().write(batch)


async def test_backpressure_pauses_reading_and_loses_nothing(tmp_path: Path) -> None:
    n = 8_000

    async def script(ws: web.WebSocketResponse, srv: ScriptedServer, _: int) -> None:
        for i in range(n):
            await srv.send(ws, frame(i))

    server = ScriptedServer(script)
    await server.start()
    runner = Runner(
        "testfeed",
        [WebSocketConnector(server.url, label="t", receive_buffer=8192)],
        [SlowWriter(tmp_path)],
        queue_capacity=200,
        backoff=FAST,
    )
    task = asyncio.create_task(runner.run())
    max_depth = 0

    def done() -> bool:
        nonlocal max_depth
        max_depth = max(max_depth, len(runner.queue))
        return runner.stats.messages == n

    await wait_for(done, timeout=60)
    runner.stop()
    await task
    await server.stop()
    assert runner.queue.pauses > 0
    # Bounded: capacity, plus about one socket read once paused. The kernel holds somewhat more
    # than the nominal 2 x 8 KiB on loopback (measured ~1,500 frames deep here), while without
    # working backpressure the depth reaches ~5,000 (measured by disabling pause_reading).
    min_wire = min(len(f) for f in server.sent) + 2
    assert max_depth <= 200 + 8 * 8192 // min_wire
    assert [decode_frame(x) for x in read_lines(tmp_path)] == server.sent


async def test_sigterm_to_the_cli_loses_nothing_the_server_sent(tmp_path: Path) -> None:
    """SIGTERM mid-stream: every frame sent before the client's close frame is on disk."""

    async def script(ws: web.WebSocketResponse, srv: ScriptedServer, _: int) -> None:
        i = 0
        while True:
            await srv.send(ws, frame(i))
            i += 1
            if i % 50 == 0:
                await asyncio.sleep(0.001)

    server = ScriptedServer(script)
    await server.start()
    cfg = write_config(tmp_path / "cfg", endpoint=server.url, storage=tmp_path / "data")
    proc = subprocess.Popen(
        [*CLI, "--env", "test", "--config-dir", str(cfg), "--health-addr", "127.0.0.1:0"],
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        await wait_for(lambda: len(server.sent) > 20_000, timeout=30)
        os.kill(proc.pid, signal.SIGTERM)
        rc = await asyncio.to_thread(proc.wait, 30)
    finally:
        if proc.poll() is None:
            proc.kill()
    _, err = proc.communicate()
    await server.stop()
    assert rc == 0, err.decode()
    assert server.client_closed, "the recorder should close the WebSocket gracefully"
    sent_before_close = server.sent[: server.client_closed[0]]
    recorded = [decode_frame(x) for x in read_lines(tmp_path / "data")]
    assert recorded[: len(sent_before_close)] == sent_before_close
    assert b"Traceback" not in err
