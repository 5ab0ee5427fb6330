"""NATS JetStream writer: the scale-out path.

Each frame is published as its archive line (the exact bytes the file writer writes, without the
newline — so ``ts``, ``feed`` and the verbatim frame travel in the body) to

    <subject_prefix>.<feed>.<message type>.<market ticker>

with tokens made subject-safe (Kalshi tickers contain ``.``: it becomes ``_``, which tickers never
contain, so the mapping is reversible; a missing type or ticker is ``_``). Every publish is
acknowledged by JetStream (PubAck) and carries ``Nats-Msg-Id: <feed>.<run>.<n>`` — stable for the
frame, so a publish retried after a timeout or a NATS restart is stored once (JetStream's
duplicate window). At most ``max_pending`` publishes are in flight (pipelined: acknowledgements
return on one inbox subscription); unacknowledged frames are kept and re-published with the same
ids, and a failure raises ``WriteFailed`` so the runner retries while its bounded queue fills and
reading pauses — nothing is dropped, nothing grows without bound.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from nats.js.errors import NotFoundError

from ..errors import WriteFailed
from ..message import LineEncoder, Message

log = logging.getLogger(__name__)

_UNSAFE = re.compile(rb"[.\s*>]")
_TICKER_KEY = b'"market_ticker":"'


@functools.lru_cache(maxsize=65536)
def subject_token(raw: bytes | str) -> str:
    """A NATS subject token: no '.', whitespace, '*' or '>'; empty → '_'. (Cached: tickers repeat.)"""
    data = raw.encode() if isinstance(raw, str) else raw
    return _UNSAFE.sub(b"_", data).decode("utf-8", "replace") or "_"


def ticker_of(frame: bytes) -> bytes:
    """The first ``market_ticker`` value in a frame, found by a byte scan (no JSON parse)."""
    i = frame.find(_TICKER_KEY)
    if i < 0:
        return b""
    start = i + len(_TICKER_KEY)
    end = frame.find(b'"', start)
    return frame[start:end] if end > 0 else b""


@dataclass
class _Pending:
    subject: str
    payload: bytes
    sent: bool = False


class NatsWriter:
    def __init__(
        self,
        url: str,
        stream: str,
        subject_prefix: str = "ssmd",
        *,
        create_stream: bool = False,
        max_pending: int = 4096,
        ack_timeout: float = 5.0,
    ) -> None:
        self.url = url
        self.stream = stream
        self.prefix = subject_prefix
        self._create = create_stream
        self._max_pending = max_pending
        self._ack_timeout = ack_timeout
        self._encode_batch = LineEncoder().encode_batch
        self._subjects: dict[tuple[str, str, bytes], str] = {}
        self._run = uuid.uuid4().hex[:12]
        self._counter = 0
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._pending: dict[str, _Pending] = {}
        """Msg-Id → publish not yet acknowledged, in order."""
        self._bytes = 0
        self.acked = 0
        self._inbox = ""
        self._ack_sub: Any = None
        self._inflight = 0
        self._failures = 0
        self._room = asyncio.Event()
        self._settled = asyncio.Event()

    @property
    def bytes_written(self) -> int:
        return self._bytes

    async def _connect(self) -> JetStreamContext:
        if self._js is not None and self._nc is not None and self._nc.is_connected:
            return self._js
        if self._nc is not None and not self._nc.is_closed and not self._nc.is_connected:
            raise WriteFailed(f"NATS {self.url}: not connected (reconnecting)")
        try:
            if self._nc is None or self._nc.is_closed:
                self._nc = await nats.connect(
                    self.url,
                    connect_timeout=2,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    skip_subject_validation=True,  # subjects are built from sanitised tokens
                )
            js = self._nc.jetstream()
            await self._check_stream(js)
            if self._ack_sub is None:
                self._inbox = self._nc.new_inbox()
                self._ack_sub = await self._nc.subscribe(f"{self._inbox}.>", cb=self._on_ack)
        except WriteFailed:
            raise
        except Exception as exc:
            raise WriteFailed(f"NATS {self.url}: {exc or type(exc).__name__}") from exc
        self._js = js
        return js

    async def _check_stream(self, js: JetStreamContext) -> None:
        wanted = f"{self.prefix}.>"
        try:
            info = await js.stream_info(self.stream)
        except NotFoundError:
            if not self._create:
                raise WriteFailed(
                    f"NATS stream {self.stream!r} does not exist (create it with subjects {wanted!r}, "
                    "or set nats.create_stream: true)"
                ) from None
            await js.add_stream(StreamConfig(name=self.stream, subjects=[wanted], duplicate_window=120.0))
            log.info("created JetStream stream %s for %s", self.stream, wanted)
            return
        subjects = info.config.subjects or []
        if wanted not in subjects and f"{self.prefix}.*.*.*" not in subjects:
            raise WriteFailed(f"NATS stream {self.stream!r} does not cover {wanted!r} (its subjects: {subjects})")

    async def write(self, batch: Sequence[Message]) -> None:
        # One batch encoding, split into lines (encoded lines never contain a raw newline).
        data, _ = self._encode_batch(batch)
        lines = data.split(b"\n")
        subjects = self._subjects
        pending = self._pending
        for msg, line in zip(batch, lines, strict=False):
            self._counter += 1
            key = (msg.feed, msg.kind, ticker_of(msg.frame))
            subject = subjects.get(key)
            if subject is None:
                kind = subject_token(msg.kind) if msg.kind else "_"
                subject = subjects[key] = f"{self.prefix}.{subject_token(msg.feed)}.{kind}.{subject_token(key[2])}"
                if len(subjects) > 100_000:
                    subjects.clear()
            pending[f"{msg.feed}.{self._run}.{self._counter}"] = _Pending(subject, line)
        await self._publish()

    async def _publish(self) -> None:
        """Send every pending frame not yet in flight (first sends and retries), pipelined.

        Acknowledgements come back on one inbox subscription (``_on_ack``) instead of a future per
        message: nats-py's ``publish_async`` measured ~19k frames/s here, this several times more.
        """
        await self._connect()
        nc, inbox = self._nc, self._inbox
        assert nc is not None
        try:
            for msg_id, p in [(k, v) for k, v in self._pending.items() if not v.sent]:  # acks mutate _pending
                if not p.sent:
                    while self._inflight >= self._max_pending:
                        self._room.clear()
                        await asyncio.wait_for(self._room.wait(), self._ack_timeout)
                    p.sent = True
                    self._inflight += 1
                    await nc.publish(p.subject, p.payload, reply=f"{inbox}.{msg_id}", headers={"Nats-Msg-Id": msg_id})
        except Exception as exc:
            self._reset_inflight()
            raise WriteFailed(f"NATS {self.url}: publish failed: {exc or type(exc).__name__}") from exc

    async def _on_ack(self, msg: Msg) -> None:
        msg_id = msg.subject[len(self._inbox) + 1 :]
        p = self._pending.get(msg_id)
        if p is None or not p.sent:
            return
        self._inflight -= 1
        if b'"error"' in msg.data or not msg.data:
            p.sent = False  # rejected (or no stream): re-published on the next flush
            self._failures += 1
        else:
            del self._pending[msg_id]
            self._bytes += len(p.payload)
            self.acked += 1
        if self._inflight < self._max_pending // 2:
            self._room.set()
        if self._inflight == 0:
            self._settled.set()

    def _reset_inflight(self) -> None:
        for p in self._pending.values():
            p.sent = False
        self._inflight = 0
        self._room.set()
        self._settled.set()

    async def _collect(self) -> None:
        """Wait until every publish in flight is acknowledged; keep what was not (for a retry)."""
        if self._inflight:
            self._settled.clear()
            try:
                await asyncio.wait_for(self._settled.wait(), self._ack_timeout)
            except TimeoutError:
                self._reset_inflight()
        if self._pending or self._failures:
            self._failures = 0
            if self._pending:
                raise WriteFailed(f"NATS {self.url}: {len(self._pending)} publish(es) not acknowledged yet")

    async def flush(self) -> None:
        if self._pending:
            await self._publish()
            await self._collect()

    async def close(self) -> None:
        await self.flush()
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.drain()
