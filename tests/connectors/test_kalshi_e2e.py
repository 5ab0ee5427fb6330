"""The Kalshi connector against the simulator, over real sockets, through the whole recorder."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from ssmd_connector.archive.line import decode_frame
from ssmd_connector.kalshi.auth import generate_key_pair
from ssmd_connector.secrets import Secret
from ssmd_connector.sim import SimConfig, SimServer

from ..conftest import StartSim
from ..helpers import read_lines
from ..kalshi_helpers import KEY, KEY_ID, eventually, record

FOUR = "  channels: [orderbook_delta, ticker, trade, market_lifecycle_v2]\n"


def sim_config(**kw: object) -> SimConfig:
    base: dict[str, object] = {"port": 0, "markets": 30, "rate": 2000, "public_keys": {KEY_ID: KEY.public_key()}}
    base.update(kw)
    return SimConfig(**base)  # type: ignore[arg-type]


def markets(sim: SimServer, n: int) -> str:
    return "  markets: [" + ", ".join(sim.model.open_tickers[:n]) + "]\n"


def ts(entry: dict[str, object]) -> float:
    return datetime.fromisoformat(str(entry["ts"]).replace("Z", "+00:00")).timestamp()


async def test_every_frame_sent_is_archived_once_verbatim(tmp_path: Path, start_sim: StartSim) -> None:
    sim = await start_sim(sim_config(record_sent=True))
    s = await record(tmp_path, sim, FOUR + markets(sim, 10))
    await eventually(lambda: s.recorder.runner.stats.messages > 3000, what="3000 frames")
    await s.stop()
    archived = [decode_frame(line) for line in read_lines(s.data, "kalshi")]
    sent = sim.sent_frames()
    assert len(sent) > 3000
    assert archived == sent  # same frames, same bytes, same order, none twice
    ledger = s.ledger()
    subscribed = [e for e in ledger if e["event"] == "subscribed"]
    assert {e["channel"] for e in subscribed} == {"orderbook_delta", "ticker", "trade", "market_lifecycle_v2"}
    assert next(e for e in subscribed if e["channel"] == "market_lifecycle_v2")["tickers"] == []
    assert len(next(e for e in subscribed if e["channel"] == "orderbook_delta")["tickers"]) == 10
    assert [e["event"] for e in ledger if e["event"] in ("connect", "disconnect")] == ["connect", "disconnect"]


async def test_discovery_with_pagination_and_sharding(tmp_path: Path, start_sim: StartSim) -> None:
    sim = await start_sim(sim_config(markets=45, page_limit_max=7))
    sub = FOUR + "  discover: {status: open}\n  max_markets_per_connection: 15\n  connect_stagger: 0.05\n"
    s = await record(tmp_path, sim, sub)
    open_markets = sim.model.open_tickers
    await eventually(lambda: s.count("subscribed") == 3 * 3 + 1, what="every subscription")
    await eventually(lambda: s.recorder.runner.stats.connected, what="all shards connected")
    await s.stop()
    assert len(open_markets) == 41 and sim.accepted == 3
    ledger = s.ledger()
    discovered = next(e for e in ledger if e["event"] == "discovered")  # (start-up; refresh rounds follow)
    assert discovered["markets"] == 41
    per_shard: dict[str, set[str]] = {}
    lifecycle_shards = set()
    for e in ledger:
        if e["event"] == "subscribed" and e["channel"] == "orderbook_delta":
            per_shard[e["shard"]] = set(e["tickers"])
        if e["event"] == "subscribed" and e["channel"] == "market_lifecycle_v2":
            lifecycle_shards.add(e["shard"])
    assert sorted(len(t) for t in per_shard.values()) == [11, 15, 15]
    assert set().union(*per_shard.values()) == set(open_markets)
    assert lifecycle_shards == {"kalshi-0"}


async def test_rejected_handshake_is_an_auth_failure_then_retried(tmp_path: Path, start_sim: StartSim) -> None:
    sim = await start_sim(sim_config())
    await sim.inject("auth", 2)
    s = await record(tmp_path, sim, FOUR + markets(sim, 3))
    await eventually(lambda: s.recorder.runner.stats.connected, what="connected after rejections")
    stats = s.recorder.runner.stats
    # Two rejected handshakes, one incident (errors count outages, not attempts).
    assert stats.shards["kalshi-0"].auth_failures == 2 and stats.errors["auth"] == 1
    await s.stop()
    failures = [e for e in s.ledger() if e["event"] == "auth_failed"]
    assert len(failures) == 2
    assert failures[0]["key_id"] == KEY_ID and failures[0]["endpoint"] == sim.ws_url
    assert "HTTP 401" in failures[0]["error"]


async def test_wrong_key_never_connects_and_never_leaks(tmp_path: Path, start_sim: StartSim) -> None:
    sim = await start_sim(sim_config())
    _, other_pem = generate_key_pair()
    secrets = {"KALSHI_API_KEY": Secret(KEY_ID), "KALSHI_PRIVATE_KEY": Secret(other_pem)}
    s = await record(tmp_path, sim, FOUR + markets(sim, 3), secrets=secrets)
    await eventually(
        lambda: s.recorder.runner.stats.shards and s.recorder.runner.stats.shards["kalshi-0"].auth_failures >= 2,
        what="two failures",
    )
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{s.recorder.server.port}/ready") as r:
        assert r.status == 503
        body = await r.json()
    reason = body["reasons"][0]
    assert "authentication failed" in reason and KEY_ID in reason and "401" in reason
    await s.stop()
    everything = "".join(p.read_text() for p in s.data.rglob("*") if p.is_file())
    for line in other_pem.splitlines()[1:-1]:
        assert line not in everything and line not in str(body)
    assert sim.accepted == 0


async def test_gap_is_detected_and_a_snapshot_requested_within_a_second(tmp_path: Path, start_sim: StartSim) -> None:
    sim = await start_sim(sim_config())
    s = await record(tmp_path, sim, FOUR + markets(sim, 6))
    await eventually(lambda: s.recorder.runner.stats.messages > 500)
    await sim.inject("gap")
    await eventually(lambda: s.count("recovery_completed") >= 1, what="recovery")
    await s.stop()
    ledger = s.ledger()
    (gap,) = [e for e in ledger if e["event"] == "gap"]
    (request,) = [e for e in ledger if e["event"] == "command" and e["purpose"] == "snapshot"]
    assert gap["channel"] == "orderbook_delta" and gap["got"] == gap["expected"] + 1
    assert request["params"] == {"sid": gap["sid"], "action": "get_snapshot", "market_tickers": gap["tickers"]}
    assert 0 <= ts(request) - ts(gap) < 1.0
    (done,) = [e for e in ledger if e["event"] == "recovery_completed"]
    assert done["sid"] == gap["sid"] and done["id"] == request["id"]
    # The snapshots that answered carry the command id, and each market got one.
    frames = [decode_frame(x) for x in read_lines(s.data, "kalshi")]
    answered = [f for f in frames if f.startswith(b'{"type":"orderbook_snapshot","id":%d,' % request["id"])]
    assert len(answered) == 6
    stats = s.recorder.runner.stats.shards["kalshi-0"]
    assert stats.gaps == 1 and stats.recoveries["requested"] == 1 and stats.recoveries["completed"] == 1


async def test_dropped_connection_reconnects_with_backoff_and_resubscribes(tmp_path: Path, start_sim: StartSim) -> None:
    sim = await start_sim(sim_config())
    s = await record(tmp_path, sim, FOUR + markets(sim, 4))
    await eventually(lambda: s.count("subscribed") == 4)
    await sim.inject("reset")
    await eventually(lambda: s.count("subscribed") == 8, what="resubscribed after reset")
    await sim.inject("close")
    await eventually(lambda: s.count("subscribed") == 12, what="resubscribed after close")
    await s.stop()
    ledger = s.ledger()
    disconnects = [e for e in ledger if e["event"] == "disconnect"]
    assert "without a close frame" in disconnects[0]["reason"]
    assert "closed by server (code 1001" in disconnects[1]["reason"]
    connects = [e for e in ledger if e["event"] == "connect"]
    assert len(connects) == 3
    assert ts(connects[1]) - ts(disconnects[0]) >= 0.2  # jittered backoff, not a hot loop
    by_conn = Counter(e["channel"] for e in ledger if e["event"] == "subscribed")
    assert set(by_conn.values()) == {3}
    assert s.recorder.runner.stats.reconnects == 2


async def test_silent_server_is_detected_within_stale_after(tmp_path: Path, start_sim: StartSim) -> None:
    sim = await start_sim(sim_config(ping_interval=60))
    s = await record(tmp_path, sim, FOUR + markets(sim, 3) + "  stale_after: 2\n")
    await eventually(lambda: s.recorder.runner.stats.messages > 100)
    await sim.inject("silence")
    await eventually(lambda: s.count("connect") == 2, timeout=2 + 5, what="stale connection replaced")
    await s.stop()
    ledger = s.ledger()
    (disconnect, *_) = [e for e in ledger if e["event"] == "disconnect"]
    assert "has not replied to ping" in disconnect["reason"]
    silence_at = sim.faults_applied[0]
    assert silence_at.kind == "silence"


async def test_non_json_frame_is_stored_as_a_string_and_counted(tmp_path: Path, start_sim: StartSim) -> None:
    sim = await start_sim(sim_config())
    s = await record(tmp_path, sim, FOUR + markets(sim, 2))
    await eventually(lambda: s.recorder.runner.stats.messages > 50)
    await sim.inject("nonjson")
    await eventually(lambda: s.count("unparsed_frame") == 1)
    await s.stop()
    lines = [x for x in read_lines(s.data, "kalshi") if b'"enc":"text"' in x]
    assert len(lines) == 1 and b"this frame is not JSON {" in lines[0]
    assert s.recorder.runner.stats.shards["kalshi-0"].frames_by_type["_unparsed"] == 1


async def test_error_25_resubscribes_only_that_sid(tmp_path: Path, start_sim: StartSim) -> None:
    sim = await start_sim(sim_config())
    s = await record(tmp_path, sim, FOUR + markets(sim, 4))
    await eventually(lambda: s.count("subscribed") == 4)
    await sim.inject("error25")
    await eventually(lambda: s.count("subscribed") == 5, what="resubscription")
    await asyncio.sleep(0.3)
    await s.stop()
    ledger = s.ledger()
    (resub,) = [e for e in ledger if e["event"] == "resubscribe_requested"]
    assert resub["channel"] == "orderbook_delta" and "terminal error 25" in resub["why"]
    subscribed = [e for e in ledger if e["event"] == "subscribed"]
    assert [e["channel"] for e in subscribed[4:]] == ["orderbook_delta"]
    assert subscribed[4]["tickers"] == resub["tickers"]
    (done,) = [e for e in ledger if e["event"] == "recovery_completed"]
    assert done["action"] == "resubscribe" and done["new_sid"] == subscribed[4]["sid"]
    assert [e for e in ledger if e["event"] == "connect"].__len__() == 1  # no reconnect needed


async def test_kalshi_metrics_are_exposed(tmp_path: Path, start_sim: StartSim) -> None:
    sim = await start_sim(sim_config())
    s = await record(tmp_path, sim, FOUR + markets(sim, 5))
    await eventually(lambda: s.recorder.runner.stats.messages > 1000)
    await sim.inject("gap")
    await eventually(lambda: s.count("recovery_completed") >= 1)
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{s.recorder.server.port}/metrics") as r:
        text = await r.text()
    await s.stop()
    samples = {
        (x.name, tuple(sorted(x.labels.items()))): x.value
        for fam in text_string_to_metric_families(text)
        for x in fam.samples
    }

    def get(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted({"feed": "kalshi", "shard": "kalshi-0", **labels}.items())))]

    assert get("ssmd_shard_connected") == 1
    assert get("ssmd_frames_by_type_total", type="orderbook_delta") > 100
    assert get("ssmd_sequence_gaps_total") == 1
    assert get("ssmd_recoveries_total", outcome="requested") == 1
    assert get("ssmd_recoveries_total", outcome="completed") == 1
    assert get("ssmd_auth_failures_total") == 0
    assert get("ssmd_markets_subscribed") == 5
    assert get("ssmd_message_age_seconds_count") > 100
    assert get("ssmd_message_age_seconds_bucket", le="+Inf") == get("ssmd_message_age_seconds_count")
    assert get("ssmd_message_age_seconds_bucket", le="1.0") > 0


async def test_unanswered_recovery_escalates_to_resubscribe_then_reconnect(tmp_path: Path, start_sim: StartSim) -> None:
    """get_snapshot unanswered → resubscribe; unanswered too → reconnect, which restores everything."""
    sim = await start_sim(sim_config())
    s = await record(tmp_path, sim, FOUR + markets(sim, 4) + "  command_timeout: 1\n")
    await eventually(lambda: s.count("subscribed") == 4)
    await sim.inject("deaf", 2.5)  # this connection stops answering commands for a while
    await sim.inject("gap")
    await eventually(lambda: s.count("reconnect_requested") == 1, timeout=10, what="escalation to reconnect")
    await eventually(lambda: s.count("subscribed") == 8, timeout=10, what="resubscribed after reconnect")
    await s.stop()
    ledger = s.ledger()
    kinds = [e["event"] for e in ledger]
    timeouts = [e for e in ledger if e["event"] == "command_timeout"]
    assert [t["purpose"] for t in timeouts] == ["snapshot", "resubscribe"]
    assert kinds.index("resubscribe_requested") < kinds.index("reconnect_requested")
    (reconnect,) = [e for e in ledger if e["event"] == "reconnect_requested"]
    assert "no reply" in reconnect["reason"]
    assert [e["event"] for e in ledger if e["event"] in ("connect", "disconnect")] == [
        "connect",
        "disconnect",
        "connect",
        "disconnect",
    ]
