"""The archive tools on a real recording: verify, cat, stats, book, validate; DuckDB reads segments."""

from __future__ import annotations

import asyncio
import json
import shlex
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from ssmd_connector.archive import Reader, archive_files
from ssmd_connector.sim import SimConfig, SimServer

from ..kalshi_helpers import KEY, KEY_ID, eventually, record

SSMD = str(Path(sys.executable).parent / "ssmd")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "config"


def ssmd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SSMD, *args], capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SimServer]:
    """A few seconds of the simulator, recorded into zstd segments; the market is then frozen."""
    tmp = tmp_path_factory.mktemp("rec")

    async def go() -> SimServer:
        sim = SimServer(
            SimConfig(port=0, markets=12, rate=1500, record_sent=True, public_keys={KEY_ID: KEY.public_key()})
        )
        await sim.start()
        sub = (
            "  channels: [orderbook_delta, ticker, trade, market_lifecycle_v2]\n  markets: ["
            + ", ".join(sim.model.open_tickers[:6])
            + "]\n"
        )
        s = await record(tmp, sim, sub, storage=", rotation: 1m, compression: zstd")
        await eventually(lambda: s.recorder.runner.stats.messages > 2000)
        await sim.inject("gap")
        await eventually(lambda: s.count("recovery_completed") >= 1)
        sim.paused = True
        await asyncio.sleep(0.5)
        await s.stop()
        await sim.stop()
        return sim

    sim = asyncio.run(go())
    return tmp / "data", sim


