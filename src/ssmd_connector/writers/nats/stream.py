"""The NATS connection and the JetStream stream the writer publishes to.

Why apart from the writer: whether the stream exists, covers our subjects and accepts fast batches
is settled once per writer, off the per-frame path, and it decides which acknowledgement protocol
(:mod:`.acks`) is used. The connection itself is made and remade in the background
(:mod:`ssmd_connector.natsconn`): a recorder started while NATS is down records locally meanwhile,
and :meth:`StreamLink.connect` never waits for NATS after its first call.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from nats.js.errors import NotFoundError

from ...errors import WriteFailed
from ...natsconn import NatsConnection
from .wire import BlockSender

log = logging.getLogger(__name__)

PublishMode = Literal["auto", "fast-batch", "per-message"]


@dataclass(frozen=True, slots=True)
class Link:
    """A connection ready to publish on: replies for every publish arrive under ``<inbox>.>``."""

    url: str
    nc: Client
    sender: BlockSender
    inbox: str
    batched: bool
    """Publish in fast-ingest batches (the stream allows them and the mode does not forbid them)."""


class StreamLink:
    """Owns the NATS connection, the stream check (or creation) and the reply subscription."""

    def __init__(
        self,
        url: str,
        stream: str,
        prefix: str,
        *,
        create: bool,
        mode: PublishMode,
        timeout: float,
        on_reply: Callable[[Msg], Awaitable[None]],
    ) -> None:
        self.url = url
        self.stream = stream
        self._subjects = f"{prefix}.>"
        self._covering = (self._subjects, f"{prefix}.*.*.*")
        self._create = create
        self._mode = mode
        self._timeout = timeout
        self._on_reply = on_reply
        self._conn = NatsConnection(url)
        self._tried = False
        self._link: Link | None = None

    @property
    def current(self) -> Link | None:
        """The link, once a connection was made and the stream checked."""
        return self._link

    async def connect(self) -> Link:
        """The link once NATS is up and the stream checked; raises ``WriteFailed`` at once while it
        is not (the very first call gives the connection a moment)."""
        nc = await self._conn.ready(0 if self._tried else self._timeout)
        self._tried = True
        if nc is None or not nc.is_connected:
            raise WriteFailed(f"NATS {self.url}: {self._conn.status}")
        if self._link is not None:
            return self._link
        try:
            batched = await self._check_stream(nc, nc.jetstream())
            inbox = nc.new_inbox()
            await nc.subscribe(f"{inbox}.>", cb=self._on_reply)
        except WriteFailed:
            raise
        except Exception as exc:
            raise WriteFailed(f"NATS {self.url}: {exc or type(exc).__name__}") from exc
        self._link = Link(self.url, nc, BlockSender(nc), inbox, batched)
        mode = "fast-batch" if batched else "per-message"
        log.info("publishing to JetStream stream %s (%s acknowledgements)", self.stream, mode)
        return self._link

    async def _check_stream(self, nc: Client, js: JetStreamContext) -> bool:
        """Check (or create) the stream; returns whether to publish in fast-ingest batches."""
        wanted = self._subjects
        try:
            info = await js.stream_info(self.stream)
        except NotFoundError:
            if not self._create:
                raise WriteFailed(
                    f"NATS stream {self.stream!r} does not exist (create it with subjects {wanted!r}, "
                    "or set nats.create_stream: true)"
                ) from None
            version = nc.connected_server_version
            batches = self._mode != "per-message" and (version.major, version.minor) >= (2, 14)
            config = StreamConfig(name=self.stream, subjects=[wanted], duplicate_window=120.0)
            if batches:
                config.allow_batched = True
            info = await js.add_stream(config)
            log.info("created JetStream stream %s for %s", self.stream, wanted)
        subjects = info.config.subjects or []
        if not any(s in subjects for s in self._covering):
            raise WriteFailed(f"NATS stream {self.stream!r} does not cover {wanted!r} (its subjects: {subjects})")
        allowed = bool(info.config.allow_batched)
        if self._mode == "fast-batch" and not allowed:
            raise WriteFailed(
                f"NATS stream {self.stream!r} does not allow fast batches (needs nats-server >= 2.14 and "
                "allow_batched: true on the stream), or set nats.publish: per-message"
            )
        return allowed and self._mode != "per-message"

    async def close(self) -> None:
        await self._conn.close()
