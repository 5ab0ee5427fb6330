"""The picows-based connection: fragments, binary, headers, pings, liveness, graceful close."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

from ssmd_connector.connectors.headers import interpolate_headers
from ssmd_connector.connectors.websocket import Liveness, WebSocketConnection, WebSocketConnector
from ssmd_connector.errors import ConfigError, ConnectionFailed, Disconnected
from ssmd_connector.message import Message
from ssmd_connector.secrets import Secret

OnConnect = Callable[[WSTransport], None]


class CollectingSink:
    """A FrameSink that keeps what it is given, read by read."""

    feed = "test"

    def __init__(self) -> None:
        self.reads: list[list[Message]] = []
        self._clock = 0

    def stamp(self) -> int:
        self._clock += 1
        return self._clock

    @property
    def stamps_taken(self) -> int:
        return self._clock

    def put(self, batch: list[Message]) -> None:
        self.reads.append(batch)

    def on_read(self, payloads: list[bytes], received_ns: int, binary: list[int]) -> None:
        self.put([Message(received_ns, self.feed, p, i in binary) for i, p in enumerate(payloads)])

    @property
    def frames(self) -> list[Message]:
        return [m for read in self.reads for m in read]

    def attach(self, transport: asyncio.BaseTransport) -> None: ...

    def detach(self, transport: asyncio.BaseTransport) -> None: ...


class _ServerListener(WSListener):
    def __init__(self, on_connect: OnConnect, pongs: list[bytes]) -> None:
        self._on_connect = on_connect
        self._pongs = pongs

    def on_ws_connected(self, transport: WSTransport) -> None:
        self._on_connect(transport)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.PONG:
            self._pongs.append(frame.get_payload_as_bytes())
        elif frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()


async def picows_server(
    on_connect: OnConnect, *, auto_pong: bool = True, requests: list[WSUpgradeRequest] | None = None
) -> tuple[asyncio.Server, str, list[bytes]]:
    pongs: list[bytes] = []

    def factory(request: WSUpgradeRequest) -> WSListener:
        if requests is not None:
            requests.append(request)
        return _ServerListener(on_connect, pongs)

    server = await ws_create_server(factory, "127.0.0.1", 0, enable_auto_pong=auto_pong)
    port = server.sockets[0].getsockname()[1]
    return server, f"ws://127.0.0.1:{port}/", pongs


async def test_fragmented_text_and_binary_messages_are_reassembled() -> None:
    def on_connect(t: WSTransport) -> None:
        t.send(WSMsgType.TEXT, b'{"part":', fin=False)
        t.send(WSMsgType.CONTINUATION, b'"one"', fin=False)
        t.send(WSMsgType.CONTINUATION, b"}", fin=True)
        t.send(WSMsgType.BINARY, b"\x00\x01", fin=False)
        t.send(WSMsgType.CONTINUATION, b"\x02", fin=True)
        t.send(WSMsgType.TEXT, b"plain")

    server, url, _ = await picows_server(on_connect)
    sink = CollectingSink()
    conn = WebSocketConnection(url)
    await conn.open(sink.on_read, sink)
    while len(sink.frames) < 3:
        await asyncio.sleep(0.01)
    await conn.close()
    server.close()
    assert [(m.frame, m.binary) for m in sink.frames] == [
        (b'{"part":"one"}', False),
        (b"\x00\x01\x02", True),
        (b"plain", False),
    ]


async def test_frames_of_one_read_share_a_stamp_and_reads_are_closed() -> None:
    def on_connect(t: WSTransport) -> None:
        # All 50 frames in one TCP write, so the client reads several frames at once.
        t.underlying_transport.write(b"".join(bytes((0x81, len(p))) + p for p in (b'{"i":%d}' % i for i in range(50))))

    server, url, _ = await picows_server(on_connect)
    sink = CollectingSink()
    conn = WebSocketConnection(url)
    await conn.open(sink.on_read, sink)
    while len(sink.frames) < 50:
        await asyncio.sleep(0.01)
    await conn.close()
    server.close()
    # One stamp per read: every frame of a read shares it, and each read has its own.
    assert max(len(read) for read in sink.reads) > 1  # the test means something only then
    for read in sink.reads:
        assert len({m.received_ns for m in read}) == 1
    assert sink.stamps_taken == len(sink.reads)  # the clock is read once per socket read
    stamps = [read[0].received_ns for read in sink.reads]
    assert stamps == sorted(set(stamps))
    assert [m.frame for m in sink.frames] == [b'{"i":%d}' % i for i in range(50)]


async def test_extra_headers_are_sent_with_secrets_interpolated() -> None:
    requests: list[WSUpgradeRequest] = []
    server, url, _ = await picows_server(lambda t: None, requests=requests)
    headers = interpolate_headers(
        {"Authorization": "Bearer ${TOKEN}", "X-Plain": "1"}, {"TOKEN": Secret("abc123")}, "feeds/x.yaml"
    )
    conn = WebSocketConnection(url, headers=headers)
    await conn.open(lambda p, t, b: None, CollectingSink())
    await conn.close()
    server.close()
    sent = requests[0].headers
    assert sent["Authorization"] == "Bearer abc123"
    assert sent["X-Plain"] == "1"


def test_header_referencing_an_unknown_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"headers.Authorization: \$\{NOPE\} is not among"):
        interpolate_headers({"Authorization": "Bearer ${NOPE}"}, {}, "feeds/x.yaml")


async def test_server_pings_are_answered() -> None:
    server, url, pongs = await picows_server(lambda t: t.send_ping(b"heartbeat"))
    conn = WebSocketConnection(url)
    await conn.open(lambda p, t, b: None, CollectingSink())
    deadline = time.monotonic() + 5
    while not pongs and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    await conn.close()
    server.close()
    assert pongs == [b"heartbeat"]


async def test_a_silent_server_is_detected_by_what_arrives() -> None:
    """The server accepts, then neither sends data nor answers pings: we must give up."""
    server, url, _ = await picows_server(lambda t: None, auto_pong=False)
    connector = WebSocketConnector(url, liveness=Liveness(idle=0.3, reply=0.3))

    started = time.monotonic()
    with pytest.raises(Disconnected, match="replied to ping"):
        await asyncio.wait_for(connector.run(CollectingSink()), 10)
    assert time.monotonic() - started < 3
    server.close()


async def test_connection_refused_is_a_connection_failure() -> None:
    server, url, _ = await picows_server(lambda t: None)
    server.close()
    await server.wait_closed()
    with pytest.raises(ConnectionFailed, match=r"cannot connect to ws://127\.0\.0\.1"):
        await WebSocketConnection(url).open(lambda p, t, b: None, CollectingSink())
