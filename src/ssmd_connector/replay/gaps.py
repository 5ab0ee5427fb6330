"""Where the archive's order books have holes — so replay never hides one.

Why: replay renumbers ``seq`` gap-free per subscription, so a client cannot see that the
recorder missed order-book deltas. After a recorded ``gap`` (or a disconnect, or a recorder
restart) the deltas of the markets concerned no longer add up to the exchange's book until the
next snapshot of each arrives. Replay does what the exchange would have done for the client: it
holds those markets' deltas back and lets the next archived snapshot through, which resets the
client's book — and logs it. Which events make a book unknown, and from which frame, is
:mod:`~ssmd_connector.coverage.holes` (the export uses the same).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..archive.line import ts_ns, ts_text
from ..archive.reading import Reader
from ..coverage.holes import LOOKAHEAD_US, Unknown, events, unknowns
from ..kalshi.wire import ORDERBOOK_DELTA

log = logging.getLogger(__name__)
_NEVER = "\U0010ffff"
"""Sorts after every receive time."""


@dataclass(frozen=True, slots=True)
class Hole:
    """An :class:`~ssmd_connector.coverage.holes.Unknown` with the earliest time its revealing
    frame may carry (a gap is written to the ledger just after that frame was stamped)."""

    unknown: Unknown
    earliest: str


def ledger_holes(root: Path, feed: str | None) -> list[Hole]:
    """The moments the archive's books (of ``feed``) stop being known, from its ledgers, in time
    order."""
    out = []
    evs = [ev for ev in events(root, Reader()) if feed is None or ev.get("feed") == feed]
    for u in unknowns(evs):
        earliest = u.ts if u.sid is None else ts_text(max(0, ts_ns(u.ts) - LOOKAHEAD_US * 1000))
        out.append(Hole(u, earliest))
    return out


@dataclass
class Holds:
    """Per replay, the markets whose deltas are held back until their next snapshot."""

    holes: list[Hole]
    held: dict[str, tuple[str, int]] = field(default_factory=dict)
    """ticker → (when the hold began, deltas held so far)."""
    everything: tuple[str, int] | None = None
    """Every market is held (a recorder restart) but those in ``released``."""
    released: set[str] = field(default_factory=set)
    _next: int = 0
    active: bool = field(default=False, init=False)
    """Whether any market is held now (kept as holds start and end, not computed: a replay asks
    for every order-book message)."""
    due: str = field(init=False)
    """The earliest receive time at which the next hole may begin (past the last: a text above
    every time) — so a replay calls :meth:`check` only from then on, not for every frame."""

    def __post_init__(self) -> None:
        self.due = self.holes[0].earliest if self.holes else _NEVER

    def check(self, ts: str, sid: int, seq: int | None, ticker: str) -> None:
        """Start the holds this order-book frame (``sid``/``seq``, of ``ticker``, stamped ``ts``)
        reveals, or whose ledger time has passed. A feed's connections number their sids alike, so
        a frame reveals a gap only if its market is one the gap names."""
        holes = self.holes
        while self._next < len(holes):
            hole = holes[self._next]
            u = hole.unknown
            if hole.earliest > ts:
                return
            reveals = u.sid == sid and u.got == seq and u.tickers is not None and ticker in u.tickers
            if not (reveals or u.ts <= ts):
                return
            self._next += 1
            self.due = holes[self._next].earliest if self._next < len(holes) else _NEVER
            if u.tickers is None:
                self.everything, self.released = (ts, 0), set()
                self.held.clear()
                self.active = True
                log.warning("replay: the recorder restarted here: every market's deltas held until its next snapshot")
                continue
            for name in u.tickers:
                self.released.discard(name)
                self.held.setdefault(name, (ts, 0))
            self.active = bool(self.held) or self.everything is not None
            log.warning(
                "replay: the archive's order books have a hole here (%s, %d market(s)): their deltas are held "
                "back until each one's next snapshot",
                u.reason,
                len(u.tickers),
            )

    def holds(self, kind: str, ticker: str, ts: str) -> bool:
        """Whether this order-book message is held back; a snapshot ends its market's hold."""
        hold = self.held.get(ticker)
        if hold is None:
            if self.everything is None or ticker in self.released:
                return False
            hold = self.everything
        if kind == ORDERBOOK_DELTA:
            self.held[ticker] = (hold[0], hold[1] + 1)
            return True
        self.held.pop(ticker, None)
        if self.everything is not None:
            self.released.add(ticker)
        self.active = bool(self.held) or self.everything is not None
        if hold[1]:
            log.warning(
                "replay: %s resumes at its next snapshot: %d delta(s) over %.3f s held back",
                ticker,
                hold[1],
                (ts_ns(ts) - ts_ns(hold[0])) / 1e9,
            )
        return False

    def is_held(self, ticker: str) -> bool:
        """Whether the archive's book of ``ticker`` is not known now."""
        if ticker in self.held:
            return True
        return self.everything is not None and ticker not in self.released
