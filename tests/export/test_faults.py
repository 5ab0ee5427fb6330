"""``ssmd export`` where it could go wrong quietly: a block that decodes whole yet hides a blank line
and a line of two values, a value Arrow would write as 0, a job's error that cannot be rebuilt in
the starting process, jobs outliving a killed export, a ledger problem said twice."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from ssmd_connector.archive.compression import CorruptMember
from ssmd_connector.archive.reading import Problem, Reader
from ssmd_connector.export import jobs
from ssmd_connector.export.frames import Source
from ssmd_connector.export.run import Export, Job, Options

from ..archives import T0_NS, rows, ts, write_archive
from ..faults.harness import SSMD
from .processes import job_pids
from .test_cli import ssmd_export


def _line(ns: int, frame: dict[str, Any]) -> bytes:
    return b'{"ts":"' + ts(ns).encode() + b'","feed":"kalshi","data":' + msgspec.json.encode(frame) + b"}\n"


def _source_read(path: Path) -> tuple[list[int], list[Problem]]:
    """The line numbers the export's decoder keeps, and what it reports."""
    problems: list[Problem] = []
    source = Source(Reader(on_problem=problems.append))
    numbers = []
    for lines in source.batches(path):
        numbers += [source.number(i) for i in range(len(lines))]
    return numbers, problems


# -- the block decoder ---------------------------------------------------------------------------


def test_a_blank_line_does_not_hide_a_line_holding_two_values(tmp_path: Path) -> None:
    """A blank line (one value fewer) and a line holding two objects (one more) in one block balance
    the decoded count: both are still reported at their own line, the two objects not read as two
    frames, and the lines between them keep their numbers."""
    trade = {"type": "trade", "sid": 2, "msg": {"market_ticker": "KXA-1", "trade_id": "a"}}
    path = tmp_path / "kalshi.jsonl"
    path.write_bytes(
        _line(T0_NS, trade)  # 1
        + b"\n"  # 2: blank
        + _line(T0_NS + 1, trade)  # 3
        + _line(T0_NS + 2, trade).rstrip(b"\n")
        + _line(T0_NS + 3, trade)  # 4: two objects on one line
    )
    numbers, problems = _source_read(path)
    assert [p.line for p in problems] == [2, 4]  # as line by line (and as the replay's reader)
    assert numbers == [1, 3]


def test_frames_of_types_without_a_table_change_no_row_and_are_no_problem(tmp_path: Path) -> None:
    """Frames the export has no table for (another channel's, a reply whose ``msg`` is an array)
    between market data: every table is what it is without them, and nothing is reported — in a
    block the typed union refuses (read again whole, never line by line) as in one read line by
    line (the same archive with a corrupt line in it)."""
    snap = {"market_ticker": "KXA-1", "yes_dollars_fp": [["0.5", "3"]], "no_dollars_fp": [["0.4", "2"]]}
    delta = {"market_ticker": "KXA-1", "price_dollars": "0.5", "delta_fp": "-1", "side": "yes"}
    data: list[dict[str, Any]] = [
        {"type": "orderbook_snapshot", "sid": 1, "seq": 1, "msg": snap},
        {"type": "orderbook_delta", "sid": 1, "seq": 2, "msg": delta},
        {"type": "trade", "sid": 2, "seq": 1, "msg": _trade_msg()},
    ]
    others: list[dict[str, Any]] = [
        {"type": "market_positions", "sid": 9, "msg": {"market_ticker": "KXA-1", "position_fp": "3.00"}},
        {"id": 4, "type": "ok", "msg": [{"channel": "orderbook_delta", "sid": 1}]},
        {"type": "ticker_v3", "sid": "eight", "msg": {"market_ticker": "KXB-2", "price": [1, 2]}},
    ]
    plain, mixed, torn = tmp_path / "plain", tmp_path / "mixed", tmp_path / "torn"
    for root, frames, tear in ((plain, data, False), (mixed, data, False), (torn, data, True)):
        body = b""
        for i, frame in enumerate(frames):
            body += _line(T0_NS + i * 1000, frame)
            if root is not plain:
                body += b"".join(_line(T0_NS + i * 1000 + 1, o) for o in others[: 2 if root is mixed else 3])
        if tear:
            body += b'{"ts":"corrupt\n'
        (root / ts(T0_NS)[:10]).mkdir(parents=True)
        (root / ts(T0_NS)[:10] / "kalshi.jsonl").write_bytes(body)
    tables = ("book_deltas", "quotes", "trades", "tickers")
    want = {t: rows(_exported(plain, tmp_path / "o-plain"), t) for t in tables}
    with pytest.MonkeyPatch.context() as m:
        m.setattr(Source, "_one_by_one", lambda *a: pytest.fail("a block of known lines read line by line"))
        got_mixed = _exported(mixed, tmp_path / "o-mixed")
        assert _source_read(mixed / ts(T0_NS)[:10] / "kalshi.jsonl") == ([1, 4, 7], [])
    for root, out in ((mixed, got_mixed), (torn, _exported(torn, tmp_path / "o-torn"))):
        for t in tables:
            got = [{k: v for k, v in r.items() if k != "ts"} for r in rows(out, t)]
            assert got == [{k: v for k, v in r.items() if k != "ts"} for r in want[t]], (root.name, t)
    numbers, problems = _source_read(torn / ts(T0_NS)[:10] / "kalshi.jsonl")
    assert [(p.line, p.reason) for p in problems] == [(13, "not an archive line (corrupt or torn)")]
    assert numbers == [1, 5, 9]