def test_verify_passes_then_catches_corruption(recording: tuple[Path, SimServer], tmp_path: Path) -> None:
    data, _ = recording
    ok = ssmd("verify", str(data))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "0 problem(s)" in ok.stdout and "gap at" in ok.stdout
    # A copy with one flipped byte in a sealed segment must fail.
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(data), str(copy)], check=True)
    segment = next(copy.glob("*/kalshi-*.jsonl.zst"))
    raw = bytearray(segment.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    segment.write_bytes(bytes(raw))
    bad = ssmd("verify", str(copy))
    assert bad.returncode == 1 and "SHA-256 mismatch" in bad.stdout


def test_duckdb_reads_sealed_zstd_segments(recording: tuple[Path, SimServer]) -> None:
    data, _ = recording
    manifests = [json.loads(p.read_text()) for p in data.glob("*/kalshi.manifest.json")]
    expected = sum(seg["lines"] for m in manifests for seg in m["segments"])
    pattern = str(data / "*" / "kalshi-*.jsonl.zst")
    relation = duckdb.sql(f"select count(*) from read_json('{pattern}', format='newline_delimited')")
    assert relation is not None
    rows = relation.fetchall()
    assert rows[0][0] == expected > 2000


@pytest.mark.skipif(not (shutil.which("zstdcat") and shutil.which("jq")), reason="zstdcat or jq not installed")
def test_zstdcat_and_jq_read_sealed_segments_as_the_readme_shows(recording: tuple[Path, SimServer]) -> None:
    data, _ = recording
    frames: list[str] = []
    for segment in archive_files(data, "kalshi"):  # the README's command, per segment
        cmd = f"zstdcat {shlex.quote(str(segment))} | jq -c .data"
        frames += subprocess.run(cmd, shell=True, capture_output=True, text=True, check=True).stdout.splitlines()
    expected = ssmd("cat", str(data), "--data").stdout.splitlines()
    assert len(frames) == len(expected) > 2000
    assert [json.loads(f) for f in frames] == [json.loads(f) for f in expected]  # (jq re-spaces numbers)


def test_cat_data_returns_the_original_frames(recording: tuple[Path, SimServer]) -> None:
    data, sim = recording
    out = ssmd("cat", str(data), "--type", "trade", "--data")
    assert out.returncode == 0
    frames = out.stdout.encode().splitlines()
    sent_trades = [f for f in sim.sent_frames() if f.startswith(b'{"type":"trade"')]
    assert frames == sent_trades and frames


def test_stats_summarises(recording: tuple[Path, SimServer]) -> None:
    data, _ = recording
    out = ssmd("stats", str(data))
    assert out.returncode == 0
    assert "by type: orderbook_delta" in out.stdout or "orderbook_delta" in out.stdout
    assert "gaps: 1" in out.stdout


def test_book_rebuilds_the_simulators_true_book(recording: tuple[Path, SimServer]) -> None:
    data, sim = recording
    ticker = sim.model.open_tickers[0]
    out = ssmd("book", str(data), "--ticker", ticker)
    assert out.returncode == 0, out.stdout
    assert "0 inconsistencies" in out.stdout
    truth = sim.model.snapshot_msg(ticker)
    best_yes = max(Decimal(p) for p, _ in truth["yes_dollars_fp"])
    assert f"best yes bid {best_yes}" in out.stdout


def test_validate_configs() -> None:
    ok = ssmd("validate", "--config-dir", str(EXAMPLES))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    for env in ("demo", "prod", "generic", "scaleout", "archive"):
        assert f"ok: {env}" in ok.stdout


def test_validate_reports_problems(tmp_path: Path) -> None:
    (tmp_path / "environments").mkdir()
    (tmp_path / "environments" / "x.yaml").write_text("name: x\nfeed: nope\nstorage: {type: local, path: d}\n")
    bad = ssmd("validate", "--config-dir", str(tmp_path))
    assert bad.returncode == 2 and "feeds/nope.yaml: file not found" in bad.stderr


def _as_yes_priced(src: Path, dst: Path, flag: bool | None) -> None:
    """A plain copy of an archive as if its order books had been subscribed with
    ``use_yes_price: true``: NO-side levels in YES prices, and the ledger saying so (``flag``: what
    a second order-book subscription says; ``None``: there is none)."""
    seen = 0
    for ledger in sorted(src.glob("*/*.events.jsonl")):
        out = dst / ledger.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        events = []
        for raw in ledger.read_bytes().splitlines():
            obj = json.loads(raw)
            if obj.get("event") == "subscribed" and obj.get("channel") == "orderbook_delta":
                obj["params"]["use_yes_price"] = True if flag is None or seen == 0 else flag
                seen += 1
            events.append(json.dumps(obj, separators=(",", ":")).encode() + b"\n")
            if flag is not None and seen == 1 and obj.get("event") == "subscribed":  # a second one, disagreeing
                other = {**obj, "sid": 99, "params": {**obj["params"], "use_yes_price": flag}}
                events.append(json.dumps(other, separators=(",", ":")).encode() + b"\n")
                seen += 1
        out.write_bytes(b"".join(events))
    lines = []
    for file in archive_files(src, "kalshi"):
        for _, raw in Reader().lines(file):
            obj = json.loads(raw)
            data = obj.get("data")
            msg = data.get("msg") if isinstance(data, dict) else None
            if isinstance(msg, dict) and data.get("type") == "orderbook_snapshot" and "no_dollars_fp" in msg:
                msg["no_dollars_fp"] = [[f"{1 - Decimal(p):.4f}", q] for p, q in msg["no_dollars_fp"]]
            if isinstance(msg, dict) and data.get("type") == "orderbook_delta" and msg.get("side") == "no":
                msg["price_dollars"] = f"{1 - Decimal(msg['price_dollars']):.4f}"
            line = raw
            if isinstance(data, dict):
                frame = json.dumps(data, separators=(",", ":")).encode()
                line = b'{"ts":"%s","feed":"kalshi","data":%s}' % (obj["ts"].encode(), frame)
            lines.append(line + b"\n")
    day = next(p for p in (dst).iterdir() if p.is_dir())
    (day / "kalshi.jsonl").write_bytes(b"".join(lines))


def test_book_reads_the_price_convention_the_ledger_recorded(recording: tuple[Path, SimServer], tmp_path: Path) -> None:
    """``use_yes_price: true`` prices NO-side levels as YES: the book reads the subscription's
    parameters from the ledger and shows the same NO bids either way; when subscriptions disagree
    it asks which convention applies instead of guessing."""
    data, sim = recording
    ticker = sim.model.open_tickers[0]
    plain = ssmd("book", str(data), "--ticker", ticker)
    assert "NO-side prices as recorded: NO" in plain.stdout
    _as_yes_priced(data, tmp_path / "yes", None)
    yes = ssmd("book", str(tmp_path / "yes"), "--ticker", ticker)
    assert yes.returncode == 0 and "use_yes_price: true" in yes.stdout, yes.stdout
    assert yes.stdout.splitlines()[1:] == plain.stdout.splitlines()[1:]  # the same book
    assert "0 inconsistencies" in yes.stdout
    _as_yes_priced(data, tmp_path / "mixed", False)
    mixed = ssmd("book", str(tmp_path / "mixed"), "--ticker", ticker)
    assert mixed.returncode == 2 and "--yes-price or --no-price" in mixed.stdout
    forced = ssmd("book", str(tmp_path / "mixed"), "--ticker", ticker, "--yes-price")
    assert forced.returncode == 0 and forced.stdout.splitlines()[1:] == plain.stdout.splitlines()[1:]
