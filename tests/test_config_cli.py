"""Every configuration mistake, through the real CLI: one readable line, exit code 2, no traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .helpers import CLI, cli_env, write_config

GOOD_FEED = """\
name: testfeed
type: websocket
versions:
  - version: "1"
    endpoint: ws://127.0.0.1:9/ws
    active: true
"""


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, env=env or cli_env(), check=False)


def assert_config_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def test_missing_config_dir(tmp_path: Path) -> None:
    proc = run_cli("--env", "x", "--config-dir", str(tmp_path / "nope"))
    assert_config_error(proc, "--config-dir: directory not found")


def test_missing_environment_file(tmp_path: Path) -> None:
    write_config(tmp_path)
    proc = run_cli("--env", "prod", "--config-dir", str(tmp_path))
    assert_config_error(proc, "environments/prod.yaml: file not found")


def test_missing_feed_file(tmp_path: Path) -> None:
    write_config(tmp_path)
    (tmp_path / "feeds" / "testfeed.yaml").unlink()
    proc = run_cli("--env", "test", "--config-dir", str(tmp_path))
    assert_config_error(proc, "feeds/testfeed.yaml: file not found")


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    write_config(tmp_path, env="name: test\nfeed: testfeed\nstorage: [unclosed\nkeys: []\n")
    proc = run_cli("--env", "test", "--config-dir", str(tmp_path))
    assert_config_error(proc, "environments/test.yaml: YAML syntax error at line 4")


def test_missing_field(tmp_path: Path) -> None:
    write_config(tmp_path, env="name: test\nfeed: testfeed\nkeys: []\n")
    proc = run_cli("--env", "test", "--config-dir", str(tmp_path))
    assert_config_error(proc, "environments/test.yaml: storage: missing required field")


def test_missing_nested_field(tmp_path: Path) -> None:
    write_config(tmp_path, env="name: test\nfeed: testfeed\nstorage:\n  type: local\n")
    proc = run_cli("--env", "test", "--config-dir", str(tmp_path))
    assert_config_error(proc, "environments/test.yaml: storage.path: missing required field")


def test_wrong_type(tmp_path: Path) -> None:
    write_config(tmp_path, env="name: test\nfeed: testfeed\nkeys: nope\nstorage: {type: local, path: d}\n")
    proc = run_cli("--env", "test", "--config-dir", str(tmp_path))
    assert_config_error(proc, "environments/test.yaml: keys: ", "valid list")


def test_wrong_type_in_feed(tmp_path: Path) -> None:
    write_config(tmp_path, feed=GOOD_FEED.replace("active: true", "active: sometimes"))
    proc = run_cli("--env", "test", "--config-dir", str(tmp_path))
    assert_config_error(proc, "feeds/testfeed.yaml: versions[0].active: ", "boolean")


def test_no_active_version(tmp_path: Path) -> None:
    write_config(tmp_path, feed=GOOD_FEED.replace("active: true", "active: false"))
    proc = run_cli("--env", "test", "--config-dir", str(tmp_path))
    assert_config_error(proc, "feeds/testfeed.yaml: versions: no version has 'active: true'")


def test_more_than_one_active_version(tmp_path: Path) -> None:
    two = GOOD_FEED + '  - version: "2"\n    endpoint: ws://127.0.0.1:9/ws\n    active: true\n'
    write_config(tmp_path, feed=two)
    proc = run_cli("--env", "test", "--config-dir", str(tmp_path))
    assert_config_error(proc, "more than one active version (versions[0], versions[1])")


def test_unknown_storage_type(tmp_path: Path) -> None:
    write_config(tmp_path, env="name: test\nfeed: testfeed\nstorage: {type: s3, path: d}\n")
    proc = run_cli("--env", "test", "--config-dir", str(tmp_path))
    assert_config_error(proc, "storage.type: unknown storage type 's3' (expected one of: local)")


def test_bad_endpoint_scheme(tmp_path: Path) -> None:
    write_config(tmp_path, feed=GOOD_FEED.replace("ws://127.0.0.1:9/ws", "http://example/x"))
    proc = run_cli("--env", "test", "--config-dir", str(tmp_path))
    assert_config_error(proc, "versions[0].endpoint: expected a ws:// or wss:// URL")


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", "..", "-rf"])
def test_unsafe_environment_name(tmp_path: Path, name: str) -> None:
    write_config(tmp_path)
    proc = run_cli(f"--env={name}", "--config-dir", str(tmp_path))
    assert_config_error(proc, "--env: environment name must be a safe file name")


def test_unsafe_feed_name(tmp_path: Path) -> None:
    write_config(tmp_path, env="name: test\nfeed: ../etc\nstorage: {type: local, path: d}\n")
    proc = run_cli("--env", "test", "--config-dir", str(tmp_path))
    assert_config_error(proc, "environments/test.yaml: feed: must be a safe file name", "'../etc'")


def test_every_problem_reported_at_once(tmp_path: Path) -> None:
    write_config(tmp_path, env="name: test\nfeed: 5\nstorage: {type: s3}\n")
    proc = run_cli("--env", "test", "--config-dir", str(tmp_path))
    assert_config_error(proc, "storage.type: unknown storage type", "storage.path: missing required field")
    assert len([line for line in proc.stderr.splitlines() if "config error" in line]) == 2


def test_missing_key_variable_named_without_value(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        env="name: test\nfeed: testfeed\nkeys:\n  - {name: k, source: 'env:SSMD_T_A,SSMD_T_B'}\n"
        "storage: {type: local, path: d}\n",
    )
    proc = run_cli("--env", "test", "--config-dir", str(tmp_path), env=cli_env(SSMD_T_A="hunter2-very-secret"))
    assert_config_error(proc, "keys[0] ('k'): environment variable SSMD_T_B is not set")
    assert "hunter2-very-secret" not in proc.stderr + proc.stdout


def test_unsupported_key_source(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        env="name: test\nfeed: testfeed\nkeys:\n  - {name: k, source: 'vault:kv/x'}\nstorage: {type: local, path: d}\n",
    )
    proc = run_cli("--env", "test", "--config-dir", str(tmp_path))
    assert_config_error(proc, "unsupported key source 'vault'")


def test_bad_health_addr_is_a_usage_error(tmp_path: Path) -> None:
    write_config(tmp_path)
    proc = run_cli("--env", "test", "--config-dir", str(tmp_path), "--health-addr", "nope")
    assert_config_error(proc, "expected HOST:PORT")


def test_help_explains_every_flag() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0
    for flag in ("--env", "--config-dir", "--health-addr", "--log-level", "--version"):
        assert flag in proc.stdout
    assert "Exit codes" in proc.stdout


def test_version() -> None:
    proc = run_cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.startswith("ssmd-connector ")


KALSHI_FEED = """\
name: kalshi
type: websocket
versions:
  - {version: sim, endpoint: "ws://127.0.0.1:9/trade-api/ws/v2", active: true}
