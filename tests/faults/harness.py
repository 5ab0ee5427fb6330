"""A real ``ssmd-connector`` process recording a real WebSocket server, for the fault tests."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from ..helpers import CLI, ScriptedServer, cli_env, free_port, write_config
from ..kalshi_helpers import eventually

SSMD = str(Path(sys.executable).parent / "ssmd")


def ssmd(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The ``ssmd`` tools, as a user runs them."""
    return subprocess.run([SSMD, *args], capture_output=True, text=True, timeout=120, env=env, cwd=cwd, check=False)


def recorder_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 15
) -> subprocess.CompletedProcess[str]:
    """``ssmd-connector`` expected to stop on its own (a configuration error): a short timeout, so
    a regression that starts recording fails fast instead of hanging the suite."""
    try:
        return subprocess.run(
            [*CLI, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"ssmd-connector {' '.join(args)} kept running: {exc.stderr!r}") from None


RUNNING: list[asyncio.subprocess.Process] = []
"""Recorders the tests started: killed after each test, so a failed test leaves none behind."""


async def until(cond: Callable[[], object], timeout: float = 20.0, what: str = "condition") -> None:
    await eventually(cond, timeout, what)


def streaming(frames: Callable[[int], bytes], per_ms: int = 2) -> Callable[..., Any]:
    """A server script sending ``frames(i)`` for i = 0, 1, … about ``per_ms`` a millisecond."""

    async def script(ws: web.WebSocketResponse, srv: ScriptedServer, _: int) -> None:
        i = 0
        while True:
            await srv.send(ws, frames(i))
            i += 1
            if i % per_ms == 0:
                await asyncio.sleep(0.001)

    return script


@dataclass
class Recording:
    proc: asyncio.subprocess.Process
    data: Path
    port: int
    stderr_path: Path

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    async def get(self, path: str) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{self.port}{path}") as r:
            body = await r.text()
            return r.status, (json.loads(body) if path != "/metrics" else body)

    async def metric(self, name: str, **labels: str) -> float:
        from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

        _, text = await self.get("/metrics")
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return float(s.value)
        raise AssertionError(f"no sample {name} {labels}")

    async def stop(self, timeout: float = 30.0) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise AssertionError(f"the recorder did not stop within {timeout}s:\n{self.stderr[-3000:]}") from None

    def ledger(self, feed: str = "testfeed") -> list[dict[str, Any]]:
        out = []
        for path in sorted(self.data.glob(f"*/{feed}.events.jsonl")):
            out += [json.loads(line) for line in path.read_text().splitlines() if line]
        return out


async def start_recording(
    tmp_path: Path,
    endpoint: str,
    *,
    env: str | None = None,
    feed: str | None = None,
    feed_name: str = "testfeed",
    environ: dict[str, str] | None = None,
    prefix: Sequence[str] = (),
    preexec_fn: Callable[[], None] | None = None,
    data: Path | None = None,
    wait_healthy: bool = True,
) -> Recording:
    """``ssmd-connector`` on a fresh config (``env``/``feed`` replace the files' text), health on
    a free port; waits until it answers ``/health``."""
    data = data or tmp_path / "data"
    cfg = write_config(tmp_path / "cfg", endpoint=endpoint, storage=data, env=env, feed=feed, feed_name=feed_name)
    port = free_port()
    stderr_path = tmp_path / "stderr.log"
    with stderr_path.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            *prefix,
            *CLI,
            "--env",
            "test",
            "--config-dir",
            str(cfg),
            "--health-addr",
            f"127.0.0.1:{port}",
            env=environ or cli_env(),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=err,
            preexec_fn=preexec_fn,
        )
    RUNNING.append(proc)
    rec = Recording(proc, data, port, stderr_path)
    if wait_healthy:
        deadline = time.monotonic() + 30
        while True:
            if proc.returncode is not None:
                raise AssertionError(f"the recorder exited with {proc.returncode}:\n{rec.stderr[-3000:]}")
            try:
                await rec.get("/health")
                break
            except aiohttp.ClientError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
    return rec


def unshare_available() -> str | None:
    """Why tests that mount a filesystem of their own cannot run here, or ``None``."""
    if sys.platform != "linux":
        return "needs Linux mount namespaces"
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs tmpfs /mnt 2>/dev/null || mount -t tmpfs tmpfs /tmp"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        return (
            "needs an unprivileged user and mount namespace (`unshare -rm`) to mount a tmpfs of its own: "
            f"{probe.stderr.strip() or 'exit ' + str(probe.returncode)}"
        )
    return None


async def rejecting_server(port: int = 0) -> tuple[web.AppRunner, int]:
    """An HTTP server answering every WebSocket upgrade with 401 (a handshake rejected)."""

    async def reject(_request: web.Request) -> web.Response:
        return web.Response(status=401)

    app = web.Application()
    app.router.add_get("/ws", reject)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    return runner, port or site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


RawScript = Callable[[asyncio.StreamWriter, int], Awaitable[None]]


async def raw_websocket_server(script: RawScript) -> tuple[asyncio.Server, list[int], str]:
    """A WebSocket server that writes raw frames — what a library would refuse to send (frames
    over the limit, broken fragmentation). ``script(writer, n)`` runs on the n-th connection after
    the handshake; returns the server, the connection numbers seen so far, and its URL."""
    accepted: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key")
        )
        accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n")
        writer.write(b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        n = len(accepted)
        accepted.append(n)
        try:
            await script(writer, n)
            while first := await reader.read(1):  # (client frames are masked; only the opcode matters)
                if first == b"\x88":  # a close frame: answer it, as a peer should
                    writer.write(b"\x88\x00")
                    break
                await reader.read(1 << 16)
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, accepted, f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/ws"


def ws_frame(first: int, payload: bytes) -> bytes:
    """A server-to-client WebSocket frame: ``first`` is the FIN bit and opcode (0x81 a whole text
    message, 0x01 its first fragment, 0x00 a continuation)."""
    n = len(payload)
    if n < 126:
        head = bytes((first, n))
    elif n < 65536:
        head = bytes((first, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((first, 127)) + n.to_bytes(8, "big")
    return head + payload
