"""Where the archive's order books have holes, from the coverage ledger — so replay never hides one.

Why: replay renumbers ``seq`` gap-free per subscription, so a client cannot see that the
recorder missed order-book deltas. After a recorded ``gap`` the deltas of that sid's markets no
longer add up to the exchange's book until the snapshot the recorder asked for arrives. Replay
does what the exchange would have done for the client: it holds those markets' deltas back and
lets the next archived snapshot through, which resets the client's book — and logs it.

A gap is written to the ledger just after the frame that revealed it was stamped, so the hold
starts at that frame: the first order-book frame of the gap's sid with the ``seq`` it reported
(``got``), at most :data:`SLACK_NS` before the ledger line; or, failing that, at the ledger
line's time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..archive.layout import ledger_files
from ..archive.line import json_object, ts_ns
from ..archive.reading import Reader
from ..kalshi.wire import ORDERBOOK_DELTA, Ev
from .source import ts_text

log = logging.getLogger(__name__)

SLACK_NS = 5_000_000_000
"""How long before its ledger line the frame that revealed a gap may have been stamped."""


@dataclass(frozen=True, slots=True)
class Gap:
    ts: str
    """When the ledger recorded it (the archive's receive-time form: its text sorts as time)."""
    earliest: str
    """:data:`SLACK_NS` before that."""
    sid: int
    got: int
    tickers: tuple[str, ...]


def ledger_gaps(root: Path, feed: str | None) -> list[Gap]:
    """The order-book gaps the ledgers under ``root`` recorded (for ``feed``), in time order."""
    reader = Reader()
    out: list[Gap] = []
    for path in ledger_files(root):
        if feed is not None and not path.name.startswith(f"{feed}."):
            continue
        for _, line in reader.lines(path):
            ev = json_object(line)
            if ev is None or ev.get("event") != Ev.GAP or ev.get("channel") != ORDERBOOK_DELTA:
                continue
            tickers, sid, got = ev.get("tickers"), ev.get("sid"), ev.get("got")
            if not isinstance(tickers, list) or not isinstance(sid, int) or not isinstance(got, int):
                continue
            try:
                ns = ts_ns(str(ev.get("ts", "")))
            except (ValueError, OverflowError):
                continue
            names = tuple(t for t in tickers if isinstance(t, str))
            out.append(Gap(ts_text(ns), ts_text(max(0, ns - SLACK_NS)), sid, got, names))
    out.sort(key=lambda g: g.ts)
    return out


@dataclass
class Holds:
    """Per replay, the markets whose deltas are held back until their next snapshot."""

    gaps: list[Gap]
    held: dict[str, tuple[str, int]] = field(default_factory=dict)
    """ticker → (when the hold began, deltas held so far)."""
    _next: int = 0

    def check(self, ts: str, sid: int, seq: int | None) -> None:
        """Start the holds of the gaps this order-book frame (``sid``/``seq``, stamped ``ts``)
        reveals, or whose ledger time has passed."""
        gaps = self.gaps
        while self._next < len(gaps):
            gap = gaps[self._next]
            if gap.earliest > ts:
                return
            if (gap.sid == sid and gap.got == seq) or gap.ts <= ts:
                self._next += 1
                for ticker in gap.tickers:
                    self.held.setdefault(ticker, (ts, 0))
                log.warning(
                    "replay: the archive has an order-book gap on sid %d (%d market(s)): their deltas are "
                    "held back until each one's next snapshot",
                    gap.sid,
                    len(gap.tickers),
                )
                continue
            return

    def holds(self, kind: str, ticker: str, ts: str) -> bool:
        """Whether this order-book message is held back; a snapshot ends its market's hold."""
        hold = self.held.get(ticker)
        if hold is None:
            return False
        if kind == ORDERBOOK_DELTA:
            self.held[ticker] = (hold[0], hold[1] + 1)
            return True
        del self.held[ticker]
        log.warning(
            "replay: %s resumes at its next snapshot after a gap: %d delta(s) over %.3f s held back",
            ticker,
            hold[1],
            (ts_ns(ts) - ts_ns(hold[0])) / 1e9,
        )
        return False
