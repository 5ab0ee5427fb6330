"""/health, /ready and /metrics against a running recorder."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from ssmd_connector.assembly.recorder import Recorder
from ssmd_connector.config import load
from ssmd_connector.connectors.websocket import WebSocketConnector
from ssmd_connector.metrics import FeedStats, make_registry
from ssmd_connector.runner import Runner
from ssmd_connector.server import HealthServer

from .helpers import CLI, ScriptedServer, cli_env, frame, read_lines, write_config


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


FEED = (("feed", "testfeed"),)


async def test_health_ready_and_metrics_follow_the_pipeline(tmp_path: Path) -> None:
    gate = asyncio.Event()
    release = asyncio.Event()

    async def script(ws: web.WebSocketResponse, srv: ScriptedServer, conn: int) -> None:
        if conn == 0:
            await gate.wait()
            for i in range(250):
                await srv.send(ws, frame(i))
            await release.wait()
            await ws.close()
        else:
            for i in range(250, 300):
                await srv.send(ws, frame(i))

    server = ScriptedServer(script)
    await server.start()
    port = server.port
    await server.stop()  # start with the server down: not ready
    cfg = write_config(tmp_path / "cfg", endpoint=f"ws://127.0.0.1:{port}/ws", storage=tmp_path / "data")
    rec = Recorder.build(load(cfg, "test"), {})
    task = asyncio.create_task(rec.run("127.0.0.1", 0, handle_signals=False))
    async with aiohttp.ClientSession() as http:
        while rec.server.port == 0:
            await asyncio.sleep(0.01)
        base = f"http://127.0.0.1:{rec.server.port}"

        async def get(path: str) -> tuple[int, dict[str, object] | str]:
            async with http.get(base + path) as r:
                body = await (r.json() if path != "/metrics" else r.text())
                return r.status, body

        # Present at zero from start-up.
        status, text = await get("/metrics")
        assert status == 200 and isinstance(text, str)
        m = samples(text)
        for name in (
            "ssmd_messages_total",
            "ssmd_bytes_written_total",
            "ssmd_reconnects_total",
            "ssmd_connected",
            "ssmd_last_message_timestamp_seconds",
            "ssmd_queue_depth",
            "ssmd_write_backlog_bytes",
        ):
            assert m[(name, FEED)] == 0, name
        assert m[("ssmd_errors_total", (("feed", "testfeed"), ("kind", "write")))] == 0

        status, body = await get("/health")
        assert status == 200 and isinstance(body, dict) and body["status"] == "ok"
        status, body = await get("/ready")
        assert status == 503 and isinstance(body, dict)
        assert "connection failed" in str(body["reasons"])

        await server.start(port)
        for _ in range(200):
            if (await get("/ready"))[0] == 200:
                break
            await asyncio.sleep(0.05)
        assert (await get("/ready"))[0] == 200
        gate.set()
        while rec.runner.stats.messages < 250:
            await asyncio.sleep(0.02)
        await asyncio.sleep(1.3)  # one flush interval
        m = samples(str((await get("/metrics"))[1]))
        assert m[("ssmd_messages_total", FEED)] == 250
        assert m[("ssmd_connected", FEED)] == 1
        assert m[("ssmd_bytes_written_total", FEED)] == sum(len(x) + 1 for x in read_lines(tmp_path / "data"))
        assert abs(m[("ssmd_last_message_timestamp_seconds", FEED)] - time.time()) < 10

        release.set()  # server closes: ready drops, then comes back after reconnect
        while rec.runner.stats.messages < 300:
            await asyncio.sleep(0.02)
        m = samples(str((await get("/metrics"))[1]))
        assert m[("ssmd_reconnects_total", FEED)] >= 1
        assert m[("ssmd_errors_total", (("feed", "testfeed"), ("kind", "disconnect")))] >= 1

        rec.runner.stop()
        await task
    await server.stop()
    assert len(read_lines(tmp_path / "data")) == 300


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        cfg = write_config(tmp_path / "cfg", storage=tmp_path / "data")
        proc = subprocess.run(
            [*CLI, "--env", "test", "--config-dir", str(cfg), "--health-addr", f"127.0.0.1:{port}"],
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert proc.returncode == 2
    assert f"--health-addr 127.0.0.1:{port}: address already in use" in proc.stderr
    assert "Traceback" not in proc.stderr


class StuckWriter:
    """A writer whose disk hangs: it never returns from write()."""

    bytes_written = 0
    backlog_bytes = 0
    backlog_full = False

    async def write(self, batch: object) -> None:
        await asyncio.Event().wait()

    async def flush(self) -> None: ...

    async def close(self) -> None: ...


async def test_health_reports_a_stalled_pipeline() -> None:
    async def script(ws: web.WebSocketResponse, srv: ScriptedServer, _: int) -> None:
        for i in range(10):
            await srv.send(ws, frame(i))

    server = ScriptedServer(script)
    await server.start()
    stats = FeedStats("testfeed")
    runner = Runner("testfeed", [WebSocketConnector(server.url, label="t")], [StuckWriter()], stats=stats)
    health = HealthServer(runner, make_registry([stats]), stall_after=0.5)
    await health.start("127.0.0.1", 0)
    task = asyncio.create_task(runner.run())
    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{health.port}/health"
        async with http.get(url) as r:
            assert r.status == 200
        while runner.stats.messages < 10:
            await asyncio.sleep(0.02)
        await asyncio.sleep(1.0)  # the writer is stuck on the first batch; more frames wait
        async with http.get(url) as r:
            body = await r.json()
            assert r.status == 503 and body["status"] == "stalled", body
            assert "has not drained the queue" in body["problem"]
    task.cancel()
    await health.stop()
    await server.stop()
