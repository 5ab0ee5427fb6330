"""The export's memory does not grow with the archive: ``python -m bench.export --child export-1`` (the
real pass, one job in its own process, peak RSS from ``VmHWM``) over a 60,000-frame and a 300,000-frame archive
crossing midnight, with many distinct sizes (the decimal caches) and deltas for many markets (the
row buffers, a day's files). Peak RSS may grow by at most 20 MB between the two (measured: +8 MB,
and +10 MB from 60,000 to 1,000,000 frames); the 1M-entry caches and 100k-row buffers grew it by
115 MB between 30,000 and 300,000 frames."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ..archives import T0_NS, ts

ROOT = Path(__file__).resolve().parents[2]
MIDNIGHT_NS = T0_NS - T0_NS % 86_400_000_000_000 + 86_400_000_000_000
MARKETS = [f"KXM-{i:03d}" for i in range(50)]


def _archive(root: Path, frames: int) -> Path:
    """``frames`` lines: a snapshot per market, then deltas (distinct sizes) and trades, 20 µs
    apart, the first tenth before midnight."""
    files: dict[str, list[bytes]] = {}
    start = MIDNIGHT_NS - frames // 10 * 20_000
    for i in range(frames):
        t = MARKETS[i % len(MARKETS)]
        if i < len(MARKETS):
            levels = '"yes_dollars_fp":[["0.4000","1000000.00"]],"no_dollars_fp":[["0.5500","100.00"]]'
            msg = f'{{"market_ticker":"{t}",{levels}}}'
            data = f'{{"type":"orderbook_snapshot","sid":1,"seq":{i + 1},"msg":{msg}}}'
        elif i % 7:
            price = f"0.{i % 97 + 1:02d}00"
            change = f"{i // 100}.{i % 100:02d}"
            msg = f'{{"market_ticker":"{t}","price_dollars":"{price}","delta_fp":"{change}","side":"yes"}}'
            data = f'{{"type":"orderbook_delta","sid":1,"seq":{i + 1},"msg":{msg}}}'
        else:
            msg = f'{{"market_ticker":"{t}","trade_id":"t{i}","yes_price_dollars":"0.4000","count_fp":"{i}.00"}}'
            data = f'{{"type":"trade","sid":2,"seq":{i + 1},"msg":{msg}}}'
        stamp = ts(start + i * 20_000)
        files.setdefault(stamp[:10], []).append(f'{{"ts":"{stamp}","feed":"kalshi","data":{data}}}\n'.encode())
    for day, lines in files.items():
        (root / day).mkdir(parents=True)
        (root / day / "kalshi.jsonl").write_bytes(b"".join(lines))
    return root


def _peak_mb(archive: Path, out: Path) -> float:
    cmd = [sys.executable, "-m", "bench.export", "--child", "export-1", "--archive", str(archive), "--out", str(out)]
    run = subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    return float(result["peak_mb"])


def test_export_memory_does_not_grow_with_the_archive(tmp_path: Path) -> None:
    small = _peak_mb(_archive(tmp_path / "small", 60_000), tmp_path / "o-small")
    large = _peak_mb(_archive(tmp_path / "large", 300_000), tmp_path / "o-large")
    assert large - small < 20, (small, large)
