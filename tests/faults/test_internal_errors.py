"""An unexpected exception anywhere — a connector, a writer, the drain loop — is a bug the recorder
must survive loudly: logged with its traceback, counted as ``internal``, shown by /health (503)
and /ready, the component restarted with backoff, and no received frame lost."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import pytest

from ssmd_connector.archive.line import decode_frame
from ssmd_connector.backoff import Backoff
from ssmd_connector.connectors.websocket import WebSocketConnector
from ssmd_connector.interfaces import FrameSink
from ssmd_connector.kalshi import client, wire
from ssmd_connector.message import Message
from ssmd_connector.metrics import FeedStats, make_registry
from ssmd_connector.runner import Runner
from ssmd_connector.server import HealthServer
from ssmd_connector.sim import SimConfig, SimServer
from ssmd_connector.writers.jsonl import JsonlWriter

from ..helpers import ScriptedServer, frame, read_lines
from ..kalshi_helpers import KEY, KEY_ID, eventually, record
from .harness import streaming, until


class BuggyOnce(WebSocketConnector):
    """A connector with a bug on its first run (as if a library raised something unforeseen)."""

    runs = 0

    async def run(self, sink: FrameSink) -> None:
        self.runs += 1
        if self.runs == 1:
            raise KeyError("an unforeseen failure")
        await super().run(sink)


async def _health(port: int) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/health") as r:
        return r.status, await r.json()


async def _setup(
    tmp_path: Path, connector: WebSocketConnector, *writers: JsonlWriter
) -> tuple[Runner, HealthServer, asyncio.Task[None]]:
    stats = FeedStats("testfeed")
    runner = Runner("testfeed", [connector], writers, stats=stats, backoff=Backoff(0.2, 0.5), flush_interval=0.2)
    health = HealthServer(runner, make_registry([stats]))
    await health.start("127.0.0.1", 0)
    return runner, health, asyncio.create_task(runner.run())


async def test_a_connector_that_raises_is_reported_and_restarted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Row 6's silent death: a connection task that raised anything but the expected errors
    died with no log line, no metric, /health 200 and /ready "not connected yet" forever."""
    server = ScriptedServer(streaming(frame))
    await server.start()
    connector = BuggyOnce(server.url, label="testfeed")
    with caplog.at_level(logging.ERROR):
        runner, health, task = await _setup(tmp_path, connector, JsonlWriter(tmp_path))
        await until(lambda: runner.stats.errors["internal"] == 1, what="the internal error counted")
        status, body = await _health(health.port)
        assert status == 503 and "KeyError" in str(body["problem"])
        assert any("KeyError" in r for r in runner.not_ready_reasons())
        await until(lambda: runner.stats.messages > 200, what="recording after the restart")
    runner.stop()
    await task
    await health.stop()
    await server.stop()
    assert connector.runs == 2
    assert any(r.exc_info and "an unforeseen failure" in r.getMessage() for r in caplog.records)
    assert [decode_frame(x) for x in read_lines(tmp_path)] == server.sent[: server.client_closed[0]]


class ExplodingWriter(JsonlWriter):
    """The real writer, but its first ``write`` raises something other than ``WriteFailed``."""

    failures = 0

    async def write(self, batch: Sequence[Message]) -> None:
        if self.failures == 0:
            self.failures += 1
            raise TypeError("a bug in a writer")
        await super().write(batch)


async def test_a_writer_that_raises_is_retried_with_the_same_frames(tmp_path: Path) -> None:
    """The writer that raised is given the same frames again; a writer beside it that took them
    is not (so it holds no duplicates)."""
    server = ScriptedServer(streaming(frame))
    await server.start()
    good = tmp_path / "good"
    runner, health, task = await _setup(
        tmp_path, WebSocketConnector(server.url, label="testfeed"), ExplodingWriter(tmp_path / "bad"), JsonlWriter(good)
    )
    await until(lambda: runner.stats.errors["internal"] == 1)
    status, body = await _health(health.port)
    assert status == 503 and "internal error in ExplodingWriter.write: TypeError" in str(body["problem"])
    await until(lambda: len(read_lines(tmp_path / "bad")) > 500, what="writing again")
    runner.stop()
    await task
    await health.stop()
    await server.stop()
    assert runner.stats.errors["write"] == 0  # a bug, not a storage outage
    sent = server.sent[: server.client_closed[0]]
    assert [decode_frame(x) for x in read_lines(tmp_path / "bad")] == sent
    assert [decode_frame(x) for x in read_lines(good)] == sent


class BrokenGauge(JsonlWriter):
    """Its backlog gauge fails once: an exception inside the drain loop itself."""

    broken = True

    @property
    def backlog_bytes(self) -> int:
        if self.broken and self.bytes_written:
            self.broken = False
            raise RuntimeError("the drain loop hit a bug")
        return super().backlog_bytes


async def test_the_drain_loop_is_restarted_and_loses_and_repeats_nothing(tmp_path: Path) -> None:
    server = ScriptedServer(streaming(frame))
    await server.start()
    runner, health, task = await _setup(
        tmp_path, WebSocketConnector(server.url, label="testfeed"), BrokenGauge(tmp_path)
    )
    await until(lambda: runner.stats.errors["internal"] == 1)
    status, body = await _health(health.port)
    assert status == 503 and "the writer task" in str(body["problem"])
    count = len(read_lines(tmp_path))
    await until(lambda: len(read_lines(tmp_path)) > count + 500, what="draining again")
    runner.stop()
    await task
    await health.stop()
    await server.stop()
    assert [decode_frame(x) for x in read_lines(tmp_path)] == server.sent[: server.client_closed[0]]


async def test_a_bug_while_handling_a_kalshi_frame_keeps_the_frame_and_reconnects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception raised in the socket callback (here: while handling a ticker message) closes
    the connection inside picows; it used to be a quiet disconnect. The frame is archived first."""
    sim = SimServer(SimConfig(port=0, markets=6, rate=800, public_keys={KEY_ID: KEY.public_key()}))
    await sim.start()
    original = client.ClientSession.receive
    calls = 0

    def buggy(self: client.ClientSession, frame: bytes, env: wire.Envelope | None, now: float) -> object:
        nonlocal calls
        calls += 1
        if calls == 100:
            raise ZeroDivisionError("a bug while handling a frame")
        return original(self, frame, env, now)

    monkeypatch.setattr(client.ClientSession, "receive", buggy)
    s = await record(
        tmp_path, sim, "  channels: [ticker, trade]\n  markets: [" + ", ".join(sim.model.open_tickers) + "]\n"
    )
    await eventually(lambda: s.recorder.runner.stats.errors["internal"] == 1, what="internal error")
    await eventually(lambda: s.recorder.runner.stats.connected and calls > 150, what="reconnected", timeout=20)
    await s.stop()
    await sim.stop()
    assert s.recorder.runner.stats.errors["disconnect"] == 0
    assert any("internal error" in str(e.get("reason")) for e in s.ledger() if e["event"] == "disconnect")
    assert any(e["event"] == "incident" and e["kind"] == "internal" for e in s.ledger())


@pytest.fixture(autouse=True)
def _quiet_aiohttp() -> None:
    logging.getLogger("aiohttp").setLevel(logging.CRITICAL)
