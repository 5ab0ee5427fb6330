"""Walking Kalshi's market list (``GET /trade-api/v2/markets``), sans I/O: requests out, pages in.

Why apart from the HTTP: the walk is where discovery can go wrong quietly — a cursor that never
ends, a page that is not a page, a filter walked only once, a market listed twice across pages —
and all of that is decidable without a socket, so it is tested without one. The I/O that drives
it is :mod:`ssmd_connector.connectors.kalshi.rest`.

Kalshi paginates with an opaque ``cursor``: an empty or missing cursor ends the walk. Several
series and statuses are walked one after the other (the endpoint takes one ``series_ticker`` and
one ``status`` per request); a market that appears twice is listed once. Each market is kept with
its own ``status`` and ``event_ticker``: the universe (:mod:`.universe`) trusts a market's status
over the filter it was listed under.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlparse, urlunparse

import msgspec

from ..archive.line import within_depth
from .wire import REST_PREFIX

PAGE_LIMIT = 1000
"""Markets asked for per page (Kalshi's maximum)."""

MAX_PAGES = 10_000
"""Pages one filter may take (10 million markets) before the walk is declared endless."""

_decoder = msgspec.json.Decoder(float_hook=float)


def rest_base_from_ws(endpoint: str) -> str:
    """Same port, ws→http / wss→https, path ``/trade-api/v2``; Kalshi's WebSocket host
    ``external-api-ws.…`` answers REST as ``external-api.…`` (the ``-ws`` host has no REST API)."""
    u = urlparse(endpoint)
    scheme = {"ws": "http", "wss": "https"}[u.scheme]
    netloc = u.netloc
    host = u.hostname or ""
    if host.startswith("external-api-ws."):
        netloc = netloc.replace("external-api-ws.", "external-api.", 1)
    return urlunparse((scheme, netloc, REST_PREFIX, "", "", ""))


class BadPage(ValueError):
    """A response that cannot be taken as a page of markets (the message says what was wrong)."""


class MarketListing:
    """One walk over the market list for ``status`` and each of ``series`` (or all series)."""

    def __init__(
        self,
        *,
        status: str | Sequence[str] | None = "open",
        series: Sequence[str] = (),
        params: Mapping[str, int | str] | None = None,
        mve_filter: str | None = None,
        limit: int = PAGE_LIMIT,
        max_pages: int = MAX_PAGES,
    ) -> None:
        statuses: list[str | None] = [status] if isinstance(status, str) or status is None else [*status] or [None]
        walks: list[str | None] = [*series] or [None]
        self._filters: list[tuple[str | None, str | None]] = [(s, st) for s in walks for st in statuses]
        self._extra = {key: str(value) for key, value in (params or {}).items()}
        if mve_filter:
            self._extra["mve_filter"] = mve_filter
        self._limit = limit
        self._max_pages = max_pages
        self._cursor = ""
        self._pages = 0
        self._seen: set[str] = set()
        self.tickers: list[str] = []
        """Every market listed so far, in the order first seen."""
        self.markets: list[dict[str, str]] = []
        """The same markets: ``ticker``, and ``status`` and ``event_ticker`` when the page gave them."""
        self.pages = 0
        """Pages received, over every filter."""

    def next_request(self) -> dict[str, str] | None:
        """The query of the next page to fetch, or ``None`` once the walk is complete."""
        if not self._filters:
            return None
        series, status = self._filters[0]
        params = {"limit": str(self._limit)}
        if status:
            params["status"] = status
        if series:
            params["series_ticker"] = series
        params.update(self._extra)
        if self._cursor:
            params["cursor"] = self._cursor
        return params

    def receive(self, raw: bytes) -> None:
        """The body of the page :meth:`next_request` asked for; :class:`BadPage` if it is not one,
        or if the filter's walk exceeds ``max_pages`` (a cursor that never ends)."""
        if not self._filters:
            raise BadPage("got a page after the listing was complete")
        body = _page(raw)
        for market in body.get("markets") or []:
            ticker = market.get("ticker") if isinstance(market, dict) else None
            if isinstance(ticker, str) and ticker and ticker not in self._seen:
                self._seen.add(ticker)
                self.tickers.append(ticker)
                kept = {"ticker": ticker}
                for key in ("status", "event_ticker"):
                    if isinstance(value := market.get(key), str):
                        kept[key] = value
                self.markets.append(kept)
        cursor = body.get("cursor")
        if cursor is None:
            cursor = ""
        if not isinstance(cursor, str):
            raise BadPage(f"got a cursor that is not a string ({type(cursor).__name__})")
        if cursor and cursor == self._cursor:
            raise BadPage(f"got the same cursor again ({cursor[:40]!r}): the listing would never end")
        self.pages += 1
        self._pages += 1
        if not cursor:
            self._filters.pop(0)
            self._cursor, self._pages = "", 0
        elif self._pages >= self._max_pages:
            series, status = self._filters[0]
            which = f"series {series!r}" if series else "the market list"
            which += f" (status {status})" if status else ""
            raise BadPage(f"{which} did not end after {self._max_pages} pages (the cursor keeps going)")
        else:
            self._cursor = cursor


def _page(raw: bytes) -> dict[str, Any]:
    """A page of ``GET /markets``, or :class:`BadPage` saying why the body is not one."""
    expected = "expected a JSON object with a 'markets' list"
    if not within_depth(raw):
        raise BadPage(f"got a response nested too deep ({expected}; {len(raw)} bytes)")
    try:
        body = _decoder.decode(raw)
    except msgspec.DecodeError:
        raise BadPage(f"got a response that is not JSON ({expected}; {len(raw)} bytes)") from None
    # The key must be there: a 200 without it (an error object, say) is not an empty last page.
    if not isinstance(body, dict) or "markets" not in body or not isinstance(body["markets"] or [], list):
        raise BadPage(f"got a response that is not a page of markets ({expected}; {len(raw)} bytes)")
    return body
