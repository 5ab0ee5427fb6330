"""``ssmd export DIR --out OUT``: the archive as Parquet research datasets (see :mod:`ssmd_connector.export`).

Bad input is told plainly, naming what is wrong and what was expected, with its own exit status,
never a traceback: 2 for the command line (a missing archive, a time that is not one, an unknown
table), 3 for data that cannot be exported exactly (a value finer than its decimal column, a
receive time that is not one),
4 when the output cannot be written, 5 when one of the export's processes (``--jobs``) died (killed,
out of memory), 128 + N when stopped by signal N (Ctrl-C: 130; every job stopped, nothing replaced).
1 with ``--strict`` when archive lines had to be skipped.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from ..archive import Reader
from ..archive.reading import archive_files, silent
from ..export.jobs import JobFailed, default_jobs
from ..export.jobs import export as run_export
from ..export.run import Options
from ..export.tables import TABLES, NotExportable
from ..export.writer import OutputClash
from .book import convention
from .read import normalize_ts

BAD_INPUT, NOT_EXACT, NOT_WRITABLE, JOB_FAILED = 2, 3, 4, 5
MAX_JOBS = 64


class Terminated(BaseException):
    """SIGTERM, raised where the export is, so it stops its jobs and removes its files on the way
    out (as for Ctrl-C)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _terminated(signum: int, frame: object) -> None:
    raise Terminated(signum)


def _names(text: str | None, what: str) -> frozenset[str] | None:
    if text is None:
        return None
    names = frozenset(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise ValueError(f"--{what}: expected a comma-separated list, got {text!r}")
    return names


def export(
    path: Path,
    out: Path,
    *,
    start: str | None = None,
    end: str | None = None,
    series: str | None = None,
    tickers: str | None = None,
    tables: str | None = None,
    snapshot_every: float = 1.0,
    depth: int = 25,
    yes_price: bool | None = None,
    feed: str | None = None,
    strict: bool = False,
    jobs: int | None = None,
) -> int:
    def bad(text: str) -> int:
        print(f"ssmd export: {text}", file=sys.stderr)
        return BAD_INPUT

    if not path.exists():
        return bad(f"{path}: no such file or directory (expected an archive: its root, a day directory or a file)")
    try:
        opts_start, opts_end = normalize_ts(start), normalize_ts(end)
    except ValueError as exc:
        return bad(f"{exc} (times are UTC ISO 8601, e.g. 2026-11-24T10:00:00Z)")
    try:
        chosen = _names(tables, "tables")
        ticker_set, series_set = _names(tickers, "tickers"), _names(series, "series")
    except ValueError as exc:
        return bad(str(exc))
    if chosen is not None and (unknown := sorted(chosen - set(TABLES))):
        return bad(f"--tables: unknown table(s) {', '.join(unknown)}; expected some of {', '.join(TABLES)}")
    if opts_start and opts_end and opts_start >= opts_end:
        return bad(f"--from {start} is not before --to {end}")
    if not 0.001 <= snapshot_every <= 86_400:
        return bad(f"--snapshot-every: expected seconds between 0.001 and 86400, got {snapshot_every}")
    if depth < 1:
        return bad(f"--depth: expected at least 1 level, got {depth}")
    if jobs is not None and not 1 <= jobs <= MAX_JOBS:
        return bad(f"--jobs: expected 1 to {MAX_JOBS} processes, got {jobs}")
    if out.exists() and not out.is_dir():
        return bad(f"--out {out}: exists and is not a directory")
    files = archive_files(path, feed)
    if not files:
        of = f" of feed {feed!r}" if feed else ""
        return bad(f"{path}: no archive files{of} (expected <feed>.jsonl[.zst|.gz] files, in day directories)")
    if yes_price is None:
        found = convention(path, Reader(on_problem=silent))  # (the export reads the ledgers again, and reports)
        if len(found) > 1:
            return bad(
                f"{path}: order books were subscribed both with and without use_yes_price: "
                "say which prices the NO side carries with --yes-price or --no-price"
            )
        yes_price = found == {True}
    options = Options(
        start=opts_start,
        end=opts_end,
        tickers=ticker_set,
        series=series_set,
        tables=chosen or frozenset(TABLES),
        snapshot_every_us=round(snapshot_every * 1_000_000),
        depth=depth,
        yes_price=yes_price,
        feed=feed,
    )
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        jobs = jobs or default_jobs(files)
        summary = run_export(path, out, options, jobs)
    except (KeyboardInterrupt, Terminated) as exc:  # (every job stopped, the temporary files removed)
        number = exc.signum if isinstance(exc, Terminated) else signal.SIGINT
        print(f"ssmd export: stopped by {signal.Signals(number).name}; nothing was replaced", file=sys.stderr)
        return 128 + number
    except OutputClash as exc:
        return bad(f"--out {exc}")
    except NotExportable as exc:
        print(f"ssmd export: {path}: {exc}; nothing was replaced", file=sys.stderr)
        return NOT_EXACT
    except OSError as exc:
        print(
            f"ssmd export: cannot write {exc.filename or out}: {exc.strerror or exc}; nothing was replaced",
            file=sys.stderr,
        )
        return NOT_WRITABLE
    except JobFailed as exc:
        print(f"ssmd export: {exc}; nothing was replaced", file=sys.stderr)
        return JOB_FAILED
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not summary.frames:
        return bad(f"{path}: no archive lines{f' of feed {feed!r}' if feed else ''} (nothing exported)")
    rate = summary.frames / summary.seconds if summary.seconds else 0.0
    by = f", {jobs} jobs" if jobs > 1 else ""
    print(f"{summary.frames:,} archive lines in {summary.seconds:.1f} s ({rate:,.0f}/s{by}) → {out}")
    for table in sorted(summary.rows):
        print(f"  {table:<15} {summary.rows[table]:>12,} rows")
    if summary.unknown_deltas:
        print(f"  {summary.unknown_deltas:,} delta(s) while a book was not known (book_known = false)")
    if summary.malformed:
        print(f"  {summary.malformed:,} market-data message(s) not in Kalshi's documented shape (skipped, reported)")
    problems = summary.problems
    if problems:
        print(f"{problems} unreadable line(s) skipped", file=sys.stderr)
    return 1 if strict and problems else 0
