"""``python -m bench.churn``: how fast the recorder follows a churning market universe.

The simulator (this process) lists new markets at ``--churn`` per second in five series, each
trading ``--lifetime`` seconds then settling; the recorder (``ssmd-connector``, its own process,
pinned to its own core) discovers three of the series. From the archive alone:

* markets added per second, sustained: the ledger's ``market_added`` (reason ``lifecycle``) per
  second over the run, next to the rate the simulator created matching markets at — the baseline
  measured in the same run: a recorder that keeps up adds them at that rate;
* the time from a market's ``created`` message arriving to the first frame of that market (its
  order-book snapshot, sent by the exchange as soon as the market is on the subscription):
  p50 / p99 / max.

A run is invalid — it fails instead of printing figures — if any matching market created in the
measured window was never added, any non-matching market was subscribed, any connection dropped,
or any frame went unparsed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from ssmd_connector.sim import SimConfig, SimServer

from .__main__ import _cpu
from .clients import RunInvalid

SERIES = ("KXBTCD", "KXETHD", "KXHIGHNY")
CLI = Path(sys.executable).parent / "ssmd-connector"


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(churn: float, seconds: float, lifetime: float, per_connection: int) -> dict[str, Any]:
    sim = SimServer(SimConfig(port=0, markets=10, rate=500, churn=churn, lifetime=lifetime))
    await sim.start()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = root / "data"
        (root / "environments").mkdir()
        (root / "feeds").mkdir()
        (root / "environments" / "bench.yaml").write_text(
            f"name: bench\nfeed: kalshi\nstorage: {{type: local, path: {data}}}\nsubscription:\n"
            "  channels: [orderbook_delta, trade, ticker]\n"
            f"  discover: {{series: [{', '.join(SERIES)}], refresh: 30}}\n"
            f"  max_markets_per_connection: {per_connection}\n  connect_stagger: 0\n"
        )
        (root / "feeds" / "kalshi.yaml").write_text(
            f"name: kalshi\ntype: websocket\nversions:\n  - {{version: sim, endpoint: '{sim.ws_url}', active: true}}\n"
        )
        pin = ["taskset", "-c", _cpu(1)] if _cpu(1) != "-1" else []
        proc = await asyncio.create_subprocess_exec(
            *pin, str(CLI), "--env", "bench", "--config-dir", str(root),
            "--health-addr", "127.0.0.1:0", stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        began = time.time()
        await asyncio.sleep(seconds)
        ended = time.time()
        proc.terminate()
        _, err = await proc.communicate()
        await sim.stop()
        if proc.returncode != 0:
            raise RunInvalid(f"the recorder exited with {proc.returncode}: {err.decode()[-2000:]}")
        return analyse(data, sim, began, ended)


def analyse(data: Path, sim: SimServer, began: float, ended: float) -> dict[str, Any]:
    ledger = [json.loads(x) for f in sorted(data.glob("*/kalshi.events.jsonl")) for x in f.read_text().splitlines()]
    created: dict[str, float] = {}
    first: dict[str, float] = {}
    unparsed = 0
    for f in sorted(data.glob("*/kalshi.jsonl")):
        for line in f.read_bytes().splitlines():
            obj = json.loads(line)
            body = obj.get("data")
            if not isinstance(body, dict):
                unparsed += 1
                continue
            msg = body.get("msg")
            if not isinstance(msg, dict) or not isinstance(ticker := msg.get("market_ticker"), str):
                continue
            if body.get("type") == "market_lifecycle_v2" and msg.get("event_type") == "created":
                created.setdefault(ticker, _ts(obj["ts"]))
            elif body.get("type") == "orderbook_snapshot":
                first.setdefault(ticker, _ts(obj["ts"]))
    adds = [e for e in ledger if e["event"] == "market_added" and e["reason"] == "lifecycle"]
    added = {e["ticker"] for e in ledger if e["event"] == "market_added"}
    window = (began + 5, ended - 5)
    expected = [
        m.ticker
        for m in sim.model.markets.values()
        if m.lives and m.series in SERIES and window[0] < m.created_ts < window[1]
    ]
    missing = [t for t in expected if t not in added]
    strangers = [t for t in added if t.split("-", 1)[0] not in SERIES]
    drops = [e for e in ledger if e["event"] == "disconnect" and not e.get("requested")]
    if missing or strangers or drops or unparsed:
        raise RunInvalid(
            f"{len(missing)} matching market(s) never added, {len(strangers)} other market(s) "
            f"added, {len(drops)} connection drop(s){' (' + str(drops[0].get('reason')) + ')' if drops else ''}, "
            f"{unparsed} unparsed frame(s)"
        )
    in_window = [e for e in adds if window[0] <= _ts(e["ts"]) < window[1]]
    latency = [first[t] - created[t] for t in expected if t in created and t in first]
    if len(latency) < 0.95 * len(expected):
        raise RunInvalid(f"only {len(latency)} of {len(expected)} markets have a first frame")
    return {
        "markets_created_matching_per_s": len(expected) / (window[1] - window[0]),
        "markets_added_per_s": len(in_window) / (window[1] - window[0]),
        "markets_measured": len(latency),
        "created_to_first_frame_ms": {
            "p50": statistics.median(latency) * 1e3,
            "p99": _quantile(latency, 0.99) * 1e3,
            "max": max(latency) * 1e3,
        },
        "connections_opened": len({e["shard"] for e in ledger if e["event"] == "connect"}),
        "markets_released": sum(1 for e in ledger if e["event"] == "market_removed" and e["reason"] == "settled"),
    }


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.churn", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--churn", type=float, default=200.0, help="new markets per second (all series)")
    p.add_argument("--seconds", type=float, default=40.0)
    p.add_argument("--lifetime", type=float, default=10.0, help="seconds each market trades")
    p.add_argument("--per-connection", type=int, default=200)
    p.add_argument("--out", type=Path, default=Path("bench/results/churn.json"))
    args = p.parse_args()
    try:
        result = asyncio.run(run(args.churn, args.seconds, args.lifetime, args.per_connection))
    except RunInvalid as exc:
        print(f"bench.churn: {exc}", file=sys.stderr)
        sys.exit(1)
    result["args"] = vars(args) | {"out": str(args.out)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    lat = result["created_to_first_frame_ms"]
    print(
        f"markets added: {result['markets_added_per_s']:.1f}/s sustained "
        f"(matching markets created: {result['markets_created_matching_per_s']:.1f}/s, same run); "
        f"created → first frame of the market: p50 {lat['p50']:.0f} ms, p99 {lat['p99']:.0f} ms, "
        f"max {lat['max']:.0f} ms over {result['markets_measured']} markets; "
        f"{result['markets_released']} released, {result['connections_opened']} connection(s)"
    )
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