def test_whether_a_message_is_kept_does_not_depend_on_the_lines_around_it(tmp_path: Path) -> None:
    """A member the table does not use, of another type than Kalshi's (a trade with ``side: 1``),
    is passed over; a member it uses, of the wrong type (a delta's price as a number), makes the
    message malformed — the same whether its block decodes whole, is read again because of a
    frame of another type, or line by line because of a corrupt line."""
    trade = {"type": "trade", "sid": 2, "seq": 1, "msg": {**_trade_msg(), "side": 1}}
    snap = {"type": "orderbook_snapshot", "sid": 1, "seq": 1, "msg": {"market_ticker": "KXA-1", "yes_dollars_fp": []}}
    bad = {"market_ticker": "KXA-1", "price_dollars": 0.5, "delta_fp": "1", "side": "yes"}
    delta = {"type": "orderbook_delta", "sid": 1, "seq": 2, "msg": bad}
    other = {"type": "market_positions", "sid": 9, "msg": {"market_ticker": "KXA-1"}}
    for name, tail in (("alone", b""), ("beside", _line(T0_NS + 9, other)), ("corrupt", b"{\n")):
        path = tmp_path / name / ts(T0_NS)[:10] / "kalshi.jsonl"
        path.parent.mkdir(parents=True)
        path.write_bytes(_line(T0_NS, trade) + _line(T0_NS + 1, snap) + _line(T0_NS + 2, delta) + tail)
        problems: list[Problem] = []
        out = tmp_path / f"o-{name}"
        Export(tmp_path / name, out, Options(), Reader(on_problem=problems.append)).run()
        assert [r["trade_id"] for r in rows(out, "trades")] == ["t1"], name
        assert [p.line for p in problems if "orderbook_delta message not in" in p.reason] == [3], name
        assert [r["book_known"] for r in rows(out, "quotes")] == [True, False], name


def _trade_msg() -> dict[str, Any]:
    return {"market_ticker": "KXA-1", "trade_id": "t1", "yes_price_dollars": "0.5", "count_fp": "1.00"}


def _exported(archive: Path, out: Path) -> Path:
    problems: list[Problem] = []
    summary = Export(archive, out, Options(), Reader(on_problem=problems.append)).run()
    assert summary.problems == len(problems)
    return out


def test_a_book_value_finer_than_a_millionth_is_refused_not_rounded(tmp_path: Path) -> None:
    """The books count in millionths (the columns' scale): a price or size with a seventh decimal
    place could never be written exactly, so the export stops on it (exit 3, named), whichever
    book table is asked for; a trailing zero past the sixth place is no finer, and is kept."""
    snap = {"market_ticker": "KXA-1", "yes_dollars_fp": [["0.5", "1.0000000"]], "no_dollars_fp": []}
    for name, delta_fp, ok in (("fine", "0.0000001", False), ("zeros", "2.0000000", True)):
        delta = {"market_ticker": "KXA-1", "price_dollars": "0.5", "delta_fp": delta_fp, "side": "yes"}
        archive = write_archive(
            tmp_path / name,
            [
                (T0_NS, {"type": "orderbook_snapshot", "sid": 1, "seq": 1, "msg": snap}),
                (T0_NS + 1000, {"type": "orderbook_delta", "sid": 1, "seq": 2, "msg": delta}),
            ],
        )
        for table in ("book_deltas", "quotes", "book_snapshots"):
            out = tmp_path / f"o-{name}-{table}"
            done = ssmd_export(str(archive), "--out", str(out), "--tables", table, "--jobs", "1")
            if ok:
                assert done.returncode == 0, done.stderr
                continue
            assert done.returncode == 3 and "Traceback" not in done.stderr, (table, done.stderr)
            assert "'0.0000001' is not a decimal that fits" in done.stderr and "line 2" in done.stderr, done.stderr
            assert not rows(out, table)
        if ok:
            sizes = [r["size_after"] for r in rows(tmp_path / f"o-{name}-book_deltas", "book_deltas")]
            assert [str(s) for s in sizes] == ["1.000000", "3.000000"]


