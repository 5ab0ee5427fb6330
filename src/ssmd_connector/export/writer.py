"""Date-partitioned Parquet output, replaced atomically: ``OUT/<table>/date=YYYY-MM-DD/part-<key>.parquet``.

Why this shape: Hive-style ``date=`` directories are what DuckDB (``hive_partitioning``) and
polars (``scan_parquet(..., hive_partitioning=True)``) prune on. One file per table, day and *run
key* — the key is derived from what was asked (archive, window, markets, options) — so running the
same export again writes the same names, and they are replaced, never duplicated.

Temporary files live outside the partition tree, in ``OUT/.tmp-<key>/`` (a reader globbing
``OUT/<table>/**`` never meets one), and are moved over their final names with one ``os.replace``
each only when the whole run has succeeded. A run holds ``OUT/.tmp-<key>.lock`` while it writes;
the next run removes any temporary directory whose lock nobody holds (a run killed with ``kill -9``).
A run that fails leaves the previous output as it was and removes its temporary files.

A different request into the same ``OUT`` would add its rows beside the first one's — duplicates a
reader cannot tell apart — so a partition that already holds a file of another key is refused
(:class:`OutputClash`): one request per ``--out`` and day.

Memory: rows are handed over in batches and written as row groups as they come, and a day's files
are closed once the archive has moved past that day (rows for it after that go to a further file,
``part-<key>-<n>.parquet``), so only the current batches and day stay in memory.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .tables import SCHEMAS, batch

DICTIONARY = {table: [f.name for f in schema if pa.types.is_string(f.type)] for table, schema in SCHEMAS.items()}
"""Columns written with Parquet's dictionary encoding: the texts (markets, sides, sources repeat
endlessly). Not times, prices or sizes: nearly every value differs, and a dictionary made them
both slower to write and larger (measured: half the time and 30 % smaller without one)."""

TIMES = {
    table: {f.name: "DELTA_BINARY_PACKED" for f in schema if pa.types.is_timestamp(f.type)}
    for table, schema in SCHEMAS.items()
}
"""Times written as deltas from one to the next (rows come in time order): 7 % smaller files and
faster to write than plain."""
STATISTICS = {
    table: [f.name for f in schema if f.name == "market" or pa.types.is_timestamp(f.type)]
    for table, schema in SCHEMAS.items()
}
"""Columns with min/max statistics per row group — times and markets, what readers prune on.
Not prices and sizes: their statistics took a sixth of the writing time (measured)."""

ROWS_PER_BATCH = 2_500
"""Rows buffered per table (as Python values) before they become Arrow arrays: small enough that
they are still in the core's cache when converted (measured with two jobs: 20,000 took 12 %
longer than 5,000, which took 4 % longer than 2,500)."""
ROWS_PER_GROUP = 65_536
"""Rows per Parquet row group: converted batches wait, as Arrow data (compact), until there are
this many — readers (DuckDB, polars) read large groups faster than many small ones."""

TMP_PREFIX = ".tmp-"

DAY_COLUMN = {table: "start" if table == "coverage" else "ts" for table in SCHEMAS}
"""The time that decides a row's partition: its receive time (a coverage interval: its start)."""
_US_PER_DAY = 86_400_000_000
_EPOCH = date(1970, 1, 1)


def _day_name(n: int) -> str:
    """Day ``n`` since the epoch as a partition's date (``2026-11-24``)."""
    return (_EPOCH + timedelta(days=n)).isoformat()


@dataclass(frozen=True)
class Written:
    """What one job wrote: its closed temporary files (with their final names) and the partitions it
    wrote to (its row counts are in its summary)."""

    files: list[tuple[Path, Path]]
    parts: list[tuple[str, str]]


class OutputClash(ValueError):
    """The output directory holds, where this run would write, a file from a different request."""


def _key_of(name: str) -> str | None:
    """The run key of a ``part-<key>[-<n>].parquet`` name."""
    if not (name.startswith("part-") and name.endswith(".parquet")):
        return None
    return name[len("part-") : -len(".parquet")].split("-", maxsplit=1)[0]


