"""Every configuration mistake, through the real CLI: one readable line, exit code 2, no traceback,
no secret. One table: each row is a config directory (or command line) and what stderr must say."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
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

KALSHI_FEED = """\
name: kalshi
type: websocket
versions:
  - {version: sim, endpoint: "ws://127.0.0.1:9/trade-api/ws/v2", active: true}
"""

STORAGE = "storage: {type: local, path: d}\n"
BOGUS_KEY = "-----BEGIN RSA PRIVATE KEY-----\nTOPSECRETMATERIAL1234567890\n-----END RSA PRIVATE KEY-----"


def env(body: str) -> str:
    return f"name: test\nfeed: testfeed\n{body}"


def kalshi_env(extra: str, keys: str = "keys: []\n") -> str:
    return f"name: test\nfeed: kalshi\n{keys}{STORAGE}{extra}"


@dataclass(frozen=True)
class Mistake:
    says: tuple[str, ...]
    """What stderr must contain (each)."""
    env: str | None = None
    """The text of environments/test.yaml (None: a working one)."""
    feed: str | None = None
    feed_name: str = "testfeed"
    args: tuple[str, ...] = ("--env", "test")
    config_dir: str = "."
    """Relative to the written directory (a missing one is a mistake too)."""
    variables: dict[str, str] = field(default_factory=dict)
    secret: str = ""
    """Must appear nowhere in the output."""


MISTAKES = {
    "missing config dir": Mistake(("--config-dir: directory not found",), config_dir="nope"),
    "missing environment file": Mistake(("environments/prod.yaml: file not found",), args=("--env", "prod")),
    "missing feed file": Mistake(("feeds/other.yaml: file not found",), env=f"name: test\nfeed: other\n{STORAGE}"),
    "yaml syntax error names the line": Mistake(
        ("environments/test.yaml: YAML syntax error at line 4",), env=env("storage: [unclosed\nkeys: []\n")
    ),
    "missing field": Mistake(("environments/test.yaml: storage: missing required field",), env=env("keys: []\n")),
    "missing nested field": Mistake(
        ("environments/test.yaml: storage.path: missing required field",), env=env("storage:\n  type: local\n")
    ),
    "wrong type": Mistake(("environments/test.yaml: keys: ", "valid list"), env=env(f"keys: nope\n{STORAGE}")),
    "wrong type in feed": Mistake(
        ("feeds/testfeed.yaml: versions[0].active: ", "boolean"),
        feed=GOOD_FEED.replace("active: true", "active: sometimes"),
    ),
    "no active version": Mistake(
        ("feeds/testfeed.yaml: versions: no version has 'active: true'",),
        feed=GOOD_FEED.replace("active: true", "active: false"),
    ),
    "more than one active version": Mistake(
        ("more than one active version (versions[0], versions[1])",),
        feed=GOOD_FEED + '  - version: "2"\n    endpoint: ws://127.0.0.1:9/ws\n    active: true\n',
    ),
    "unknown storage type": Mistake(
        ("storage.type: unknown storage type 's3' (expected one of: local)",), env=env("storage: {type: s3, path: d}\n")
    ),
    "bad endpoint scheme": Mistake(
        ("versions[0].endpoint: expected a ws:// or wss:// URL",),
        feed=GOOD_FEED.replace("ws://127.0.0.1:9/ws", "http://example/x"),
    ),
    **{
        f"unsafe environment name {name}": Mistake(
            ("--env: environment name must be a safe file name",), args=(f"--env={name}",)
        )
        for name in ["../x", "a/b", ".hidden", "..", "-rf"]
    },
    "unsafe feed name": Mistake(
        ("environments/test.yaml: feed: must be a safe file name", "'../etc'"),
        env=f"name: test\nfeed: ../etc\n{STORAGE}",
    ),
    "missing key variable named without its neighbour's value": Mistake(
        ("keys[0] ('k'): environment variable SSMD_T_B is not set",),
        env=env(f"keys:\n  - {{name: k, source: 'env:SSMD_T_A,SSMD_T_B'}}\n{STORAGE}"),
        variables={"SSMD_T_A": "hunter2-very-secret"},
        secret="hunter2-very-secret",
    ),
    "unsupported key source": Mistake(
        ("unsupported key source 'vault'",), env=env(f"keys:\n  - {{name: k, source: 'vault:kv/x'}}\n{STORAGE}")
    ),
    "bad health address": Mistake(("expected HOST:PORT",), args=("--env", "test", "--health-addr", "nope")),
    "orderbook without markets": Mistake(
        ("subscription: orderbook_delta needs markets",),
        env=kalshi_env("subscription:\n  channels: [orderbook_delta]\n"),
        feed=KALSHI_FEED,
        feed_name="kalshi",
    ),
    "unsupported channel": Mistake(
        ("subscription.channels: unsupported channel(s) 'fill'",),
        env=kalshi_env("subscription:\n  channels: [fill]\n  markets: [A]\n"),
        feed=KALSHI_FEED,
        feed_name="kalshi",
    ),
    "half of the kalshi credentials": Mistake(
        ("keys: KALSHI_PRIVATE_KEY is required with KALSHI_API_KEY",),
        env=kalshi_env(
            "subscription:\n  markets: [A]\n", keys="keys:\n  - {name: kalshi, source: 'env:KALSHI_API_KEY'}\n"
        ),
        feed=KALSHI_FEED,
        feed_name="kalshi",
        variables={"KALSHI_API_KEY": "id-1"},
    ),
    "unreadable private key": Mistake(
        ("KALSHI_PRIVATE_KEY: not a readable unencrypted RSA private key",),
        env=kalshi_env(
            "subscription:\n  markets: [A]\n",
            keys="keys:\n  - {name: kalshi, source: 'env:KALSHI_API_KEY,KALSHI_PRIVATE_KEY'}\n",
        ),
        feed=KALSHI_FEED,
        feed_name="kalshi",
        variables={"KALSHI_API_KEY": "id-1", "KALSHI_PRIVATE_KEY": BOGUS_KEY},
        secret="TOPSECRETMATERIAL",
    ),
}


def run_cli(*args: str, variables: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=60, env=cli_env(**(variables or {})), check=False
    )


@pytest.mark.parametrize("mistake", MISTAKES.values(), ids=MISTAKES.keys())
def test_a_config_mistake_is_one_line_and_exit_code_2(tmp_path: Path, mistake: Mistake) -> None:
    write_config(tmp_path, env=mistake.env, feed=mistake.feed, feed_name=mistake.feed_name)
    proc = run_cli(*mistake.args, "--config-dir", str(tmp_path / mistake.config_dir), variables=mistake.variables)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in mistake.says:
        assert needle in proc.stderr, proc.stderr
    if mistake.secret:
        assert mistake.secret not in proc.stderr + proc.stdout


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    write_config(tmp_path, env="name: test\nfeed: 5\nstorage: {type: s3}\n")
    proc = run_cli("--env", "test", "--config-dir", str(tmp_path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "storage.type: unknown storage type" in proc.stderr and "storage.path: missing required field" in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if "config error" in line]) == 2


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
