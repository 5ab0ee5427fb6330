"""The markets an archive knows, with each one's status at any replay time — for the REST listing.

Why: a client that discovers before it subscribes (the recorder itself, most bots) asks
``GET /trade-api/v2/markets`` first. Replay answers as of the replay clock: a market is listed once
the archive has seen it (its ``created`` lifecycle message; a market first seen through any other
message existed before that and is listed from the start), and its status is the one its lifecycle
messages gave it by then — ``created`` → ``initialized`` (``active`` once its ``open_ts`` passed),
``activated``/``deactivated`` → ``active``/``inactive``, ``determined``, ``settled`` → ``finalized``,
and ``closed`` once its ``close_ts`` passed. A market with no lifecycle message is ``active``.

Built once, in one pass over the archive, before the server listens: small (one entry per market
and one per status change), and the REST answer is then computed without I/O.
"""

from __future__ import annotations

import base64
import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

from ..kalshi.universe import COMBO_PREFIX, STATUS_ANSWERS, series_of
from ..kalshi.wire import MARKET_LIFECYCLE_V2, MULTIVARIATE_MARKET_LIFECYCLE
from .source import Recorded

_STATUS_OF_EVENT = {
    "activated": "active",
    "deactivated": "inactive",
    "determined": "determined",
    "settled": "finalized",
}
_LIFECYCLE = frozenset({MARKET_LIFECYCLE_V2, MULTIVARIATE_MARKET_LIFECYCLE})


class BadQuery(ValueError):
    """A REST query parameter that is not what Kalshi accepts (400)."""


@dataclass
class Known:
    """One market as the archive knows it."""

    ticker: str
    first_ns: int
    created_ns: int | None = None
    event_ticker: str = ""
    title: str = ""
    market_id: str = ""
    open_ts: int | None = None
    close_ts: list[tuple[int, int]] = field(default_factory=list)
    """(ns, close_ts) as lifecycle messages set and moved it."""
    changes: list[tuple[int, str]] = field(default_factory=list)
    """(ns, status) in time order."""

    def listed_at(self, ns: int) -> bool:
        return self.created_ns is None or self.created_ns <= ns

    def status_at(self, ns: int) -> str:
        i = bisect.bisect_right(self.changes, (ns, "\uffff"))
        status = self.changes[i - 1][1] if i else "active"
        if status == "initialized" and self.open_ts is not None and self.open_ts * 1e9 <= ns:
            status = "active"
        close = self.close_at(ns)
        if status in ("active", "inactive") and close is not None and close * 1_000_000_000 <= ns:
            status = "closed"
        return status

    def close_at(self, ns: int) -> int | None:
        i = bisect.bisect_right(self.close_ts, (ns, 1 << 62))
        return self.close_ts[i - 1][1] if i else None

    def json_at(self, ns: int) -> dict[str, Any]:
        """The REST ``Market`` object at ``ns``, with what the archive says of it."""
        event = self.event_ticker or self.ticker.rsplit("-", 1)[0]
        out: dict[str, Any] = {
            "ticker": self.ticker,
            "event_ticker": event,
            "market_type": "binary",
            "title": self.title,
            "status": self.status_at(ns),
        }
        if self.created_ns is not None:
            out["created_time"] = _rfc3339(self.created_ns / 1e9)
        if self.open_ts is not None:
            out["open_time"] = _rfc3339(self.open_ts)
        close = self.close_at(ns)
        if close is not None:
            out["close_time"] = _rfc3339(close)
        return out


class _Lifecycle(msgspec.Struct):
    event_type: str = ""
    open_ts: int | None = None
    close_ts: int | None = None
    event_ticker: str = ""
    market_id: str = ""
    additional_metadata: dict[str, Any] | None = None


_lifecycle = msgspec.json.Decoder(_Lifecycle)


