"""``ssmd export`` as a user runs it: bad input told plainly with its own exit status (never a
traceback), a value that cannot be kept exactly refused without touching the previous output,
and a re-run over the same range replacing its files (no duplicates, no temporary files left)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from ..archives import T0_NS, rows, write_archive
from ..faults.harness import SSMD


def ssmd_export(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SSMD), "export", *args], capture_output=True, text=True, timeout=60, check=False)


def _trade(i: int, price: str = "0.4200") -> tuple[int, dict[str, Any]]:
    msg = {
        "trade_id": f"t{i}",
        "market_ticker": "KXA-1",
        "yes_price_dollars": price,
        "no_price_dollars": "0.5800",
        "count_fp": "1.50",
        "taker_side": "yes",
        "is_block_trade": i % 2 == 0,
        "ts_ms": T0_NS // 1_000_000,
    }
    return T0_NS + i * 1000, {"type": "trade", "sid": 2, "seq": i + 1, "msg": msg}


def test_bad_input_is_named_with_its_own_exit_status(tmp_path: Path) -> None:
    archive = write_archive(tmp_path / "a", [_trade(0)])
    (tmp_path / "empty" / "2026-11-25").mkdir(parents=True)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "kalshi.jsonl").write_text("not an archive line\n")
    for args, words in (
        ([str(tmp_path / "nope"), "--out", str(tmp_path / "o")], "no such file or directory"),
        ([str(tmp_path / "empty"), "--out", str(tmp_path / "o")], "no archive files"),
        ([str(archive), "--out", str(tmp_path / "o"), "--feed", "nosuch"], "no archive files of feed 'nosuch'"),
        ([str(tmp_path / "junk"), "--out", str(tmp_path / "o")], "no archive lines"),
        ([str(archive), "--out", str(tmp_path / "o"), "--tables", ","], "expected a comma-separated list, got ','\n"),
        ([str(archive), "--out", str(tmp_path / "o"), "--from", "yesterday"], "ISO 8601"),
        ([str(archive), "--out", str(tmp_path / "o"), "--tables", "trades,books"], "unknown table(s) books"),
        ([str(archive), "--out", str(tmp_path / "o"), "--depth", "0"], "--depth"),
        (
            [str(archive), "--out", str(tmp_path / "o"), "--from", "2026-11-25T08:00", "--to", "2026-11-25T07:00"],
            "before",
        ),
    ):
        done = ssmd_export(*args)
        assert done.returncode == 2 and words in done.stderr and "Traceback" not in done.stderr, (args, done.stderr)
    assert not (tmp_path / "o" / "trades").exists()


def test_reruns_replace_their_files_and_a_value_that_cannot_be_exact_changes_nothing(tmp_path: Path) -> None:
    archive = write_archive(tmp_path / "a", [_trade(i) for i in range(5)])
    out = tmp_path / "o"
    for _ in range(2):
        done = ssmd_export(str(archive), "--out", str(out), "--tables", "trades")
        assert done.returncode == 0, done.stderr
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert len(files) == 1 and str(files[0]).startswith("trades/date=2026-11-25/part-")
    assert [r["trade_id"] for r in rows(out, "trades")] == [f"t{i}" for i in range(5)]  # not twice
    assert [r["is_block_trade"] for r in rows(out, "trades")] == [True, False, True, False, True]

    write_archive(archive, [_trade(9, price="0.12345678")])  # finer than the column keeps: never rounded
    done = ssmd_export(str(archive), "--out", str(out), "--tables", "trades")
    assert done.returncode == 3 and "'0.12345678'" in done.stderr and "Traceback" not in done.stderr
    assert sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file()) == files  # no temporary file left
    assert len(rows(out, "trades")) == 5  # the previous output, untouched


def test_an_order_book_value_the_book_cannot_take_makes_it_unknown_and_the_run_goes_on(tmp_path: Path) -> None:
    def snap(t: str, size: str = "10") -> dict[str, Any]:
        return {"type": "orderbook_snapshot", "sid": 1, "msg": {"market_ticker": t, "yes_dollars_fp": [["0.5", size]]}}

    def delta(t: str, price: str | None = "0.5", change: str = "1", side: str = "yes") -> dict[str, Any]:
        msg = {"market_ticker": t, "price_dollars": price, "delta_fp": change, "side": side}
        return {"type": "orderbook_delta", "sid": 1, "msg": msg}

    bad = {
        "KXA-1": delta("KXA-1", price="NaN"),
        "KXB-1": delta("KXB-1", change="1e999999999"),
        "KXC-1": snap("KXC-1", size="Infinity"),
        "KXD-1": delta("KXD-1", side="maybe"),
        "KXE-1": delta("KXE-1", price=None),
    }
    frames: list[dict[str, Any]] = []
    for t, message in bad.items():
        frames += [snap(t), message, delta(t), snap(t), delta(t)]
    archive = write_archive(tmp_path / "a", [(T0_NS + i * 1000, f) for i, f in enumerate(frames)])
    out = tmp_path / "o"
    done = ssmd_export(str(archive), "--out", str(out), "--tables", "book_deltas,quotes")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "5 unreadable line(s) skipped" in done.stderr and "kalshi.jsonl:2: orderbook_delta" in done.stderr
    assert "5 market-data message(s)" in done.stdout
    for t in bad:
        got = [(r["is_snapshot"], r["book_known"]) for r in rows(out, "book_deltas") if r["market"] == t and r["side"]]
        # known; the bad message (no row); the next delta not applied; known again from the next snapshot
        assert got == [(True, True), (False, False), (True, True), (False, True)], (t, got)
        quotes = [r["book_known"] for r in rows(out, "quotes") if r["market"] == t]
        assert quotes == [True, False, True, True], (t, quotes)
    strict = ssmd_export(str(archive), "--out", str(out), "--tables", "book_deltas,quotes", "--strict")
    assert strict.returncode == 1 and "Traceback" not in strict.stderr


def test_a_book_value_that_cannot_be_kept_exactly_is_refused_whatever_the_tables(tmp_path: Path) -> None:
    """Decimal's default context keeps 28 digits: 999999999999999999 + 0.00000000001 would be rounded
    to 999999999999999999 and pass a quotes-only export; a 70-digit size could not be added at all."""

    def book(size: str, change: str) -> list[tuple[int, dict[str, Any]]]:
        snap = {"market_ticker": "KXA-1", "yes_dollars_fp": [["0.5", size]]}
        delta = {"market_ticker": "KXA-1", "price_dollars": "0.5", "delta_fp": change, "side": "yes"}
        return [
            (T0_NS, {"type": "orderbook_snapshot", "sid": 1, "seq": 1, "msg": snap}),
            (T0_NS + 1000, {"type": "orderbook_delta", "sid": 1, "seq": 2, "msg": delta}),
        ]

    for name, frames, words in (
        ("wide", book("999999999999999999", "0.00000000001"), "is not a decimal that fits"),
        ("long", book("0." + "1" * 70, "1"), "more than 18 decimal places"),
    ):
        archive = write_archive(tmp_path / name, frames)
        for tables in ("quotes", "book_deltas,quotes,book_snapshots"):
            done = ssmd_export(str(archive), "--out", str(tmp_path / f"o-{name}"), "--tables", tables)
            assert done.returncode == 3 and words in done.stderr and "Traceback" not in done.stderr, (name, done.stderr)
