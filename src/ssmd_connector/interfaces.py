"""The three pluggable seams: where frames come from, where they go, and where secrets come from.

They are ``Protocol`` classes, so a plug-in needs no inheritance from this package — only the
methods below.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol

from .message import Message
from .secrets import Secret


class FrameSink(Protocol):
    """What a connector hands frames to. Implemented by :class:`ssmd_connector.pipeline.Intake`.

    Per socket read: one :meth:`stamp` (the receive time every frame of that read shares), then
    one :meth:`put` with the read's messages, in order. Never blocks, never drops.
    """

    @property
    def feed(self) -> str:
        """The feed name to put in each :class:`Message`."""

    def stamp(self) -> int:
        """The receive time (ns since the epoch) shared by the frames of one socket read."""

    def put(self, batch: list[Message]) -> None:
        """Accept the messages of one read (the list is the sink's afterwards)."""

    def attach(self, transport: asyncio.BaseTransport) -> None:
        """Register a socket so the sink can pause reading from it when the pipeline is full."""

    def detach(self, transport: asyncio.BaseTransport) -> None: ...


class Connector(Protocol):
    """A source of raw frames over one connection.

    The runner owns the lifecycle: it calls :meth:`run` again (with backoff) whenever a
    connection ends, until :meth:`stop` is called.
    """

    @property
    def label(self) -> str:
        """Short name for logs and metrics (e.g. the shard)."""

    @property
    def connected(self) -> bool: ...

    async def run(self, sink: FrameSink) -> None:
        """Connect and deliver every received frame to ``sink`` until the connection ends.

        Returns normally only after :meth:`stop`. Raises :class:`~ssmd_connector.errors.ConnectionFailed`
        (or its subclass ``AuthenticationFailed``) when the connection cannot be opened, and
        :class:`~ssmd_connector.errors.Disconnected` when an open connection ends on its own.
        """

    async def stop(self) -> None:
        """Close gracefully: every frame the peer sent before our close is still delivered."""


class Writer(Protocol):
    """A destination for messages. Called from a single task, never concurrently."""

    async def write(self, batch: Sequence[Message]) -> None:
        """Accept messages, in order. May buffer. Raises ``WriteFailed`` and keeps the data."""

    async def flush(self) -> None:
        """Hand everything buffered to durable-ish storage (the OS, the broker, ...)."""

    async def close(self) -> None:
        """Flush and release resources."""

    @property
    def bytes_written(self) -> int:
        """Total bytes handed to storage so far (for ``ssmd_bytes_written_total``)."""

    @property
    def backlog_bytes(self) -> int:
        """Bytes accepted but not yet in storage — what a failing writer is holding on to."""

    @property
    def backlog_full(self) -> bool:
        """The backlog reached the writer's bound: the runner stops feeding it (reading pauses)."""


class KeyResolver(Protocol):
    """Turns a key source string (e.g. ``env:KALSHI_API_KEY,KALSHI_PRIVATE_KEY``) into secrets."""

    def resolve(self, source: str) -> Mapping[str, Secret]: ...


class ConnectorPool(Protocol):
    """Where connections opened or closed while recording go (the runner supervises them)."""

    def add_connector(self, connector: Connector) -> None: ...

    async def remove_connector(self, connector: Connector) -> None: ...


ConnectorSetup = Callable[[ConnectorPool], Awaitable[Sequence[Connector]]]
"""Builds the connectors once the runner has started (e.g. after market discovery); the pool
takes the connections a changing market universe opens and closes later."""
