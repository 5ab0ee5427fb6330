"""Test helpers: a real WebSocket server on 127.0.0.1 and config-directory builders."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import textwrap
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import WSMsgType, web

Script = Callable[[web.WebSocketResponse, "ScriptedServer", int], Coroutine[Any, Any, None]]


@dataclass
class ScriptedServer:
    """A WebSocket server whose behaviour per connection is a coroutine (``script``).

    Records every frame it sent, in order, across connections, so tests can compare the
    archive against the truth.
    """

    script: Script
    sent: list[bytes] = field(default_factory=list)
    connections: int = 0
    headers_seen: list[dict[str, str]] = field(default_factory=list)
    client_closed: list[int] = field(default_factory=list)
    """len(sent) at the moment each client close frame arrived."""
    port: int = 0
    _runner: web.AppRunner | None = None

    async def _handler(self, request: web.Request) -> web.StreamResponse:
        self.headers_seen.append(dict(request.headers))
        ws = web.WebSocketResponse(heartbeat=None, autoping=True)
        await ws.prepare(request)
        index = self.connections
        self.connections += 1
        task = asyncio.create_task(self.script(ws, self, index))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.CLOSE:
                    break
        finally:
            self.client_closed.append(len(self.sent))
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionResetError, RuntimeError):
                await task
        return ws

    async def send(self, ws: web.WebSocketResponse, frame: bytes, binary: bool = False) -> None:
        if binary:
            await ws.send_bytes(frame)
        else:
            await ws.send_str(frame.decode())
        self.sent.append(frame)

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_get("/ws", self._handler)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        self.port = server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def frame(i: int) -> bytes:
    return msgspec.json.encode({"type": "tick", "i": i, "pad": "x" * (i % 7)})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(
    root: Path,
    *,
    endpoint: str = "ws://127.0.0.1:9/ws",
    env: str | None = None,
    feed: str | None = None,
    env_name: str = "test",
    feed_name: str = "testfeed",
    storage: Path | None = None,
) -> Path:
    """Write a working config dir; ``env``/``feed`` override a file's whole text."""
    (root / "environments").mkdir(parents=True, exist_ok=True)
    (root / "feeds").mkdir(parents=True, exist_ok=True)
    storage = storage or root / "data"
    (root / "environments" / f"{env_name}.yaml").write_text(
        textwrap.dedent(env)
        if env is not None
        else f"name: {env_name}\nfeed: {feed_name}\nkeys: []\nstorage:\n  type: local\n  path: {storage}\n"
    )
    (root / "feeds" / f"{feed_name}.yaml").write_text(
        textwrap.dedent(feed)
        if feed is not None
        else f"name: {feed_name}\ntype: websocket\nversions:\n"
        f"  - version: '1'\n    endpoint: {endpoint}\n    active: true\n"
    )
    return root


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env


_SCRIPT = Path(sys.executable).parent / "ssmd-connector"
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "ssmd_connector.cli"]
"""The installed console script, exactly as a user runs it."""


def read_lines(root: Path, feed: str = "testfeed") -> list[bytes]:
    out: list[bytes] = []
    for path in sorted(root.glob(f"*/{feed}.jsonl")):
        out += path.read_bytes().splitlines()
    return out


def archiver_cmd(cfg: Path, env: str = "arch", health_port: int | None = None) -> list[str]:
    """``ssmd archive`` as a user starts it (with ``--health-addr`` on ``health_port``, if given)."""
    cmd = [str(Path(sys.executable).parent / "ssmd"), "archive", "--config-dir", str(cfg), "--env", env]
    return cmd if health_port is None else [*cmd, "--health-addr", f"127.0.0.1:{health_port}"]