# -- never rounded -------------------------------------------------------------------------------


def test_a_line_whose_receive_time_is_not_one_is_reported_never_a_traceback(tmp_path: Path) -> None:
    """A line that is JSON but whose ``ts`` is not a time (a hand edit, a foreign tool): it is
    reported with its file and line and passed over, like a corrupt line; a time in another form is
    read; one that slipped into a book's timing (27 characters, sorting before every time) stops
    the export, naming it."""
    trade = {"type": "trade", "sid": 2, "msg": _trade_msg()}
    snap = {"type": "orderbook_snapshot", "sid": 1, "msg": {"market_ticker": "KXA-1", "yes_dollars_fp": []}}
    delta = {"market_ticker": "KXA-1", "price_dollars": "0.5", "delta_fp": "1", "side": "yes"}
    good = _line(T0_NS, trade)
    path = tmp_path / "a" / ts(T0_NS)[:10] / "kalshi.jsonl"
    path.parent.mkdir(parents=True)
    path.write_bytes(
        good
        + good.replace(ts(T0_NS).encode(), b"garbage")
        + good.replace(ts(T0_NS).encode(), b"X" * 27)
        + _line(T0_NS + 1000, trade)
    )
    done = ssmd_export(str(tmp_path / "a"), "--out", str(tmp_path / "o"), "--jobs", "1")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "kalshi.jsonl:2: not an archive line (receive time 'garbage' is not one)" in done.stderr
    assert f"kalshi.jsonl:3: not an archive line (receive time {'X' * 27!r} is not one)" in done.stderr
    assert len(rows(tmp_path / "o", "trades")) == 2

    # a time in another form (no fraction, milliseconds) is read, as the replay reads it
    later = _line(T0_NS + 123_000_000, trade)
    path.write_bytes(
        good.replace(ts(T0_NS).encode(), ts(T0_NS)[:19].encode() + b"Z")
        + later.replace(ts(T0_NS + 123_000_000).encode(), ts(T0_NS + 123_000_000)[:23].encode() + b"Z")
    )
    done = ssmd_export(str(tmp_path / "a"), "--out", str(tmp_path / "o1"), "--jobs", "1", "--strict")
    assert done.returncode == 0, done.stderr
    got = [r["ts"].strftime("%Y-%m-%dT%H:%M:%S.%fZ") for r in rows(tmp_path / "o1", "trades")]
    assert got == [ts(T0_NS), ts(T0_NS + 123_000_000)]

    early = _line(T0_NS, snap) + _line(T0_NS + 1, {"type": "orderbook_delta", "sid": 1, "msg": delta})
    path.write_bytes(early.replace(ts(T0_NS + 1).encode(), b"0" * 27))
    done = ssmd_export(str(tmp_path / "a"), "--out", str(tmp_path / "o2"), "--jobs", "1")
    assert done.returncode == 3 and "Traceback" not in done.stderr, done.stderr
    assert f"receive time {'0' * 27!r} is not one" in done.stderr, done.stderr


def test_a_batch_whose_every_decimal_text_is_empty_is_written_as_nulls(tmp_path: Path) -> None:
    """Kalshi sends ``""`` for a price never set (a market that never traded): a batch holding only
    such texts (a small export, one quiet market) is all nulls — not a crash."""
    msg = {"market_ticker": "KXA-1", "price_dollars": "", "yes_bid_dollars": "", "yes_ask_dollars": "", "volume_fp": ""}
    archive = write_archive(tmp_path / "a", [(T0_NS, {"type": "ticker", "sid": 3, "msg": msg})])
    done = ssmd_export(str(archive), "--out", str(tmp_path / "o"), "--jobs", "1")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    (row,) = rows(tmp_path / "o", "tickers")
    assert (row["price"], row["yes_bid"], row["volume"], row["market"]) == (None, None, None, "KXA-1")


