"""Market discovery over Kalshi's REST API: the HTTP around :class:`~ssmd_connector.kalshi.markets.MarketListing`.

The walk (filters, cursor, pages, what counts as a page) is decided in the sans-I/O listing; this
module signs each request, fetches it, and turns transport and HTTP failures into the recorder's
errors (401/403 → ``AuthenticationFailed``; anything else → ``ConnectionFailed``, retried with
backoff by the runner).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from urllib.parse import urlparse

import aiohttp

from ...errors import AuthenticationFailed, ConnectionFailed
from ...kalshi.auth import Signer
from ...kalshi.markets import BadPage, MarketListing

log = logging.getLogger(__name__)


async def discover_markets(
    base: str,
    signer: Signer | None,
    *,
    status: str | Sequence[str] | None = "open",
    series: Sequence[str] = (),
    since: Mapping[str, int] | None = None,
    mve_filter: str | None = None,
    timeout: float = 30.0,
) -> list[dict[str, str]]:
    """Every market matching the filters (``ticker``, ``status``, ``event_ticker``), following the
    cursor to the last page. ``since``: e.g. ``{"min_created_ts": t}``, Kalshi's time filters."""
    url = base.rstrip("/") + "/markets"
    path = urlparse(url).path
    listing = MarketListing(status=status, series=series, params=since, mve_filter=mve_filter)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http:
        while (params := listing.next_request()) is not None:
            headers = signer.headers("GET", path) if signer else {}
            try:
                async with http.get(url, params=params, headers=headers) as resp:
                    if resp.status in (401, 403):
                        raise AuthenticationFailed(
                            f"{url}: market discovery rejected with HTTP {resp.status}"
                            + (f" for key id {signer.key_id}" if signer else "")
                        )
                    if resp.status != 200:
                        raise ConnectionFailed(f"{url}: market discovery failed with HTTP {resp.status}")
                    raw = await resp.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise ConnectionFailed(f"{url}: market discovery failed: {exc or type(exc).__name__}") from None
            try:
                listing.receive(raw)
            except BadPage as exc:
                raise ConnectionFailed(f"{url}: market discovery {exc}") from None
    log.info("discovered %d markets at %s (%d pages)", len(listing.tickers), base, listing.pages)
    return listing.markets
