"""The dashboard and the alerts against a real Prometheus scraping a real recorder and archiver.

One stack for the module (it is the expensive part): a real nats-server, the Kalshi simulator (in
a thread of this process, so a fault can be injected at a chosen moment), ``ssmd-connector``
recording it and publishing to JetStream, ``ssmd archive`` archiving the stream, and Debian's
``prometheus`` scraping both every second and evaluating a test copy of
``deploy/prometheus/alerts.yml`` — the same expressions with every ``for:`` cut to 2 s and every
range window to 4 s, so an alert's life takes seconds instead of minutes. Beside them, a second
recorder whose key a second (signing) simulator refuses: an operator's most common mistake, which
must show as SsmdAuthFailures and SsmdNotConnected.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ssmd_connector.kalshi.auth import generate_key_pair
from ssmd_connector.sim import SimConfig, SimServer

from ..helpers import CLI, free_port, write_config
from ..kalshi_helpers import KEY, KEY_ID
from ..natsserver import NatsServer
from .tools import DEPLOY, VENV_BIN, needs, tool

PROMETHEUS = tool("prometheus")
pytestmark = needs("prometheus")
RATE_WINDOW = "5s"
"""What ``$__rate_interval`` stands for here (Grafana makes it at least four scrape intervals)."""


def shortened_rules(text: str) -> str:
    """The rules with ``for:`` at 2 s and range windows at 4 s (the expressions otherwise as written)."""
    text = re.sub(r"for: \d+[smh]", "for: 2s", text)
    return re.sub(r"\[\d+[smh]\]", "[4s]", text)


def http_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def until(cond: Callable[[], object], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if cond():
                return
        except (OSError, urllib.error.URLError, KeyError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.2)


class SimThread:
    """The simulator on its own event loop in a thread: the recorder is another process, and the
    test injects faults at the moment it chooses."""

    def __init__(self, config: SimConfig) -> None:
        self.loop = asyncio.new_event_loop()
        self.sim = SimServer(config)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.call(self.sim.start())

    def call(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(15)

    def stop(self) -> None:
        self.call(self.sim.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@dataclass
class Stack:
    prometheus: str
    sim: SimThread
    recorder_port: int
    archiver_port: int
    nats: NatsServer
    refused: str
    """The instance whose key the signing simulator refuses."""

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            body = http_json(url)
        except urllib.error.HTTPError as exc:  # 400: the expression does not parse or evaluate
            raise AssertionError(f"{expr}: {exc.read().decode()}") from None
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def alerts(self, name: str) -> list[dict[str, Any]]:
        return [
            a
            for a in http_json(f"{self.prometheus}/api/v1/alerts")["data"]["alerts"]
            if a["labels"]["alertname"] == name
        ]


def start(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("live")
    nats = NatsServer(root / "js", free_port())
    nats.start()
    sim = SimThread(SimConfig(markets=20, rate=400.0, public_keys=None))
    signing = SimThread(SimConfig(markets=5, rate=50.0, public_keys={KEY_ID: KEY.public_key()}))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        feed = (
            "name: kalshi\ntype: websocket\nconnector: kalshi\nversions:\n"
            f"  - {{version: sim, endpoint: '{sim.sim.ws_url}', active: true}}\n"
        )
        nats_block = f"nats: {{url: '{nats.url}', stream: KALSHI, create_stream: true}}\n"
        cfg = write_config(
            root / "cfg",
            env_name="live",
            feed_name="kalshi",
            feed=feed,
            env="name: live\nfeed: kalshi\nkeys: []\n"
            f"storage: {{type: local, path: {root / 'data'}, flush_interval: 0.2}}\n"
            "subscription:\n  channels: [orderbook_delta, ticker, trade, market_lifecycle_v2]\n"
            "  discover: {refresh: 60}\n  max_markets_per_connection: 10\n  stale_after: 30\n" + nats_block,
        )
        (cfg / "environments" / "archive.yaml").write_text(
            f"name: archive\nfeed: kalshi\nstorage: {{type: local, path: {root / 'archive'}, rotation: 1m}}\n"
            + nats_block
        )
        bad = write_config(
            root / "bad-cfg",
            env_name="bad",
            feed_name="kalshi",
            feed="name: kalshi\ntype: websocket\nconnector: kalshi\nversions:\n"
            f"  - {{version: sim, endpoint: '{signing.sim.ws_url}', active: true}}\n",
            env="name: bad\nfeed: kalshi\nkeys:\n  - {name: kalshi, source: 'env:KALSHI_API_KEY,KALSHI_PRIVATE_KEY'}\n"
            f"storage: {{type: local, path: {root / 'bad-data'}}}\n"
            "subscription:\n  channels: [ticker]\n  discover: {refresh: 60}\n",
        )
        rec_port, arch_port, prom_port, bad_port = free_port(), free_port(), free_port(), free_port()
        _, wrong_pem = generate_key_pair()  # a key the signing simulator has never seen
        procs.append(
            start(
                [*CLI, "--env", "bad", "--config-dir", str(bad), "--health-addr", f"127.0.0.1:{bad_port}"],
                root / "bad-recorder.log",
                env={**os.environ, "KALSHI_API_KEY": KEY_ID, "KALSHI_PRIVATE_KEY": wrong_pem},
            )
        )
        procs.append(
            start(
                [*CLI, "--env", "live", "--config-dir", str(cfg), "--health-addr", f"127.0.0.1:{rec_port}"],
                root / "recorder.log",
            )
        )
        until(lambda: http_json(f"http://127.0.0.1:{rec_port}/health")["messages"] > 0, "the recorder recording", 30)
        procs.append(  # (after the recorder: it creates the stream the archiver needs)
            start(
                [
                    *[str(VENV_BIN / "ssmd"), "archive", "--config-dir", str(cfg), "--env", "archive"],
                    *["--health-addr", f"127.0.0.1:{arch_port}"],
                ],
                root / "archiver.log",
            )
        )
        (root / "alerts.yml").write_text(shortened_rules((DEPLOY / "prometheus" / "alerts.yml").read_text()))
        (root / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "rule_files: [alerts.yml]\n"
            "scrape_configs:\n"
            f"  - {{job_name: ssmd-recorder, static_configs: [{{targets: ['127.0.0.1:{rec_port}', "
            f"'127.0.0.1:{bad_port}']}}]}}\n"
            f"  - {{job_name: ssmd-archiver, static_configs: [{{targets: ['127.0.0.1:{arch_port}']}}]}}\n"
        )
        assert PROMETHEUS is not None
        procs.append(
            start(
                [
                    PROMETHEUS,
                    f"--config.file={root / 'prometheus.yml'}",
                    f"--storage.tsdb.path={root / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                    "--log.level=warn",
                ],
                root / "prometheus.log",
            )
        )
        url = f"http://127.0.0.1:{prom_port}"
        until(lambda: urllib.request.urlopen(f"{url}/-/ready", timeout=2).status == 200, "prometheus ready", 30)
        yield Stack(url, sim, rec_port, arch_port, nats, f"127.0.0.1:{bad_port}")
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        sim.stop()
        signing.stop()
        nats.stop()


def dashboard_queries() -> list[tuple[str, str]]:
    dash = json.loads((DEPLOY / "grafana" / "ssmd.json").read_text())
    out = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", RATE_WINDOW).replace('"$feed"', '".*"')
            assert "$" not in expr, f"{panel['title']}: a variable the test does not know: {expr}"
            out.append((panel["title"], expr))
    return out


def test_every_dashboard_query_evaluates_and_returns_data(stack: Stack) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 20
    numbers: dict[str, list[float]] = {}

    def all_have_data() -> bool:
        for _title, expr in queries:
            values = [float(r["value"][1]) for r in stack.query(expr)]
            numbers[expr] = values
            if not any(not math.isnan(v) for v in values):
                return False
        return True

    try:
        until(all_have_data, "every dashboard query returning a number", 30)
    except AssertionError:
        empty = [
            f"{title}: {expr}" for title, expr in queries if not any(not math.isnan(v) for v in numbers.get(expr, []))
        ]
        raise AssertionError("no data for:\n" + "\n".join(empty)) from None
    frames = numbers['sum by (feed) (rate(ssmd_messages_total{feed=~".*"}[5s]))']
    assert frames and frames[0] > 50, frames  # the simulator's stream, really recorded
    archived = numbers['rate(ssmd_archiver_frames_total{feed=~".*"}[5s])']
    assert archived and archived[0] > 0, archived  # and archived from JetStream


def test_silence_makes_the_no_messages_alert_fire_and_clear(stack: Stack) -> None:
    """The simulator's ``silence`` fault: every connection stays open and sends nothing (pongs
    neither) for 12 s — the recorder is connected and receives no frame — so SsmdNoMessages goes
    pending, then firing; once frames flow again it resolves."""
    until(lambda: stack.query("ssmd_connected == 1"), "connected", 20)
    assert stack.alerts("SsmdNoMessages") == []
    stack.sim.call(stack.sim.sim.inject("silence", 12.0))
    states: set[str] = set()

    def firing() -> bool:
        alerts = stack.alerts("SsmdNoMessages")
        states.update(a["state"] for a in alerts)
        return any(a["state"] == "firing" and a["labels"]["feed"] == "kalshi" for a in alerts)

    until(firing, "SsmdNoMessages firing", 12)
    assert "pending" in states or "firing" in states
    assert stack.query("ssmd_connected == 1"), "the alert is about a connected feed"
    until(lambda: stack.alerts("SsmdNoMessages") == [], "SsmdNoMessages resolved once frames flow", 20)


def test_nats_killed_fires_the_archiver_and_write_alerts_and_they_clear(stack: Stack) -> None:
    """A real fault: the NATS server stops. The archiver loses its connection
    (SsmdArchiverNatsDisconnected) and the recorder cannot publish (SsmdWriteErrors, on the
    ``ssmd_writes_failing`` state); both fire, and both resolve once NATS is back."""
    until(lambda: stack.query("ssmd_archiver_nats_connected == 1"), "the archiver on NATS", 20)
    assert stack.alerts("SsmdArchiverNatsDisconnected") == [] and stack.alerts("SsmdWriteErrors") == []
    stack.nats.stop()
    try:

        def firing(name: str) -> bool:
            return any(a["state"] == "firing" for a in stack.alerts(name))

        until(lambda: firing("SsmdArchiverNatsDisconnected"), "SsmdArchiverNatsDisconnected firing", 20)
        until(lambda: firing("SsmdWriteErrors"), "SsmdWriteErrors firing", 20)
    finally:
        stack.nats.start()
    until(lambda: stack.alerts("SsmdArchiverNatsDisconnected") == [], "SsmdArchiverNatsDisconnected resolved", 30)
    until(lambda: stack.alerts("SsmdWriteErrors") == [], "SsmdWriteErrors resolved", 30)


def test_a_refused_key_fires_the_auth_and_not_connected_alerts_for_that_recorder_only(stack: Stack) -> None:
    """The second recorder's key is refused from its first request (REST discovery, before any
    connection exists): SsmdAuthFailures and SsmdNotConnected fire for it, and neither names the
    recorder whose simulator takes it unsigned."""

    def firing(name: str) -> list[str]:
        return [a["labels"].get("instance", "") for a in stack.alerts(name) if a["state"] == "firing"]

    until(lambda: stack.refused in firing("SsmdAuthFailures"), "SsmdAuthFailures firing for the refused key", 30)
    assert firing("SsmdAuthFailures") == [stack.refused]
    assert stack.query(f'ssmd_auth_failing{{instance="{stack.refused}"}} == 1')
    until(lambda: stack.refused in firing("SsmdNotConnected"), "SsmdNotConnected firing for it", 20)
    assert firing("SsmdNotConnected") == [stack.refused]
