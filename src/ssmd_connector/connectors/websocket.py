"""A WebSocket connection over picows, and the generic connector built on it.

Why picows: on these machines a bare receive loop with picows is several times faster than with
``websockets`` or aiohttp (see ``bench/``), and the receive loop is the recorder's hot path.
picows is callback-based and low level, so this module adds what a recorder needs on top:

* every frame goes through one callback (pings and pongs included — picows' automatic ping/pong
  is off), so the end of each socket read is known: frames of a read share one receive stamp and
  are handed on together;
* reassembly of fragmented messages;
* liveness by what *arrives*: a ping after ``idle`` seconds without incoming data, and the
  connection is dropped if nothing at all arrives within ``reply`` seconds more;
* a readable disconnect reason, and a graceful close that still delivers everything the peer sent
  before our close frame.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from picows import (
    WSCloseCode,
    WSError,
    WSFrame,
    WSInvalidStatusError,
    WSListener,
    WSMsgType,
    WSTransport,
    ws_connect,
)

from ..errors import AuthenticationFailed, ConnectionFailed, Disconnected
from ..interfaces import FrameSink
from ..message import Message
from ..settings import DEFAULT_RECEIVE_BUFFER

log = logging.getLogger(__name__)

OnRead = Callable[[list[bytes], int, list[int]], None]
"""Receives the complete messages of one socket read: (payloads, the read's receive stamp in ns,
indices of the binary ones — usually empty)."""

_TEXT = WSMsgType.TEXT
_BINARY = WSMsgType.BINARY
_CONT = WSMsgType.CONTINUATION
_CLOSE = WSMsgType.CLOSE
_PING = WSMsgType.PING


@dataclass(frozen=True)
class Liveness:
    """Ping after ``idle`` s without incoming data; give up after ``reply`` s more of silence."""

    idle: float = 15.0
    reply: float = 15.0

    @classmethod
    def stale_after(cls, seconds: float) -> Liveness:
        return cls(idle=seconds / 2, reply=seconds / 2)


MAX_FRAME_BYTES = 64 << 20
"""The largest message (after reassembly of fragments) a connection accepts. A larger one closes
the connection with close code 1009 and a reason naming the size; the connection is then
re-opened as after any disconnect (the ledger and ``ssmd_errors_total{kind="disconnect"}`` show
it). Kalshi's largest messages, order-book snapshots of deep books, are well under a megabyte."""