"""


def kalshi_env(extra: str, keys: str = "keys: []\n") -> str:
    return f"name: test\nfeed: kalshi\n{keys}storage: {{type: local, path: d}}\n{extra}"


def test_orderbook_without_markets_is_a_config_error(tmp_path: Path) -> None:
    write_config(
        tmp_path, feed_name="kalshi", feed=KALSHI_FEED, env=kalshi_env("subscription:\n  channels: [orderbook_delta]\n")
    )
    proc = run_cli("--env", "test", "--config-dir", str(tmp_path))
    assert_config_error(proc, "subscription: orderbook_delta needs markets")


def test_unsupported_channel_is_a_config_error(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        feed_name="kalshi",
        feed=KALSHI_FEED,
        env=kalshi_env("subscription:\n  channels: [fill]\n  markets: [A]\n"),
    )
    proc = run_cli("--env", "test", "--config-dir", str(tmp_path))
    assert_config_error(proc, "subscription.channels: unsupported channel(s) 'fill'")


def test_half_of_the_kalshi_credentials_is_a_config_error(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        feed_name="kalshi",
        feed=KALSHI_FEED,
        env=kalshi_env(
            "subscription:\n  markets: [A]\n", keys="keys:\n  - {name: kalshi, source: 'env:KALSHI_API_KEY'}\n"
        ),
    )
    proc = run_cli("--env", "test", "--config-dir", str(tmp_path), env=cli_env(KALSHI_API_KEY="id-1"))
    assert_config_error(proc, "keys: KALSHI_PRIVATE_KEY is required with KALSHI_API_KEY")


def test_unreadable_private_key_is_a_config_error_without_the_key(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        feed_name="kalshi",
        feed=KALSHI_FEED,
        env=kalshi_env(
            "subscription:\n  markets: [A]\n",
            keys="keys:\n  - {name: kalshi, source: 'env:KALSHI_API_KEY,KALSHI_PRIVATE_KEY'}\n",
        ),
    )
    bogus = "-----BEGIN RSA PRIVATE KEY-----\nTOPSECRETMATERIAL1234567890\n-----END RSA PRIVATE KEY-----"
    proc = run_cli(
        "--env", "test", "--config-dir", str(tmp_path), env=cli_env(KALSHI_API_KEY="id-1", KALSHI_PRIVATE_KEY=bogus)
    )
    assert_config_error(proc, "KALSHI_PRIVATE_KEY: not a readable unencrypted RSA private key")
    assert "TOPSECRETMATERIAL" not in proc.stderr
