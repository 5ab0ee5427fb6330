"""A deliberately independent Kalshi client for testing the simulator: aiohttp, not our picows stack."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from ssmd_connector.kalshi.auth import Signer
from ssmd_connector.sim import SimServer


class SimClient:
    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.http = http
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._next = 1

    @classmethod
    async def connect(cls, sim: SimServer, signer: Signer | None = None) -> SimClient:
        http = aiohttp.ClientSession()
        headers = signer.headers("GET", "/trade-api/ws/v2") if signer else {}
        try:
            ws = await http.ws_connect(sim.ws_url, headers=headers, autoping=False)
        except BaseException:
            await http.close()
            raise
        return cls(http, ws)

    async def cmd(self, cmd: str, params: dict[str, Any] | None = None) -> int:
        cmd_id = self._next
        self._next += 1
        body: dict[str, Any] = {"id": cmd_id, "cmd": cmd}
        if params is not None:
            body["params"] = params
        await self.ws.send_str(json.dumps(body))
        return cmd_id

    async def until(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 5.0) -> dict[str, Any]:
        """Read (and keep) frames until one satisfies ``pred``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("expected frame did not arrive")
            try:
                msg = await self.ws.receive(timeout=left)
            except TimeoutError:
                raise AssertionError("expected frame did not arrive") from None
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.raw.append(msg.data)
                try:
                    frame: dict[str, Any] = json.loads(msg.data)
                except json.JSONDecodeError:
                    frame = {"_not_json": msg.data}
                self.frames.append(frame)
                if pred(frame):
                    return frame
            elif msg.type == aiohttp.WSMsgType.PING:
                self.frames.append({"_ping": msg.data.decode()})
                await self.ws.pong(msg.data)
                if pred({"_ping": msg.data.decode()}):
                    return {"_ping": msg.data.decode()}
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                raise AssertionError(f"connection ended: {msg.type}")

    async def collect(self, seconds: float) -> None:
        with contextlib.suppress(AssertionError):
            await self.until(lambda f: False, seconds)

    async def collect_until_closed(self, timeout: float = 5.0) -> None:
        await self.until(lambda f: False, timeout)

    async def close(self) -> None:
        await self.ws.close()
        await self.http.close()


def reply_to(cmd_id: int, kind: str | None = None) -> Callable[[dict[str, Any]], bool]:
    return lambda f: f.get("id") == cmd_id and (kind is None or f.get("type") == kind)


async def settle(seconds: float = 0.05) -> None:
    await asyncio.sleep(seconds)