class MarketIndex:
    """Every market of an archive, and its status changes."""

    def __init__(self) -> None:
        self.markets: dict[str, Known] = {}
        self.first_ns = 0
        """The archive's first message: before it, the archive knows no market."""

    def add(self, m: Recorded) -> None:
        ticker = m.head.market_ticker
        if not ticker:
            return
        known = self.markets.get(ticker)
        if known is None:
            known = self.markets[ticker] = Known(ticker, m.ns)
            self.first_ns = min(self.first_ns, known.first_ns) if self.first_ns else known.first_ns
        if m.kind not in _LIFECYCLE:
            return
        ns = m.ns
        try:
            body = _lifecycle.decode(m.msg)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        meta = body.additional_metadata or {}
        if body.event_type == "created":
            if known.created_ns is None and known.first_ns == ns:
                known.created_ns = ns
            known.changes.append((ns, "initialized"))
            known.event_ticker = str(meta.get("event_ticker") or body.event_ticker or known.event_ticker)
            known.title = str(meta.get("title") or known.title)
        elif body.event_type in _STATUS_OF_EVENT:
            known.changes.append((ns, _STATUS_OF_EVENT[body.event_type]))
        if body.open_ts is not None:
            known.open_ts = body.open_ts
        if body.close_ts is not None:
            known.close_ts.append((ns, body.close_ts))

    def listing(self, ns: int, query: Mapping[str, str], page_max: int = 1000) -> dict[str, Any]:
        """``GET /markets`` at replay time ``ns``: Kalshi's filters (``status``, ``series_ticker``,
        ``event_ticker``, ``tickers``, ``mve_filter``), ``limit`` and ``cursor``."""
        try:
            limit = int(query.get("limit", "100"))
            offset = int(base64.urlsafe_b64decode(query["cursor"]).decode()) if query.get("cursor") else 0
        except (ValueError, UnicodeDecodeError):
            raise BadQuery("invalid limit or cursor") from None
        if not 1 <= limit <= 1000 or offset < 0:
            raise BadQuery("limit must be 1..1000")
        status = query.get("status")
        if status and status not in STATUS_ANSWERS:
            raise BadQuery(f"status must be one of {', '.join(STATUS_ANSWERS)}")
        wanted = STATUS_ANSWERS[status] | {status} if status else None
        if status == "settled":
            wanted = frozenset({"settled", "finalized"})
        series, event = query.get("series_ticker"), query.get("event_ticker")
        tickers = set(query["tickers"].split(",")) if query.get("tickers") else None
        mve = query.get("mve_filter")
        if mve not in (None, "only", "exclude"):
            raise BadQuery("mve_filter must be 'only' or 'exclude'")
        rows: list[dict[str, Any]] = []
        for known in self._candidates(tickers):
            if ns < self.first_ns or not known.listed_at(ns):
                continue
            row = known.json_at(ns)
            if wanted is not None and row["status"] not in wanted:
                continue
            if series and series_of(row["event_ticker"]) != series:
                continue
            if event and row["event_ticker"] != event:
                continue
            combo = known.ticker.startswith(COMBO_PREFIX)
            if (mve == "only" and not combo) or (mve == "exclude" and combo):
                continue
            rows.append(row)
        limit = min(limit, page_max)
        page = rows[offset : offset + limit]
        more = offset + limit < len(rows)
        cursor = base64.urlsafe_b64encode(str(offset + limit).encode()).decode() if more else ""
        return {"markets": page, "cursor": cursor}

    def market(self, ticker: str, ns: int) -> dict[str, Any] | None:
        """``GET /markets/{ticker}`` at replay time ``ns``."""
        known = self.markets.get(ticker)
        if known is None or ns < self.first_ns or not known.listed_at(ns):
            return None
        return {"market": known.json_at(ns)}

    def _candidates(self, tickers: set[str] | None) -> Iterable[Known]:
        if tickers is None:
            return sorted(self.markets.values(), key=lambda k: k.ticker)
        return [self.markets[t] for t in sorted(tickers) if t in self.markets]


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
