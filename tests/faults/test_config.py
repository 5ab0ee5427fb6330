"""Configuration and credentials a user can get wrong (rows 6, 8, 9, 10, 12): caught before
anything connects, by start-up and ``ssmd validate`` alike — one line per problem naming the file
and the field, exit 2, never a traceback, never a secret's value."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiohttp import web

from ssmd_connector.kalshi.auth import generate_key_pair
from ssmd_connector.sim import SimConfig, SimServer

from ..helpers import ScriptedServer, cli_env, write_config
from ..kalshi_helpers import KEY, KEY_ID
from .harness import recorder_cli, rejecting_server, ssmd, start_recording, until

FEED = "name: testfeed\ntype: websocket\nversions:\n  - {{version: '1', endpoint: '{endpoint}', active: true}}\n"


def both(cfg: Path, env: dict[str, str] | None = None) -> list[tuple[str, int, str]]:
    """(which, exit code, stderr) of ``ssmd validate`` and start-up on the same files."""
    check = ssmd("validate", "--config-dir", str(cfg), "--env", "test", env=env, cwd=cfg)
    run = recorder_cli("--env", "test", "--config-dir", str(cfg), env=env, cwd=cfg)
    return [("ssmd validate", check.returncode, check.stderr), ("ssmd-connector", run.returncode, run.stderr)]


@pytest.mark.parametrize(
    ("endpoint", "needle"),
    [
        ("ws://127.0.0.1:99999/x", "Port out of range"),
        ("ws://[::1:19005/feed", "Invalid IPv6 URL"),
        ("ws://[::zz]:19005/feed", "does not appear to be an IPv4 or IPv6 address"),
        ("ws://127.0.0.1:0/x", "port 0 is out of range"),
        ("ws:///feed", "with a host"),
        ("ws://user:pw@127.0.0.1:9/x", "credentials in a URL"),
    ],
)
def test_endpoint_urls_are_parsed_in_full(tmp_path: Path, endpoint: str, needle: str) -> None:
    """Row 6: these passed validation; the connection task then died silently."""
    cfg = write_config(tmp_path / "cfg", feed=FEED.format(endpoint=endpoint))
    for which, code, err in both(cfg):
        assert code == 2 and "Traceback" not in err, (which, err)
        assert "feeds/testfeed.yaml: versions[0].endpoint:" in err and needle in err, (which, err)
        assert "pw" not in err or "user:pw" in endpoint


async def test_a_secret_with_a_line_break_never_reaches_a_header(tmp_path: Path) -> None:
    """Row 8: ``API_TOKEN=$'tok\\r\\nX-Injected: yes'`` sent a second header to the server."""

    async def script(ws: web.WebSocketResponse, srv: ScriptedServer, _: int) -> None:
        await asyncio.sleep(10)

    server = ScriptedServer(script)
    await server.start()
    feed = (
        "name: testfeed\ntype: websocket\nversions:\n"
        f"  - version: '1'\n    endpoint: '{server.url}'\n    active: true\n"
        "    headers: {Authorization: 'Bearer ${API_TOKEN}'}\n"
    )
    env = (
        "name: test\nfeed: testfeed\nkeys:\n  - {name: t, source: 'env:API_TOKEN'}\n"
        f"storage: {{type: local, path: {tmp_path / 'd'}}}\n"
    )
    cfg = write_config(tmp_path / "cfg", env=env, feed=feed)
    for value in ("tok\r\nX-Injected: yes", "tok\nX-Injected: yes", "tok\x7f"):
        proc = await asyncio.to_thread(
            recorder_cli, "--env", "test", "--config-dir", str(cfg), env=cli_env(API_TOKEN=value)
        )
        assert proc.returncode == 2, proc.stderr
        assert (
            "feeds/testfeed.yaml: headers.Authorization: the value of API_TOKEN contains a control character"
            in proc.stderr
        )
        assert "tok" not in proc.stderr and "Traceback" not in proc.stderr
    await server.stop()
    assert server.connections == 0 and not server.headers_seen


def test_a_kalshi_key_id_with_a_line_break_is_refused(tmp_path: Path) -> None:
    """Row 8, Kalshi: the key id travels in the ``KALSHI-ACCESS-KEY`` header."""
    _, pem = generate_key_pair()
    env = (
        "name: test\nfeed: kalshi\nkeys:\n  - {name: k, source: 'env:KALSHI_API_KEY,KALSHI_PRIVATE_KEY'}\n"
        f"storage: {{type: local, path: {tmp_path / 'd'}}}\nsubscription: {{markets: [A]}}\n"
    )
    feed = "name: kalshi\ntype: websocket\nversions:\n  - {version: s, endpoint: 'ws://127.0.0.1:9/x', active: true}\n"
    cfg = write_config(tmp_path / "cfg", env=env, feed=feed, feed_name="kalshi")
    proc = recorder_cli(
        "--env", "test", "--config-dir", str(cfg), env=cli_env(KALSHI_API_KEY="id\r\nX-Evil: 1", KALSHI_PRIVATE_KEY=pem)
    )
    assert proc.returncode == 2 and "keys: the value of KALSHI_API_KEY contains a control character" in proc.stderr
    assert "X-Evil" not in proc.stderr


@pytest.mark.parametrize("name", ["acc\n", "acc\r", "ac\tc", "acc\x1b"])
def test_names_with_control_characters_are_refused(tmp_path: Path, name: str) -> None:
    """Row 9: ``$`` matched before a trailing newline, so ``acc\\n`` passed as a safe name and a
    file name with a newline was created."""
    cfg = write_config(tmp_path / "cfg", storage=tmp_path / "data")
    proc = recorder_cli("--env", name, "--config-dir", str(cfg))
    assert proc.returncode == 2 and "--env: environment name must be a safe file name" in proc.stderr
    cfg2 = write_config(
        tmp_path / "cfg2",
        env=f"name: test\nfeed: {json.dumps(name)}\nstorage: {{type: local, path: {tmp_path / 'data'}}}\n",
    )
    for which, code, err in both(cfg2):
        assert code == 2 and "environments/test.yaml: feed: must be a safe file name" in err, (which, err)
    assert not (tmp_path / "data").exists()


def test_problems_in_both_files_are_reported_at_once(tmp_path: Path) -> None:
    """Row 10: only the environment's problems were reported, though the README promises every one."""
    cfg = write_config(
        tmp_path / "cfg",
        env="name: test\nfeed: testfeed\nstorage: {type: s3, path: d}\n",
        feed=FEED.format(endpoint="http://wrong/x").replace("type: websocket", "type: rest"),
    )
    for which, code, err in both(cfg):
        assert code == 2, (which, err)
        assert "environments/test.yaml: storage.type: unknown storage type 's3'" in err, (which, err)
        assert "feeds/testfeed.yaml: type:" in err and "feeds/testfeed.yaml: versions[0].endpoint:" in err, (which, err)


