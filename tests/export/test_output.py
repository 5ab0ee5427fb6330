"""The output directory: temporary files never inside the partition tree (a reader globbing a table
meets only finished files, even after ``kill -9``), a killed run's leftovers removed by the next run
(never a running one's), and a different request into the same partition refused, not mixed in."""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ssmd_connector.export import writer
from ssmd_connector.export.run import Export, Options
from ssmd_connector.export.writer import Output

from ..archives import rows, write_archive
from .test_cli import _trade, ssmd_export


def test_a_killed_runs_temporary_files_are_outside_the_tables_and_removed_by_the_next_run(tmp_path: Path) -> None:
    archive = write_archive(tmp_path / "a", [_trade(i) for i in range(3)])
    out = tmp_path / "o"
    options = Options(tables=frozenset({"trades"}))
    Export(archive, out, options).run()

    killed = Output(out, "0123456789abcdef")  # a run killed while writing: its lock dies with it
    killed.start()
    killed.write("trades", _rows("2026-11-24"))
    killed.close_before("9999")  # (its file written, not committed)
    assert killed._lock is not None
    os.close(killed._lock)
    running = Output(out, "fedcba9876543210")  # a run still writing: holds its lock
    running.start()
    running.write("trades", _rows("2026-11-26"))
    running.close_before("9999")
    assert [p.parent.name for p in out.glob(".tmp-*/trades/*/*.tmp")] == ["date=2026-11-26"]  # (the killed one's: gone)

    assert {p.suffix for p in (out / "trades").rglob("*") if p.is_file()} == {".parquet"}
    assert pl.scan_parquet(out / "trades" / "**" / "*.parquet").collect().height == 3

    Export(archive, out, options).run()
    leftovers = sorted(p.name for p in out.iterdir() if p.name.startswith("."))
    assert leftovers == [".tmp-fedcba9876543210", ".tmp-fedcba9876543210.lock"]  # the killed run's: gone
    running.discard()
    assert [p.name for p in out.iterdir()] == ["trades"]


def _rows(day: str) -> list[list[object]]:
    """One trade row received on ``day``, as the columns ``Output.write`` takes."""
    msg = _trade(7)[1]["msg"]
    row = (f"{day}T07:20:00.000000Z", None, msg["market_ticker"], msg["trade_id"], msg["yes_price_dollars"])
    return [[value] for value in (*row, msg["no_price_dollars"], msg["count_fp"], "yes", None, None, False)]


def test_a_different_request_into_the_same_partition_is_refused(tmp_path: Path) -> None:
    archive = write_archive(tmp_path / "a", [_trade(i) for i in range(3)])
    out = tmp_path / "o"
    assert ssmd_export(str(archive), "--out", str(out), "--tables", "trades").returncode == 0
    before = sorted(out.rglob("*"))
    done = ssmd_export(str(archive), "--out", str(out), "--tables", "trades", "--tickers", "KXA-1")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "trades/date=2026-11-25 already holds part-" in done.stderr and "different export request" in done.stderr
    assert sorted(out.rglob("*")) == before and len(rows(out, "trades")) == 3  # nothing added
    assert ssmd_export(str(archive), "--out", str(out), "--tables", "trades").returncode == 0  # the same request
    assert len(rows(out, "trades")) == 3


def test_the_same_request_running_twice_at_once_is_refused(tmp_path: Path) -> None:
    archive = write_archive(tmp_path / "a", [_trade(i) for i in range(3)])
    out = tmp_path / "o"
    options = Options(tables=frozenset({"trades"}))
    key = options.key(archive)
    out.mkdir()
    fd = os.open(out / f".tmp-{key}.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        done = ssmd_export(str(archive), "--out", str(out), "--tables", "trades")
        assert done.returncode == 2 and "already running" in done.stderr, done.stderr
    finally:
        os.close(fd)
    assert not (out / "trades").exists()


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["2026-11-24", "2026-11-25", "2026-11-26"]), st.integers(1, 40)), max_size=25)
)
def test_rows_wait_for_whole_row_groups_and_every_one_is_written(writes: list[tuple[str, int]]) -> None:
    """Converted rows wait until they make a whole row group (7 rows here); whatever the sizes of
    the writes, the days they come for and a day closed before its late rows come (a further
    file): every row is in the files once, in order, each file's groups whole but its last, and
    the rows counted are the rows written."""
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as m:
        m.setattr(writer, "ROWS_PER_GROUP", 7)
        out = Output(Path(tmp), "0123456789abcdef")
        out.start()
        sent: dict[str, list[str]] = {}
        for n, (day, count) in enumerate(writes):
            ids = [f"{n}-{i}" for i in range(count)]
            sent.setdefault(day, []).extend(ids)
            out.write("trades", _columns(day, ids))
            if n % 5 == 4:
                out.close_before(day)  # (earlier days' files closed: their late rows go to a further file)
        files = out.commit()
        got: dict[str, list[str]] = {}
        for path in sorted(files, key=lambda p: (p.parent.name, len(p.name), p.name)):
            meta = pq.ParquetFile(path).metadata
            groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
            assert all(g == 7 for g in groups[:-1]) and 0 < groups[-1] <= 7, (path.name, groups)
            got.setdefault(path.parent.name.removeprefix("date="), []).extend(
                pq.read_table(path)["trade_id"].to_pylist()
            )
        assert got == {day: ids for day, ids in sent.items()}
        assert out.rows.get("trades", 0) == sum(count for _, count in writes)


def _columns(day: str, ids: list[str]) -> list[list[object]]:
    """Trade rows of ``day`` with the given trade ids, as the columns ``Output.write`` takes."""
    n = len(ids)
    none: list[object] = [None] * n
    return [[f"{day}T07:20:00.000000Z"] * n, none, ["KXA-1"] * n, list(ids), *([none] * 7)]