class Output:
    """The Parquet files of one run, committed or discarded together."""

    def __init__(self, root: Path, key: str, job: int | None = None) -> None:
        self.root = root
        self.key = key
        self.job = job
        """One of several processes writing this run (``--jobs``): its files are named
        ``part-<key>-j<job>[-<n>].parquet``, and the process that started the run commits them."""
        self.tmp = root / f"{TMP_PREFIX}{key}"
        self._lock: int | None = None
        self._open: dict[tuple[str, str], tuple[pq.ParquetWriter, Path, Path]] = {}
        self._waiting: dict[tuple[str, str], list[pa.RecordBatch]] = {}
        """Converted batches not yet written, until they make a row group (:data:`ROWS_PER_GROUP`)."""
        self._closed: list[tuple[Path, Path]] = []
        self._parts: dict[tuple[str, str], int] = {}
        self.rows: dict[str, int] = {}

    def start(self) -> None:
        """Take this request's lock, and remove temporary files of runs that are gone."""
        self.root.mkdir(parents=True, exist_ok=True)
        for lock in sorted(self.root.glob(f"{TMP_PREFIX}*.lock")):
            _remove_if_stale(lock)
        for leftover in sorted(self.root.glob(f"{TMP_PREFIX}*")):  # a directory whose lock is gone
            if leftover.is_dir() and not leftover.with_name(leftover.name + ".lock").exists():
                shutil.rmtree(leftover, ignore_errors=True)
        fd = os.open(self.tmp.with_name(self.tmp.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputClash(f"{self.root}: the same export is already running into it") from None
        self._lock = fd
        shutil.rmtree(self.tmp, ignore_errors=True)

    def final_path(self, table: str, day: str, part: int = 0) -> Path:
        stem = f"part-{self.key}" if self.job is None else f"part-{self.key}-j{self.job}"
        name = f"{stem}.parquet" if not part else f"{stem}-{part}.parquet"
        return self.root / table / f"date={day}" / name

    def write(self, table: str, columns: Sequence[Sequence[object]]) -> None:
        """Append buffered rows of ``table``, given as its columns (in :data:`~.tables.TABLES`
        order), each row to the partition of its own receive day (coverage: its start) — whatever
        their order (a clock stepped back across midnight, a snapshot tick written after the
        archive moved on to the next day)."""
        if not columns[0]:
            return
        record = batch(table, columns)
        days = pc.divide(record.column(DAY_COLUMN[table]).cast(pa.int64()), _US_PER_DAY)
        first, last = (v.as_py() for v in pc.min_max(days).values())
        if first == last:
            self._wait(table, _day_name(first), record)
            return
        for n in sorted(set(days.to_pylist())):  # (rare: rows of several days in one batch)
            self._wait(table, _day_name(n), record.filter(pc.equal(days, n)))

    def _wait(self, table: str, day: str, record: pa.RecordBatch) -> None:
        waiting = self._waiting.setdefault((table, day), [])
        waiting.append(record)
        if sum(b.num_rows for b in waiting) >= ROWS_PER_GROUP:
            self._write_waiting(table, day, whole_groups=True)

    def _write_waiting(self, table: str, day: str, whole_groups: bool = False) -> None:
        """Write the waiting batches of ``table`` and ``day`` as row groups — only whole ones
        (the rest waits for more) unless the file is being closed."""
        waiting = self._waiting.pop((table, day), None)
        if not waiting:
            return
        rows = pa.Table.from_batches(waiting)
        cut = rows.num_rows - rows.num_rows % ROWS_PER_GROUP if whole_groups else rows.num_rows
        self._ensure(table, day).write_table(rows.slice(0, cut), row_group_size=ROWS_PER_GROUP)
        self.rows[table] = self.rows.get(table, 0) + cut  # (counted as written, never as handed over)
        if cut < rows.num_rows:
            self._waiting[(table, day)] = rows.slice(cut).to_batches()

    def _ensure(self, table: str, day: str) -> pq.ParquetWriter:
        entry = self._open.get((table, day))
        if entry is None:
            part = self._parts.get((table, day))
            if part is None:
                self._check(table, day)
                part = 0
            else:
                part += 1
            self._parts[(table, day)] = part
            final = self.final_path(table, day, part)
            tmp = self.tmp / table / f"date={day}" / f"{final.name}.tmp"
            tmp.parent.mkdir(parents=True, exist_ok=True)
            writer = pq.ParquetWriter(
                tmp,
                SCHEMAS[table],
                compression="zstd",
                use_dictionary=DICTIONARY[table],
                column_encoding=TIMES[table],
                write_statistics=STATISTICS[table],
            )
            entry = self._open[(table, day)] = (writer, tmp, final)
        return entry[0]

    def _check(self, table: str, day: str) -> None:
        where = self.root / table / f"date={day}"
        if not where.is_dir():
            return
        for p in sorted(where.iterdir()):
            other = _key_of(p.name)
            if other is not None and other != self.key:
                raise OutputClash(
                    f"{where} already holds {p.name}, written by a different export request "
                    f"(this one is {self.key}): use another --out, or remove that file"
                )

    def close_before(self, day: str) -> None:
        """Close the files of days before ``day`` (the archive has moved past them)."""
        for table, d in [key for key in self._waiting if key[1] < day]:
            self._write_waiting(table, d)
        for (table, d), (writer, tmp, final) in list(self._open.items()):
            if d < day:
                writer.close()
                self._closed.append((tmp, final))
                del self._open[(table, d)]

    def commit(self) -> list[Path]:
        """Close every file and move each over its final name (atomic per file)."""
        self.close_before("9999")
        done = []
        for tmp, final in self._closed:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
            done.append(final)
        written = set(done)
        for table, day in self._parts:  # a previous run of this request wrote more parts: not ours now
            where = self.root / table / f"date={day}"
            for p in [where / f"part-{self.key}.parquet", *where.glob(f"part-{self.key}-*.parquet")]:
                if p not in written:
                    p.unlink(missing_ok=True)
        self._closed.clear()
        self._release()
        return done

    def finish(self) -> Written:
        """A job's end: every file closed, left in the temporary directory for :meth:`adopt`."""
        self.close_before("9999")
        written = Written(list(self._closed), sorted(self._parts))
        self._closed.clear()
        return written

    def adopt(self, written: Written) -> None:
        """Take a job's files into this run: committed (or discarded) with its own."""
        self._closed.extend(written.files)
        for part in written.parts:
            self._parts.setdefault(part, 0)

    def discard(self) -> None:
        """Close and remove every temporary file; the previous output stays untouched."""
        self._waiting.clear()
        for writer, _, _ in self._open.values():
            with contextlib.suppress(Exception):
                writer.close()
        self._open.clear()
        self._closed.clear()
        self._release()

    def _release(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self._lock is not None:
            self.tmp.with_name(self.tmp.name + ".lock").unlink(missing_ok=True)
            os.close(self._lock)
            self._lock = None


def _remove_if_stale(lock: Path) -> None:
    """Remove a temporary directory and its lock if no running export holds the lock."""
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # a running export's
        shutil.rmtree(lock.with_name(lock.name.removesuffix(".lock")), ignore_errors=True)
        lock.unlink(missing_ok=True)
    finally:
        os.close(fd)
