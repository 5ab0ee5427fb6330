"""Date-partitioned Parquet output, replaced atomically: ``OUT/<table>/date=YYYY-MM-DD/part-<key>.parquet``.

Why this shape: Hive-style ``date=`` directories are what DuckDB (``hive_partitioning``) and
polars (``scan_parquet(..., hive_partitioning=True)``) prune on. One file per table, day and *run
key* — the key is derived from what was asked (archive, window, markets, options) — so running the
same export again writes the same names: each file is written beside its final name as
``.part-<key>.parquet.tmp`` and moved over it with one ``os.replace`` only when the whole run has
succeeded. Readers never see a half-written file, and a re-run never duplicates rows. A run that
fails leaves the previous output as it was and removes its temporary files.

Memory: rows are handed over in batches and written as row groups as they come, so a day of any
size needs only the current batches in memory.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .tables import SCHEMAS, batch

ROWS_PER_BATCH = 100_000
"""Rows buffered per table before they become a row group (bounded memory, efficient groups)."""


class Output:
    """The open Parquet files of one run, committed or discarded together."""

    def __init__(self, root: Path, key: str) -> None:
        self.root = root
        self.key = key
        self._open: dict[tuple[str, str], tuple[pq.ParquetWriter, Path, Path]] = {}
        self.rows: dict[str, int] = {}

    def final_path(self, table: str, day: str) -> Path:
        return self.root / table / f"date={day}" / f"part-{self.key}.parquet"

    def write(self, table: str, day: str, buffers: list[list[object]]) -> None:
        """Append buffered rows of ``table`` received on ``day`` (one row group)."""
        if not buffers or not buffers[0]:
            return
        record = batch(table, buffers)
        self._ensure(table, day).write_batch(record)
        self.rows[table] = self.rows.get(table, 0) + record.num_rows

    def write_table(self, table: str, day: str, data: pa.Table) -> None:
        for rb in data.to_batches():
            self._ensure(table, day).write_batch(rb)
            self.rows[table] = self.rows.get(table, 0) + rb.num_rows

    def _ensure(self, table: str, day: str) -> pq.ParquetWriter:
        entry = self._open.get((table, day))
        if entry is None:
            final = self.final_path(table, day)
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = final.with_name(f".{final.name}.tmp")
            entry = self._open[(table, day)] = (pq.ParquetWriter(tmp, SCHEMAS[table], compression="zstd"), tmp, final)
        return entry[0]

    def commit(self) -> list[Path]:
        """Close every file and move each over its final name (atomic per file)."""
        done = []
        for writer, tmp, final in self._open.values():
            writer.close()
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, final)
            done.append(final)
        self._open.clear()
        return done

    def discard(self) -> None:
        """Close and remove every temporary file; the previous output stays untouched."""
        for writer, tmp, _ in self._open.values():
            with contextlib.suppress(Exception):
                writer.close()
            tmp.unlink(missing_ok=True)
        self._open.clear()
