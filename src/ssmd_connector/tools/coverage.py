"""``ssmd coverage``: per market, what the archive holds — answered from the archive alone (the
model: :mod:`ssmd_connector.coverage.model`, which says what an interval is)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path

from ..archive.layout import ledger_files
from ..archive.line import json_object
from ..archive.reading import Reader
from ..coverage.model import Coverage, MarketCoverage
from .read import Filter, outcome, records


def build(path: Path, flt: Filter, reader: Reader) -> list[MarketCoverage]:
    """The report for ``path``: the whole ledger replayed (what was subscribed when the window
    opens depends on what came before it), frames within the window, intervals clipped to it."""
    cov = Coverage()
    for ledger in ledger_files(path):
        for _, line in reader.lines(ledger):
            ev = json_object(line)
            if ev is not None and (not flt.end or str(ev.get("ts", "")) < flt.end):
                cov.event(ev)
    for _, obj in records(path, Filter(flt.start, flt.end), reader):
        cov.frame(obj["ts"], obj.get("data"))
    return cov.finish(flt.start, flt.end)


def select(markets: Iterable[MarketCoverage], ticker: str | None, series: str | None) -> Iterator[MarketCoverage]:
    for m in markets:
        if (ticker is None or m.ticker == ticker) and (series is None or m.series == series):
            yield m


def coverage(path: Path, flt: Filter, series: str | None, as_json: bool, strict: bool = False) -> int:
    reader = Reader()
    markets = list(select(build(path, flt, reader), flt.ticker, series))
    if as_json:
        for m in markets:
            sys.stdout.write(json.dumps({**asdict(m), "recorded": m.recorded}) + "\n")
        return outcome(reader, strict)
    print(f"{'market':<34} {'created':<20} {'subscribed from':<20} {'to':<20} {'frames':>8} {'gaps':>4} status")
    for m in markets:
        start = m.intervals[0][0] if m.intervals else None
        end = m.intervals[-1][1] if m.intervals else None
        note = "" if m.recorded or not m.matched else "  NEVER RECORDED"
        print(
            f"{m.ticker:<34} {_short(m.created):<20} {_short(start):<20} {_short(end, 'end'):<20} "
            f"{m.frames:>8} {m.gaps:>4} {m.status or '-'}{note}"
        )
    missed = sum(1 for m in markets if m.matched and not m.recorded)
    recorded = sum(1 for m in markets if m.recorded)
    print(f"{len(markets)} markets: {recorded} recorded, {missed} matched but never recorded")
    code = outcome(reader, strict)
    return 1 if missed and code == 0 and strict else code


def _short(ts: str | None, none: str = "-") -> str:
    return ts[:19] if ts else none