async def test_a_rejected_kalshi_key_is_named_alike_in_log_ready_and_ledger(tmp_path: Path) -> None:
    """Row 12: the log masked the key id that /ready and the ledger showed."""
    sim = SimServer(SimConfig(port=0, markets=4, rate=100, public_keys={KEY_ID: KEY.public_key()}))
    await sim.start()
    _, wrong_pem = generate_key_pair()
    env = (
        "name: test\nfeed: testfeed\nkeys:\n  - {name: k, source: 'env:KALSHI_API_KEY,KALSHI_PRIVATE_KEY'}\n"
        f"storage: {{type: local, path: {tmp_path / 'data'}}}\n"
        f"subscription: {{markets: [{sim.model.open_tickers[0]}]}}\n"
    )
    feed = FEED.format(endpoint=sim.ws_url) + "connector: kalshi\n"
    rec = await start_recording(
        tmp_path, sim.ws_url, env=env, feed=feed, environ=cli_env(KALSHI_API_KEY=KEY_ID, KALSHI_PRIVATE_KEY=wrong_pem)
    )
    await until(lambda: "authentication failed" in rec.stderr, what="a rejected handshake")
    status, ready = await rec.get("/ready")
    assert status == 503 and KEY_ID in ready["reasons"][0]
    assert await rec.stop() == 0
    await sim.stop()
    assert f"[key id {KEY_ID}]" in rec.stderr  # the same id the ledger and /ready show
    assert any(e.get("key_id") == KEY_ID for e in rec.ledger() if e["event"] == "auth_failed")
    assert "API key id (KALSHI_API_KEY) and the private key (KALSHI_PRIVATE_KEY)" in rec.stderr
    for line in wrong_pem.splitlines()[1:-1]:
        assert line not in rec.stderr