def test_a_finer_book_value_only_stops_an_export_whose_rows_would_hold_it(tmp_path: Path) -> None:
    """A book value finer than a millionth before ``--from`` stops the export only if the book at
    ``--from`` still holds it (no snapshot replaced the book first); an export without a book table
    keeps no book, so such a value is no error there."""
    snap = {"market_ticker": "KXA-1", "yes_dollars_fp": [["0.5", "3"]], "no_dollars_fp": []}
    delta = {"market_ticker": "KXA-1", "price_dollars": "0.5", "delta_fp": "0.0000001", "side": "yes"}
    trade = {"market_ticker": "KXA-1", "trade_id": "t", "yes_price_dollars": "0.5", "count_fp": "1"}
    archive = write_archive(
        tmp_path / "a",
        [
            (T0_NS, {"type": "orderbook_snapshot", "sid": 1, "seq": 1, "msg": snap}),
            (T0_NS + 1000, {"type": "orderbook_delta", "sid": 1, "seq": 2, "msg": delta}),
            (T0_NS + 3000, {"type": "orderbook_snapshot", "sid": 1, "seq": 3, "msg": snap}),
            (T0_NS + 4000, {"type": "trade", "sid": 2, "seq": 1, "msg": trade}),
        ],
    )
    for n, (args, code) in enumerate(
        (
            (["--tables", "trades"], 0),
            (["--from", ts(T0_NS + 4000)], 0),  # (the second snapshot replaced the book before --from)
            (["--from", ts(T0_NS + 2000)], 3),  # (the book at --from holds the value)
            ([], 3),
        )
    ):
        done = ssmd_export(str(archive), "--out", str(tmp_path / f"o{n}"), "--jobs", "1", *args)
        assert done.returncode == code and "Traceback" not in done.stderr, (args, done.stderr)
        if code:
            assert "line 2" in done.stderr and "'0.0000001' is not a decimal that fits" in done.stderr, done.stderr
            assert ("in the book at --from" in done.stderr) == bool(args), done.stderr
        else:
            assert len(rows(tmp_path / f"o{n}", "trades")) == 1


def test_a_value_finer_than_any_column_is_never_written_as_zero(tmp_path: Path) -> None:
    """Arrow's decimal conversion writes a value of more than 38 digits (or scaled past 38 places)
    as 0 instead of refusing it. A change of -0.999…9 (45 places) on a size of 1 would leave a level
    of 1E-45: such a value (more places than any price or size Kalshi sends) is refused, as a trade
    price of 45 places is, written out or as an exponent (exit 3, nothing written)."""
    tiny = "0." + "0" * 44 + "1"
    nines = "-0." + "9" * 45
    snap = {"market_ticker": "KXA-1", "yes_dollars_fp": [["0.5", "1"]], "no_dollars_fp": []}
    frames: list[tuple[int, dict[str, Any]]] = [
        (T0_NS, {"type": "orderbook_snapshot", "sid": 1, "seq": 1, "msg": snap}),
        (
            T0_NS + 1000,
            {
                "type": "orderbook_delta",
                "sid": 1,
                "seq": 2,
                "msg": {"market_ticker": "KXA-1", "price_dollars": "0.5", "delta_fp": nines, "side": "yes"},
            },
        ),
        (
            T0_NS + 2 * 10**9,
            {"type": "trade", "sid": 2, "msg": {"market_ticker": "KXA-1", "trade_id": "t", "yes_price_dollars": tiny}},
        ),
    ]
    books = write_archive(tmp_path / "books", frames[:2])
    trades = write_archive(tmp_path / "trades", frames[2:])
    short = {"market_ticker": "KXA-1", "trade_id": "t", "yes_price_dollars": "0.5", "count_fp": "1E-45"}
    exponent = write_archive(tmp_path / "exponent", [(T0_NS, {"type": "trade", "sid": 2, "msg": short})])
    for archive, table, words in (
        (books, "quotes", "more than 18 decimal places"),
        (books, "book_snapshots", "more than 18 decimal places"),
        (trades, "trades", "yes_price"),
        (exponent, "trades", "count: '1E-45' is not a decimal that fits"),
    ):
        out = tmp_path / f"out-{archive.name}-{table}"
        done = ssmd_export(str(archive), "--out", str(out), "--tables", table, "--jobs", "1")
        assert done.returncode == 3 and words in done.stderr and "Traceback" not in done.stderr, (table, done.stderr)
        assert not rows(out, table)


# -- processes -----------------------------------------------------------------------------------


class _Unpicklable(Exception):
    def __init__(self, where: int, why: str) -> None:
        super().__init__(f"{where}: {why}")


