"""``ssmd export --jobs N``: several processes, each keeping the markets that hash to it, write
exactly the rows one process writes — books across gaps, disconnects and a restart, an event's
lifecycle giving its markets' series, a day change — every unreadable line reported once, a
re-run with another ``--jobs`` replacing the files, and a job killed mid-run replacing nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from ssmd_connector.export import jobs
from ssmd_connector.sim.market import MarketModel

from ..archives import rows, ts, write_archive
from ..faults.harness import SSMD
from .processes import job_pids, state
from .test_cli import ssmd_export

START_NS = 1_795_737_480_000_000_000  # 2026-11-25T23:58:00Z: the archive crosses midnight
TABLES = ("trades", "book_deltas", "book_snapshots", "quotes", "tickers", "lifecycle", "coverage")
SIDS = {"orderbook_delta": 1, "trade": 2, "ticker": 3, "market_lifecycle_v2": 4}


def _archive(root: Path) -> tuple[Path, list[str]]:
    """Four minutes of twelve markets, with everything that makes a book unknown (a gap, a
    reconnection, a recorder restart: books back at the next snapshots), an event's lifecycle, a
    torn line and a malformed delta."""
    model = MarketModel(12, seed=4, now=START_NS / 1e9)
    tickers = sorted(model.open_tickers)
    seq = dict.fromkeys(SIDS, 0)
    frames: list[tuple[int, dict[str, Any]]] = []
    ledger: list[dict[str, Any]] = [
        {"ts": ts(START_NS - 1000), "event": "connect"},
        {"ts": ts(START_NS - 500), "event": "subscribed", "sid": 1, "channel": "orderbook_delta", "tickers": tickers},
    ]

    def add(ns: int, channel: str, kind: str, msg: dict[str, Any]) -> None:
        seq[channel] += 1
        frames.append((ns, {"type": kind, "sid": SIDS[channel], "seq": seq[channel], "msg": msg}))

    def snapshots(ns: int) -> None:
        for t in tickers:
            add(ns, "orderbook_delta", "orderbook_snapshot", model.snapshot_msg(t))

    snapshots(START_NS)
    event = {"event_ticker": "KXNEWEV-26NOV26", "series_ticker": "KXNEWSERIES", "title": "new"}
    created = {**model.created_msg(tickers[0]), "market_ticker": "KXNEWEV-26NOV26-T2"}
    created["additional_metadata"] = {**created.get("additional_metadata", {}), "event_ticker": "KXNEWEV-26NOV26"}
    ns = START_NS
    for i in range(2400):
        ns += 100_000_000
        for channel, _, kind, msg in model.step(ns / 1e9):
            add(ns, channel, kind, msg)
        if i == 600:
            frames.append((ns, {"type": "event_lifecycle", "sid": 4, "msg": event}))  # (no market: no seq)
            add(ns + 1, "market_lifecycle_v2", "market_lifecycle_v2", created)
            ledger.append(
                {
                    "ts": ts(ns + 2),
                    "event": "markets_changed",
                    "sid": 1,
                    "channel": "orderbook_delta",
                    "action": "add_markets",
                    "tickers": [created["market_ticker"]],
                }
            )
        elif i == 700:  # the next delta reveals a gap (its seq skips one) in three markets
            seq["orderbook_delta"] += 1
            revealed = [t for t in tickers if t not in (tickers[0], tickers[7])][i % 10]
            delta = {"market_ticker": revealed, "price_dollars": "0.5000", "delta_fp": "1.00", "side": "yes"}
            add(ns + 1, "orderbook_delta", "orderbook_delta", delta)
            ledger.append(
                {
                    "ts": ts(ns + 1000),
                    "event": "gap",
                    "sid": 1,
                    "channel": "orderbook_delta",
                    "got": seq["orderbook_delta"],
                    "tickers": [revealed, tickers[0], tickers[7]],
                }
            )
        elif i == 900:
            bad = {"market_ticker": tickers[5], "price_dollars": "abc", "delta_fp": "1.00", "side": "yes"}
            add(ns + 1, "orderbook_delta", "orderbook_delta", bad)
        elif i == 1200:
            ledger.append({"ts": ts(ns + 1), "event": "disconnect"})
        elif i == 1210:
            ledger.append({"ts": ts(ns + 1), "event": "connect"})
            ledger.append(
                {"ts": ts(ns + 2), "event": "subscribed", "sid": 1, "channel": "orderbook_delta", "tickers": tickers}
            )
            snapshots(ns + 3)
        elif i == 1800:
            ledger.append({"ts": ts(ns + 1), "event": "recorder_started"})
            snapshots(ns + 2)
    half = len(frames) // 2
    write_archive(root, frames[:half], ledger)
    day = root / ts(frames[half - 1][0])[:10]
    with (day / "kalshi.jsonl").open("ab") as f:
        f.write(b'{"ts":"2026-11-2\n')  # a torn line
    write_archive(root, frames[half:])
    return root, tickers


def _table(out: Path, table: str) -> Counter[tuple[tuple[str, str], ...]]:
    return Counter(tuple(sorted((k, repr(v)) for k, v in r.items())) for r in rows(out, table))


def test_several_jobs_write_exactly_what_one_does_and_say_each_problem_once(tmp_path: Path) -> None:
    archive, tickers = _archive(tmp_path / "a")
    one, three = tmp_path / "one", tmp_path / "three"
    done1 = ssmd_export(str(archive), "--out", str(one), "--jobs", "1")
    done3 = ssmd_export(str(archive), "--out", str(three), "--jobs", "3")
    assert done1.returncode == 0 and done3.returncode == 0, done1.stderr + done3.stderr
    assert ", 3 jobs) →" in done3.stdout and " jobs)" not in done1.stdout, done3.stdout

    for table in TABLES:
        a, b = _table(one, table), _table(three, table)
        assert a and a == b, table
    known = Counter(r["book_known"] for r in rows(three, "book_deltas"))
    assert known[False] > 10 and known[True] > 1_000  # the holes are in it, and most of the books
    series = {r["market"]: r["series"] for r in rows(three, "coverage")}  # (T2: job 2 of 3, the event job 0's)
    assert series.get("KXNEWEV-26NOV26-T2") == "KXNEWSERIES"  # from the event's lifecycle (another job's)
    assert set(tickers) <= set(series)
    names = {p.name for p in (three / "book_deltas").rglob("*.parquet")}
    assert {n.split("-j")[1][0] for n in names} == {"0", "1", "2"}, names  # each job its own files

    for done in (done1, done3):  # the torn line and the malformed delta: each said once
        warnings = [w for w in done.stderr.splitlines() if w.startswith("warning:")]
        assert len(warnings) == 2, done.stderr
        assert sum("corrupt or torn" in w for w in warnings) == 1
        assert sum("not usable" in w and tickers[5] in w for w in warnings) == 1
        assert "2 unreadable line(s) skipped" in done.stderr
        assert "1 market-data message(s) not in Kalshi's documented shape" in done.stdout

    # the same request with one job replaces the three jobs' files: no row twice
    again = ssmd_export(str(archive), "--out", str(three), "--jobs", "1")
    assert again.returncode == 0, again.stderr
    assert not any("-j" in p.name for p in three.rglob("*.parquet"))
    for table in TABLES:
        assert _table(three, table) == _table(one, table), table


def test_a_job_killed_mid_run_ends_the_export_with_nothing_replaced(tmp_path: Path) -> None:
    from bench.archive_gen import write_archive as write_big  # noqa: PLC0415

    write_big(tmp_path / "a", 400_000)
    out = tmp_path / "o"
    proc = subprocess.Popen(
        [str(SSMD), "export", str(tmp_path / "a"), "--out", str(out), "--jobs", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    children: list[int] = []
    while time.monotonic() < deadline and len(children) < 2:
        children = job_pids(proc.pid)
        time.sleep(0.05)
    assert len(children) == 2, "the export did not start its two jobs"
    while time.monotonic() < deadline and not list((out / ".tmp-").parent.glob(".tmp-*/*")):
        time.sleep(0.05)  # until the jobs are writing
    os.kill(children[1], signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=120)

    assert proc.returncode == 5, stdout + stderr
    assert "ended without a result" in stderr and "nothing was replaced" in stderr and "Traceback" not in stderr
    assert not list(out.rglob("*.parquet")), "a killed job's export must replace nothing"
    assert not [p.name for p in out.iterdir() if p.name.startswith(".tmp-")], "temporary files left behind"
    assert not [pid for pid in children if state(pid) != "Z"]


def test_the_default_is_one_job_per_128_mb_of_archive_and_at_most_one_per_core(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job's process costs about 0.4 s to start and reads every line: a small archive gets one,
    a large one a job per core (compressed files counted as what they hold)."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    day = tmp_path / "2026-11-25"
    day.mkdir()

    def sized(name: str, mb: int) -> Path:
        path = day / name
        with path.open("wb") as f:
            f.truncate(mb << 20)  # (sparse: only its size matters)
        return path

    small = sized("kalshi.jsonl", 20)
    assert jobs.default_jobs([small]) == 1
    assert jobs.default_jobs([sized("kalshi-b.jsonl", 300)]) == 2
    assert jobs.default_jobs([sized("kalshi-0900.jsonl.zst", 100)]) == 4  # (about 800 MB of lines)
    assert jobs.default_jobs([sized("dump.json", 300)]) == 2  # (a file of another name: read as plain)
    assert jobs.default_jobs() == 4  # (no archive given: one per core)
    archive, _ = _archive(tmp_path / "real")
    done = ssmd_export(str(archive), "--out", str(tmp_path / "o"))
    assert done.returncode == 0 and " jobs" not in done.stdout, done.stdout  # (one job: none started)