async def test_a_generic_feeds_401_names_its_own_credentials(tmp_path: Path) -> None:
    """Row 12: a generic feed's 401 asked about a Kalshi "API key id / private key"."""

    runner, port = await rejecting_server()
    rec = await start_recording(tmp_path, f"ws://127.0.0.1:{port}/ws")
    await until(lambda: "HTTP 401" in rec.stderr, what="a rejected handshake")
    assert await rec.stop() == 0
    await runner.cleanup()
    assert "credentials: add them as handshake headers in feeds/testfeed.yaml" in rec.stderr
    assert "API key" not in rec.stderr and "Kalshi" not in rec.stderr


def _env(tmp_path: Path, extra: str = "", storage: str = "") -> str:
    return f"name: test\nfeed: testfeed\nstorage: {{type: local, path: {tmp_path / 'data'}{storage}}}\n{extra}"


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("gzip-level", "compression_level 12 is out of range for gzip (1-9)"),
        ("receive-buffer", "subscription.receive_buffer: Input should be less than or equal to 2147483647"),
        ("dangling-link", "which does not exist (not mounted?)"),
        ("long-name", "storage.path:"),
        ("deep-yaml", "YAML nested too deeply"),
        ("vault", "keys[0].source: unsupported key source 'vault'"),
        ("unknown-var", "versions[0].headers.Authorization: ${NOT_A_KEY} is not among the environment's keys"),
    ],
)
def test_what_start_up_would_refuse_validate_refuses_too(tmp_path: Path, case: str, needle: str) -> None:
    """Each of these passed ``ssmd validate`` and then failed at run time (or with a traceback)."""
    env, feed = _env(tmp_path), None
    if case == "gzip-level":
        env = _env(tmp_path, storage=", compression: gzip, compression_level: 12")
    elif case == "receive-buffer":
        env = _env(tmp_path, "subscription: {receive_buffer: 4294967296}\n")
    elif case == "dangling-link":
        (tmp_path / "mnt").symlink_to(tmp_path / "not-mounted")
        env = f"name: test\nfeed: testfeed\nstorage: {{type: local, path: {tmp_path / 'mnt' / 'ssmd'}}}\n"
    elif case == "long-name":
        env = f"name: test\nfeed: testfeed\nstorage: {{type: local, path: {tmp_path / ('x' * 300)}}}\n"
    elif case == "deep-yaml":
        env = _env(tmp_path, "extra: " + "[" * 1100 + "]" * 1100 + "\n")
    elif case == "vault":
        env = _env(tmp_path, "keys:\n  - {name: v, source: 'vault:kv/x'}\n")
    else:
        env = _env(tmp_path, "keys:\n  - {name: t, source: 'env:API_TOKEN'}\n")
        feed = (
            "name: testfeed\ntype: websocket\nversions:\n  - version: '1'\n    endpoint: ws://127.0.0.1:9/x\n"
            "    active: true\n    headers: {Authorization: 'Bearer ${NOT_A_KEY}'}\n"
        )
    cfg = write_config(tmp_path / "cfg", env=env, feed=feed)
    for which, code, err in both(cfg, env=cli_env(API_TOKEN="t")):
        assert code == 2 and needle in err and "Traceback" not in err, (which, err[-1500:])
