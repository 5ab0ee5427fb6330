"""Choosing and building the connectors a feed asks for."""

from __future__ import annotations

from collections.abc import Mapping

from ..config import Environment, Feed
from ..interfaces import Connector
from ..ledger import Ledger
from ..metrics import FeedStats
from ..runner import ConnectorSetup
from ..secrets import Secret
from .headers import interpolate_headers
from .websocket import WebSocketConnector


def build_connectors(
    env: Environment, feed: Feed, secrets: Mapping[str, Secret], ledger: Ledger, stats: FeedStats
) -> ConnectorSetup:
    """Validate everything now (config errors surface before start-up) and return the setup
    the runner calls to create the connectors (Kalshi discovers markets there)."""
    version = feed.active_version()
    if feed.connector_kind == "kalshi":
        from .kalshi.connector import KalshiFeed  # noqa: PLC0415 - only Kalshi feeds need it

        return KalshiFeed(env, feed, secrets, ledger, stats).connectors
    label = f"feeds/{feed.name}.yaml"
    headers = interpolate_headers(version.headers, secrets, label)
    hint = (
        f"check the credentials in the handshake headers ({', '.join(headers)}) in {label} and the environment's keys"
        if headers
        else f"the endpoint wants credentials: add them as handshake headers in {label}"
    )
    connectors: list[Connector] = [
        WebSocketConnector(version.endpoint, label=feed.name, headers=headers, credentials_hint=hint)
    ]

    async def ready() -> list[Connector]:
        return connectors

    return ready
