"""Plain settings objects: what the layers below the assembly are given (never the config models).

:mod:`ssmd_connector.assembly` turns the validated configuration into these; connectors and
writers take them (or plain arguments), so a parameter travels one way, from the file to where it
is used.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_RECEIVE_BUFFER = 1 << 20
"""SO_RCVBUF for recording sockets (Linux doubles it). It caps how much one socket read returns,
and so the size of a burst handled at once: on loopback, 2 MB reads measured ~25 % faster and use
a third of the memory of the 32 MB reads OS autotuning allows here. It also caps the TCP window:
1 MiB sustains ~25 MB/s (~80k Kalshi frames/s) at 80 ms round trip. 0 = leave it to the OS."""


def parse_addr(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (an IPv6 host in brackets; an empty host is every address) → ``(host, port)``;
    ``ValueError`` naming what was expected."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT (e.g. 127.0.0.1:8080), got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - documented default


@dataclass(frozen=True)
class Discovery:
    """Markets found through REST ``GET /markets`` (every page), then followed as Kalshi lists and
    settles them (lifecycle messages, and a REST refresh every ``refresh`` seconds)."""

    status: tuple[str, ...] | None = ("unopened", "open")
    """``None``: every status."""
    series: tuple[str, ...] = ()
    refresh: float = 300.0
    combos: bool = False


@dataclass(frozen=True)
class KalshiSettings:
    """What a Kalshi feed records, and how (``subscription`` of the environment, the feed's endpoints)."""

    feed: str
    endpoint: str
    rest_base: str
    channels: tuple[str, ...]
    markets: tuple[str, ...] = ()
    discover: Discovery | None = None
    max_markets_per_connection: int = 200
    stale_after: float = 30.0
    connect_stagger: float = 0.25
    command_timeout: float = 10.0
    receive_buffer: int = DEFAULT_RECEIVE_BUFFER
