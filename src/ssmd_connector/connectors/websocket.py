"""A WebSocket connection over picows, and the generic connector built on it.

Why picows: on these machines a bare receive loop with picows is ~8x faster than ``websockets``
and ~1.6x faster than aiohttp (see ``bench/``), and the receive loop is the recorder's hot path.
picows is callback-based and low level, so this module adds what a recorder needs on top:
reassembly of fragmented messages, a readable disconnect reason, liveness by what *arrives*
(a ping after ``idle`` seconds of silence, a disconnect if nothing answers within ``reply``),
and a graceful close that still delivers everything the peer sent before our close.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from picows import (
    WSAutoPingStrategy,
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

log = logging.getLogger(__name__)

OnFrame = Callable[[bytes, bool], object]
"""Receives each complete message: (payload, is_binary)."""

_TEXT = WSMsgType.TEXT
_BINARY = WSMsgType.BINARY
_CONT = WSMsgType.CONTINUATION
_CLOSE = WSMsgType.CLOSE


@dataclass(frozen=True)
class Liveness:
    """Ping after ``idle`` s without incoming data; give up if no pong within ``reply`` s."""

    idle: float = 15.0
    reply: float = 15.0

    @classmethod
    def stale_after(cls, seconds: float) -> Liveness:
        return cls(idle=seconds / 2, reply=seconds / 2)


class _Listener(WSListener):
    def __init__(self, on_frame: OnFrame, sink: FrameSink | None) -> None:
        self._on_frame = on_frame
        self._sink = sink
        self._fragments: list[bytes] = []
        self._fragment_binary = False
        self.transport: WSTransport | None = None
        self.last_frame = time.monotonic()
        self.closing_by_us = False

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        if self._sink is not None:
            self._sink.attach(transport.underlying_transport)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self._sink is not None:
            self._sink.detach(transport.underlying_transport)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind == _TEXT or kind == _BINARY:  # noqa: PLR1714, SIM109 - fastest on the hot path
            if frame.fin:
                self._on_frame(frame.get_payload_as_bytes(), kind == _BINARY)
            else:
                self._fragment_binary = kind == _BINARY
                self._fragments = [frame.get_payload_as_bytes()]
        elif kind == _CONT:
            self._fragments.append(frame.get_payload_as_bytes())
            if frame.fin:
                data = b"".join(self._fragments)
                self._fragments = []
                self._on_frame(data, self._fragment_binary)
        elif kind == _CLOSE:
            if not transport.is_close_frame_sent:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
        if frame.last_in_buffer:
            self.last_frame = time.monotonic()


class WebSocketConnection:
    """One WebSocket connection: open, receive into ``on_frame``, send, close gracefully."""

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        liveness: Liveness = Liveness(),
        handshake_timeout: float = 10.0,
        max_frame_size: int = 64 * 1024 * 1024,
    ) -> None:
        self.url = url
        self._headers = dict(headers or {})
        self._liveness = liveness
        self._handshake_timeout = handshake_timeout
        self._max_frame_size = max_frame_size
        self._listener: _Listener | None = None
        self._transport: WSTransport | None = None

    @property
    def is_open(self) -> bool:
        return self._transport is not None and not self._transport.is_disconnected

    async def open(self, on_frame: OnFrame, sink: FrameSink | None = None) -> None:
        """Connect. ``sink`` (if given) gets the socket attached for backpressure."""
        live = self._liveness
        try:
            transport, listener = await ws_connect(
                lambda: _Listener(on_frame, sink),
                self.url,
                websocket_handshake_timeout=self._handshake_timeout,
                enable_auto_ping=True,
                auto_ping_idle_timeout=live.idle,
                auto_ping_reply_timeout=min(live.reply, live.idle),
                auto_ping_strategy=WSAutoPingStrategy.PING_WHEN_IDLE,
                enable_auto_pong=True,
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
                    f"{self.url}: the server rejected the handshake with HTTP {code}"
                    " (check the API key id, the private key and the environment)"
                ) from None
            raise ConnectionFailed(f"{self.url}: unexpected HTTP status {code} on WebSocket upgrade") from None
        except (OSError, TimeoutError, WSError) as exc:
            raise ConnectionFailed(f"cannot connect to {self.url}: {_describe(exc)}") from None
        self._transport = transport
        assert isinstance(listener, _Listener)
        self._listener = listener

    def send_text(self, data: bytes) -> None:
        if self._transport is None or self._transport.is_disconnected:
            raise Disconnected(f"{self.url}: cannot send, connection is closed")
        self._transport.send(_TEXT, data)

    @property
    def write_buffer_size(self) -> int:
        if self._transport is None:
            return 0
        return int(self._transport.underlying_transport.get_write_buffer_size())

    async def wait_closed(self) -> str:
        """Wait until the connection ends; returns a human-readable reason."""
        assert self._transport is not None and self._listener is not None
        transport, listener = self._transport, self._listener
        try:
            await transport.wait_disconnected()
        except Exception as exc:  # picows re-raises callback errors here
            return f"closed after an error: {_describe(exc)}"
        return self._reason(transport, listener)

    def _reason(self, transport: WSTransport, listener: _Listener) -> str:
        hs = transport.close_handshake
        if hs is not None and hs.sent is not None and not hs.recv_then_sent and not listener.closing_by_us:
            # picows closes on its own when a ping goes unanswered (liveness) or on protocol errors.
            return f"closed by us: {hs.sent.reason or hs.sent.code}"
        if hs is not None and hs.recv is not None:
            code = hs.recv.code
            code_num = code.value if isinstance(code, WSCloseCode) else int(code)
            code_text = code.name if isinstance(code, WSCloseCode) else ""
            detail = f": {hs.recv.reason}" if hs.recv.reason else ""
            return f"closed by server (code {code_num} {code_text}{detail})"
        silent = time.monotonic() - listener.last_frame
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
        except Exception:  # noqa: S110 - the error was already reported by wait_closed
            pass

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
    ) -> None:
        self._label = label
        self._conn = WebSocketConnection(url, headers=headers, liveness=liveness)
        self._stopping = False

    @property
    def label(self) -> str:
        return self._label

    @property
    def connected(self) -> bool:
        return self._conn.is_open

    async def run(self, sink: FrameSink) -> None:
        self._stopping = False
        await self._conn.open(sink.frame, sink)
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