class _Listener(WSListener):
    """Collects the messages of each socket read and hands them on when the read is done."""

    def __init__(
        self, on_read: OnRead, sink: FrameSink, receive_buffer: int = 0, max_message: int = MAX_FRAME_BYTES
    ) -> None:
        self._on_read = on_read
        self._sink = sink
        self._receive_buffer = receive_buffer
        self._max_message = max_message
        self._fragments_size = 0
        self._stamp = sink.stamp
        self._read_ns = 0
        self._payloads: list[bytes] = []
        self._binary: list[int] = []
        self._fragments: list[bytes] = []
        self._fragment_binary = False
        self.transport: WSTransport | None = None
        self.last_read = time.monotonic()
        self.closing_by_us = False
        self.stale_reason: str | None = None
        """Why we dropped the connection ourselves (silence, an oversized message), for the log."""
        self.writes_paused_since: float | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        if self._receive_buffer:
            sock = transport.underlying_transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._receive_buffer)
        self._sink.attach(transport.underlying_transport)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self._end_read()  # nothing of the last read stays behind
        self._sink.detach(transport.underlying_transport)

    def pause_writing(self) -> None:  # the socket's send buffer is above its high-water mark
        if self.writes_paused_since is None:
            self.writes_paused_since = time.monotonic()

    def resume_writing(self) -> None:
        self.writes_paused_since = None

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == _TEXT and frame.fin and not self._fragments:  # nearly every frame
            if not self._read_ns:
                self._read_ns = self._stamp()
            self._payloads.append(frame.get_payload_as_bytes())
        else:
            self._other(transport, frame)
        if frame.last_in_buffer:
            self._end_read()

    def _other(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind in (_BINARY, _TEXT):
            if self._fragments:  # a new message before the fragmented one ended: a protocol error
                self._fragments = []
                self.stale_reason = (
                    "protocol error from the peer: a new message began before a fragmented one was finished "
                    "(the unfinished one is not stored; what arrived after it is); closed with 1002"
                )
                transport.send_close(WSCloseCode.PROTOCOL_ERROR, b"unfinished fragmented message")
                transport.disconnect()
            if frame.fin:
                self._message(frame.get_payload_as_bytes(), kind == _BINARY)
            else:
                self._fragment_binary = kind == _BINARY
                self._fragments = [frame.get_payload_as_bytes()]
                self._fragments_size = len(self._fragments[0])
        elif kind == _CONT:
            payload = frame.get_payload_as_bytes()
            self._fragments_size += len(payload)
            if self._fragments_size > self._max_message:
                # picows bounds each frame; a message in many fragments is bounded here.
                self._fragments = []
                self.stale_reason = (
                    f"a fragmented message grew past the {self._max_message:,}-byte limit (MAX_FRAME_BYTES): "
                    "not stored; closed with 1009 (message too big)"
                )
                transport.send_close(WSCloseCode.MESSAGE_TOO_BIG, b"message too big")
                transport.disconnect()
                return
            self._fragments.append(payload)
            if frame.fin:
                data = b"".join(self._fragments)
                self._fragments = []
                self._message(data, self._fragment_binary)
        elif kind == _PING:
            if not transport.is_close_frame_sent:
                transport.send_pong(frame.get_payload_as_bytes())
        elif kind == _CLOSE:
            if not transport.is_close_frame_sent:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()

    def _message(self, data: bytes, binary: bool) -> None:
        if not self._read_ns:  # (control frames alone never read the clock)
            self._read_ns = self._stamp()
        if binary:
            self._binary.append(len(self._payloads))
        self._payloads.append(data)

    def _end_read(self) -> None:
        payloads = self._payloads
        if payloads:
            binary = self._binary
            self._payloads = []
            if binary:
                self._binary = []
            self._on_read(payloads, self._read_ns, binary)
        self._read_ns = 0
        self.last_read = time.monotonic()


class WebSocketConnection:
    """One WebSocket connection: open, receive into ``on_frame``, send, close gracefully."""

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        liveness: Liveness = Liveness(),
        handshake_timeout: float = 10.0,
        max_frame_size: int = MAX_FRAME_BYTES,
        receive_buffer: int = DEFAULT_RECEIVE_BUFFER,
        credentials_hint: str = "check the credentials",
    ) -> None:
        self.url = url
        self._credentials_hint = credentials_hint
        self._receive_buffer = receive_buffer
        self._headers = dict(headers or {})
        self._liveness = liveness
        self._handshake_timeout = handshake_timeout
        self._max_frame_size = max_frame_size
        self._listener: _Listener | None = None
        self._transport: WSTransport | None = None
        self._watchdog: asyncio.Task[None] | None = None

    @property
    def is_open(self) -> bool:
        return self._transport is not None and not self._transport.is_disconnected

    async def open(self, on_read: OnRead, sink: FrameSink) -> None:
        """Connect; each socket read's messages go to ``on_read``, stamped by ``sink``'s clock."""
        try:
            transport, listener = await ws_connect(
                lambda: _Listener(on_read, sink, self._receive_buffer, self._max_frame_size),
                self.url,
                websocket_handshake_timeout=self._handshake_timeout,
                enable_auto_ping=False,
                enable_auto_pong=False,
                max_frame_size=self._max_frame_size,
                extra_headers=self._headers,
                max_redirects=0,
                logger_name="ssmd",
            )
        except WSInvalidStatusError as exc:
            status = exc.response.status if exc.response is not None else None
            code = int(status) if status is not None else 0
            if code in (401, 403):
                raise AuthenticationFailed(
                    f"{self.url}: the server rejected the handshake with HTTP {code} ({self._credentials_hint})"
                ) from None
            raise ConnectionFailed(f"{self.url}: unexpected HTTP status {code} on WebSocket upgrade") from None
        except (OSError, TimeoutError, WSError, ValueError) as exc:  # ValueError: e.g. a bad port or host
            raise ConnectionFailed(f"cannot connect to {self.url}: {_describe(exc)}") from None
        assert isinstance(listener, _Listener)
        self._transport = transport
        self._listener = listener
        self._watchdog = asyncio.create_task(self._watch(transport, listener))

    async def _watch(self, transport: WSTransport, listener: _Listener) -> None:
        """Liveness by what arrives: ping when idle, drop the connection when nothing answers."""
        idle, reply = self._liveness.idle, self._liveness.reply
        pinged_at = 0.0
        while not transport.is_disconnected:
            await asyncio.sleep(min(idle, reply) / 4)
            now = time.monotonic()
            silent = now - listener.last_read
            if pinged_at and listener.last_read < pinged_at and now - pinged_at >= reply:
                listener.stale_reason = (
                    f"peer has not replied to ping within {reply:g}s (nothing received for {silent:.1f}s)"
                )
                transport.send_close(WSCloseCode.GOING_AWAY, b"stale connection")
                transport.disconnect(graceful=False)
                return
            if silent >= idle and (not pinged_at or listener.last_read >= pinged_at):
                transport.send_ping(b"ssmd")
                pinged_at = now

    def send_text(self, data: bytes) -> None:
        if self._transport is None or self._transport.is_disconnected:
            raise Disconnected(f"{self.url}: cannot send, connection is closed")
        self._transport.send(_TEXT, data)

    def send_stalled_for(self, now: float) -> float:
        """Seconds the peer has left our sends unread (send buffer full), 0 when it is reading."""
        since = self._listener.writes_paused_since if self._listener is not None else None
        return 0.0 if since is None else now - since

    async def wait_closed(self) -> str:
        """Wait until the connection ends; returns a human-readable reason."""
        assert self._transport is not None and self._listener is not None
        transport, listener = self._transport, self._listener
        try:
            await transport.wait_disconnected()
        except WSError as exc:  # the peer broke the protocol (an oversized frame, a bad opcode…)
            too_big = "exceeding max allowed size" in str(exc)
            return f"closed on a protocol error: {_describe(exc)}" + (
                f" (the limit is {self._max_frame_size:,} bytes: MAX_FRAME_BYTES)" if too_big else ""
            )
        # Anything else was raised by our own callback — a bug: picows closed the connection and
        # re-raises it here, for the runner to report as an internal error (traceback, /health).
        finally:
            if self._watchdog is not None:
                self._watchdog.cancel()
        return self._reason(transport, listener)

    def _reason(self, transport: WSTransport, listener: _Listener) -> str:
        if listener.stale_reason is not None:
            return listener.stale_reason
        hs = transport.close_handshake
        if hs is not None and hs.sent is not None and not hs.recv_then_sent and not listener.closing_by_us:
            # picows closes on its own on protocol errors (e.g. an oversized frame).
            return f"closed by us: {hs.sent.reason or hs.sent.code}"
        if hs is not None and hs.recv is not None:
            code = hs.recv.code
            code_num = code.value if isinstance(code, WSCloseCode) else int(code)
            code_text = code.name if isinstance(code, WSCloseCode) else ""
            detail = f": {hs.recv.reason}" if hs.recv.reason else ""
            return f"closed by server (code {code_num} {code_text}{detail})"
        silent = time.monotonic() - listener.last_read
        return f"connection lost without a close frame (last data {silent:.1f}s ago)"

    async def close(self, timeout: float = 5.0) -> None:
        """Send a close frame and keep receiving until the server's close arrives (or timeout).

        Everything the server sent before it saw our close is delivered first, so stopping the
        recorder loses nothing that was already on the wire.
        """
        transport, listener = self._transport, self._listener
        if transport is None or listener is None or transport.is_disconnected:
            return
        listener.closing_by_us = True
        transport.send_close(WSCloseCode.OK, b"recorder shutting down")
        try:
            await asyncio.wait_for(asyncio.shield(transport.wait_disconnected()), timeout)
        except TimeoutError:
            log.warning("%s: no close reply within %.1fs; dropping the connection", self.url, timeout)
            transport.disconnect(graceful=False)
        except Exception as exc:  # the connection's end is reported by wait_closed, which the connector awaits
            log.debug("%s: while waiting for the close reply: %r", self.url, exc)

    def abort(self) -> None:
        if self._transport is not None and not self._transport.is_disconnected:
            self._transport.disconnect(graceful=False)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class WebSocketConnector:
    """The generic connector: records every message of any ``ws://``/``wss://`` endpoint."""

    def __init__(
        self,
        url: str,
        *,
        label: str = "ws",
        headers: Mapping[str, str] | None = None,
        liveness: Liveness = Liveness(),
        receive_buffer: int = DEFAULT_RECEIVE_BUFFER,
        credentials_hint: str = "check the credentials",
    ) -> None:
        self._label = label
        self._conn = WebSocketConnection(
            url, headers=headers, liveness=liveness, receive_buffer=receive_buffer, credentials_hint=credentials_hint
        )
        self._stopping = False

    @property
    def label(self) -> str:
        return self._label

    @property
    def connected(self) -> bool:
        return self._conn.is_open

    async def run(self, sink: FrameSink) -> None:
        self._stopping = False
        feed = sink.feed

        def on_read(payloads: list[bytes], received_ns: int, binary: list[int]) -> None:
            if binary:
                at = set(binary)
                sink.put([Message(received_ns, feed, p, binary=i in at) for i, p in enumerate(payloads)])
            else:
                sink.put([Message(received_ns, feed, p) for p in payloads])

        await self._conn.open(on_read, sink)
        if self._stopping:  # stop() arrived while we were connecting
            await self._conn.close()
            return
        log.info("%s: connected to %s", self._label, self._conn.url)
        reason = await self._conn.wait_closed()
        if self._stopping:
            return
        raise Disconnected(f"{self._conn.url}: {reason}")

    async def stop(self) -> None:
        self._stopping = True
        await self._conn.close()
