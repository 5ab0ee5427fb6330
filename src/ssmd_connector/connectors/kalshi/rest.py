"""Market discovery over Kalshi's REST API (``GET /trade-api/v2/markets``, cursor-paginated)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse, urlunparse

import aiohttp
import msgspec

from ...archive.line import within_depth
from ...errors import AuthenticationFailed, ConnectionFailed
from ...kalshi.auth import Signer
from ...kalshi.wire import REST_PREFIX

log = logging.getLogger(__name__)

PAGE_LIMIT = 1000

_decoder = msgspec.json.Decoder(float_hook=float)


def rest_base_from_ws(endpoint: str) -> str:
    """Same host and port, ws→http / wss→https, path ``/trade-api/v2``."""
    u = urlparse(endpoint)
    scheme = {"ws": "http", "wss": "https"}[u.scheme]
    return urlunparse((scheme, u.netloc, REST_PREFIX, "", "", ""))


async def discover_markets(
    base: str,
    signer: Signer | None,
    *,
    status: str | None = "open",
    series: Sequence[str] = (),
    timeout: float = 30.0,
    max_pages: int = 10_000,
) -> list[str]:
    """Every market ticker matching the filters, following the cursor to the last page."""
    url = base.rstrip("/") + "/markets"
    path = urlparse(url).path
    tickers: list[str] = []
    seen: set[str] = set()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http:
        series_filters: list[str | None] = [*series] or [None]
        for series_ticker in series_filters:
            cursor = ""
            for _ in range(max_pages):
                params: dict[str, str] = {"limit": str(PAGE_LIMIT)}
                if status:
                    params["status"] = status
                if series_ticker:
                    params["series_ticker"] = series_ticker
                if cursor:
                    params["cursor"] = cursor
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
                body = _page(raw)
                if body is None:
                    raise ConnectionFailed(
                        f"{url}: market discovery got a response that is not a page of markets "
                        f"(expected a JSON object with a 'markets' list; {len(raw)} bytes)"
                    )
                for market in body.get("markets") or []:
                    ticker = market.get("ticker") if isinstance(market, dict) else None
                    if isinstance(ticker, str) and ticker not in seen:
                        seen.add(ticker)
                        tickers.append(ticker)
                cursor = body.get("cursor") or ""
                if not isinstance(cursor, str):
                    raise ConnectionFailed(f"{url}: market discovery got a cursor that is not a string")
                if not cursor:
                    break
    log.info("discovered %d markets at %s", len(tickers), base)
    return tickers


def _page(raw: bytes) -> dict[str, Any] | None:
    """A page of ``GET /markets``, or ``None`` when the body is not one."""
    if not within_depth(raw):
        return None
    try:
        body = _decoder.decode(raw)
    except msgspec.DecodeError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("markets") or [], list):
        return None
    return body
