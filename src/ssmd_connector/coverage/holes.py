"""The ledger events after which a market's book is not known: gaps, disconnects, restarts — for
every reader that rebuilds books (`ssmd export`, `ssmd replay`).

Why the ledger and not the frames' own ``seq``: sids are per connection, and a feed's archive
interleaves several connections whose sids collide; only the recorder knew which connection a
frame came on, and it wrote what it saw to the ledger. A ``gap`` names its sid, the sequence number
that revealed it (``got``) and the markets on that sid; a ``connect``/``disconnect`` names its
shard (the markets last subscribed there, from ``subscribed``/``markets_changed``); a
``recorder_started`` ends every subscription.

The recorder stamps a gap when it has seen the frame that revealed it, a little after that
frame's receive time: the frame with the gap's sid and ``got`` *and one of the gap's markets*
(sids and seqs repeat across connections) is looked for among the frames received up to
:data:`LOOKAHEAD_US` before the event, and the book is dropped *at* it, so the revealing delta is
never applied to the book it skipped past.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..archive.layout import ledger_files
from ..archive.line import json_object
from ..archive.reading import Reader
from ..kalshi.wire import Ev

LOOKAHEAD_US = 2_000_000
"""How long before a gap event its revealing frame may have been received (µs)."""


@dataclass(frozen=True, slots=True)
class Unknown:
    """From ``ts`` on, these markets' books are not known (``None``: every market)."""

    ts: str
    tickers: frozenset[str] | None
    reason: str
    sid: int | None = None
    got: int | None = None


def events(path: Path, reader: Reader) -> list[dict[str, object]]:
    """Every ledger event under ``path``, in time order."""
    out: list[dict[str, object]] = []
    for ledger in ledger_files(path):
        for number, line in reader.lines(ledger):
            ev = json_object(line)
            if ev is None or not isinstance(ev.get("ts"), str):
                reader.report(ledger, number, "not a ledger event (corrupt or torn)")
            else:
                out.append(ev)
    out.sort(key=lambda ev: str(ev["ts"]))
    return out


def unknowns(evs: list[dict[str, object]]) -> list[Unknown]:
    """The moments books stop being known, in time order."""
    shard_of: dict[str, str] = {}
    out = []
    for ev in evs:
        kind, ts, shard = ev.get("event"), str(ev["ts"]), str(ev.get("shard", ""))
        tickers = ev.get("tickers")
        named = [t for t in tickers if isinstance(t, str)] if isinstance(tickers, list) else []
        book_channel = ev.get("channel") == "orderbook_delta"
        if (kind == Ev.SUBSCRIBED and book_channel) or (kind == Ev.MARKETS_CHANGED and book_channel):
            if ev.get("action", "add_markets") == "add_markets":
                shard_of.update(dict.fromkeys(named, shard))
        elif kind == Ev.GAP and book_channel:
            sid, got = ev.get("sid"), ev.get("got")
            out.append(
                Unknown(
                    ts,
                    frozenset(named),
                    "gap",
                    sid if isinstance(sid, int) else None,
                    got if isinstance(got, int) else None,
                )
            )
        elif kind in (Ev.CONNECT, Ev.DISCONNECT):
            on = frozenset(t for t, s in shard_of.items() if s == shard)
            if on:
                out.append(Unknown(ts, on, str(kind)))
        elif kind == Ev.RECORDER_STARTED:
            out.append(Unknown(ts, None, "recorder restarted"))
    return out