def test_a_job_error_that_does_not_unpickle_still_ends_the_export_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job sends its error back pickled; one whose ``__init__`` takes other arguments than its
    ``args`` (``CorruptMember(offset, reason)``, the project's own) would not be rebuilt in the
    starting process: the job sends back what failed, as an error that travels (the export then
    ends with one line, exit 5), never one the starting process cannot read."""
    archive = write_archive(tmp_path / "a", [(T0_NS, {"type": "trade", "sid": 2, "msg": {"market_ticker": "K-1"}})])

    def fail(self: Export) -> None:
        raise CorruptMember(12, "bad data")

    monkeypatch.setattr(Export, "run_job", fail)
    monkeypatch.setattr(jobs, "_die_with", lambda parent: None)  # (this is the test's process)
    receive, send = multiprocessing.Pipe(duplex=False)
    jobs._job(archive, tmp_path / "o", Options(), Job(1, 2), send, os.getpid())  # a job's body, here
    ok, error = receive.recv()  # (rebuilt from its bytes, as the starting process does)
    assert not ok and isinstance(error, jobs.JobFailed), error
    assert "CorruptMember" in str(error) and "bad data" in str(error)


def _big(root: Path) -> Path:
    from bench.archive_gen import write_archive as write_big  # noqa: PLC0415

    write_big(root, 300_000, step_us=400_000)  # (several days)
    return root


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_jobs_do_not_outlive_the_process_that_started_them(tmp_path: Path, sig: signal.Signals) -> None:
    """The export killed (``kill -9``, the OOM killer, ``kill``/``systemctl stop``): its jobs end
    with it — not reading the archive on for nobody into the request's temporary directory (which
    a re-run of the same request would be using), nor printing a traceback at the end."""
    archive = _big(tmp_path / "a")
    proc = subprocess.Popen(
        [str(SSMD), "export", str(archive), "--out", str(tmp_path / "o"), "--jobs", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    deadline = time.monotonic() + 30
    children: list[int] = []
    while time.monotonic() < deadline and len(children) < 2:
        children = job_pids(proc.pid)
        time.sleep(0.05)
    assert len(children) == 2
    time.sleep(1)
    proc.send_signal(sig)
    proc.wait(timeout=30)
    time.sleep(3)
    alive = [pid for pid in children if Path(f"/proc/{pid}").exists()]
    for pid in alive:  # (clean up what the test started)
        os.kill(pid, signal.SIGKILL)
    assert not alive, "export jobs still running after their parent died"


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_an_export_stopped_by_a_signal_says_so_in_one_line_and_leaves_nothing(
    tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    """``kill`` (``systemctl stop``) or Ctrl-C while the jobs write: every job stopped, the
    temporary files removed, one line and 128 + the signal's number — never a traceback."""
    archive = _big(tmp_path / "a")
    out = tmp_path / "o"
    proc = subprocess.Popen(
        [str(SSMD), "export", str(archive), "--out", str(out), "--jobs", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    children: list[int] = []
    while time.monotonic() < deadline and not (len(children) == 2 and list(out.glob(".tmp-*/*"))):
        children = job_pids(proc.pid)  # (until both jobs run and write)
        time.sleep(0.05)
    assert len(children) == 2 and proc.poll() is None, "the export did not get to its jobs writing"
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)

    assert proc.returncode == code, stderr
    assert f"stopped by {sig.name}; nothing was replaced" in stderr and "Traceback" not in stderr, stderr
    assert not list(out.rglob("*.parquet")), "nothing replaced"
    assert not [p.name for p in out.iterdir() if p.name.startswith(".tmp-")], "temporary files left behind"
    time.sleep(1)
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists()], "jobs still running"


# -- problems said once --------------------------------------------------------------------------


@pytest.mark.parametrize("n", ["1", "2"])
def test_a_torn_ledger_line_is_reported_once(tmp_path: Path, n: str) -> None:
    """The ledgers are read twice (for the NO-price convention, then by the export): a torn last
    ledger line (a recorder killed mid-write) is still warned about and counted once, with any
    ``--jobs``."""
    trade = {"type": "trade", "sid": 2, "msg": {"market_ticker": "KXA-1", "trade_id": "a", "yes_price_dollars": "0.5"}}
    archive = write_archive(tmp_path / "a", [(T0_NS, trade)], [{"ts": ts(T0_NS - 10), "event": "connect"}])
    with (archive / "2026-11-25" / "kalshi.events.jsonl").open("ab") as f:
        f.write(b'{"ts":"2026-11-25T07:2')
    done = ssmd_export(str(archive), "--out", str(tmp_path / "o"), "--jobs", n)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("torn last line") == 1, done.stderr
    assert "1 unreadable line(s) skipped" in done.stderr
