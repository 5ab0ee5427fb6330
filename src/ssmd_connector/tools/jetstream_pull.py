"""Pulling from a JetStream consumer with requests kept in flight.

Why not nats-py's ``fetch``: it waits for each message with its own timeout and task, and asks
for the next batch only once the previous one is in hand — the archiver spent most of its time
idle and reached ~25k frames/s. Here one subscription callback appends arriving messages to a
buffer while up to ``depth`` pull requests (JetStream's documented ``CONSUMER.MSG.NEXT`` API) are
outstanding, so the server keeps sending while we write and fsync.

A request ends when its ``batch`` messages have arrived or the server sends a status message
(404 no messages, 408 expired, 409 ...). Requests are served in order, so each arrival counts
against the oldest. A request the server forgot (it restarted) is given up after its expiry plus a
grace period and asked for again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

_GRACE = 2.0


def stream_sequence(reply: str) -> int:
    """The stream sequence in a JetStream ack subject (both the v1 and the v2, domain-aware form)."""
    tokens = reply.split(".")
    if len(tokens) < 9 or tokens[0] != "$JS" or tokens[1] != "ACK":
        raise ValueError(f"not a JetStream ack subject: {reply!r}")
    return int(tokens[5] if len(tokens) == 9 else tokens[7])


class Puller:
    def __init__(
        self, nc: Client, stream: str, consumer: str, batch: int, *, depth: int = 2, expires: float = 5.0
    ) -> None:
        self._nc = nc
        self._api = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._batch = batch
        self._depth = depth
        self._expires = expires
        self._request = msgspec.json.encode({"batch": batch, "expires": int(expires * 1e9)})
        self._inbox = nc.new_inbox()
        self._requests: deque[list[float]] = deque()
        """Outstanding requests, oldest first: [messages still due, time sent]."""
        self._buffer: list[Msg] = []
        self._arrived = asyncio.Event()
        self._sub: Subscription | None = None

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(self._inbox, cb=self._on_msg)
        await self._refill()

    async def take(self, timeout: float) -> list[Msg]:
        """The messages that arrived so far (waiting up to ``timeout`` for the first), in order."""
        if not self._buffer:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout)
        await self._refill()
        out, self._buffer = self._buffer, []
        return out

    async def _on_msg(self, msg: Msg) -> None:
        requests = self._requests
        if msg.headers and "Status" in msg.headers:
            if requests:
                requests.popleft()  # the oldest request is over
        else:
            self._buffer.append(msg)
            if requests:
                requests[0][0] -= 1
                if requests[0][0] <= 0:
                    requests.popleft()
        self._arrived.set()

    async def _refill(self) -> None:
        if not self._nc.is_connected:
            return
        now = time.monotonic()
        requests = self._requests
        while requests and now - requests[0][1] > self._expires + _GRACE:
            requests.popleft()  # never answered: lost with a server restart
        while len(requests) < self._depth:
            requests.append([self._batch, now])
            await self._nc.publish(self._api, self._request, reply=self._inbox)

    async def stop(self) -> None:
        if self._sub is not None and not self._nc.is_closed:
            await self._sub.unsubscribe()
