"""The README's first command: ``ssmd demo`` records the simulator and summarises, exit 0."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "config"
SSMD = Path(sys.executable).parent / "ssmd"


def test_demo_records_the_simulator_with_faults_and_summarises(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(SSMD), "demo", "--config-dir", str(EXAMPLES), "--seconds", "17", "--rate", "1500"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "shards 3/3" in out
    assert "sequence gaps detected: 3" in out  # the demo's gap fault, on each of 3 shards
    assert "frames that were not JSON (stored as strings): 3" in out
    # The simulator's universe lives: markets were added as listed, released once settled, and the
    # coverage report finds every matching market recorded.
    universe = next(line for line in out.splitlines() if line.startswith("market universe:"))
    added, released = (int(w) for w in re.findall(r"(\d+) (?:market\(s\) added|released)", universe))
    assert added > 40 and released > 0, universe
    assert re.search(r"coverage: (\d+) market\(s\) matched the discovery filter, \1 recorded, 0 never recorded", out)
    data = tmp_path / "data"
    (archive,) = data.glob("*/kalshi-sim.jsonl")
    lines = archive.read_bytes().splitlines()
    assert len(lines) > 10_000
    for line in lines[:: max(1, len(lines) // 500)]:
        json.loads(line)
    (events,) = data.glob("*/kalshi-sim.events.jsonl")
    kinds = [json.loads(x)["event"] for x in events.read_text().splitlines()]
    assert kinds.count("recovery_completed") >= 3 + 3  # snapshots after the gaps, resubscribes after error 25
    assert kinds.count("connect") == 4  # three shards, one of them reset and reconnected
