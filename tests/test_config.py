"""Config loading as a library: defaults, inference, warnings, path resolution."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ssmd_connector.config import load

from .helpers import write_config


def test_loads_and_resolves_relative_storage_against_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(tmp_path, env="name: test\nfeed: testfeed\nstorage: {type: local, path: rel/dir}\n")
    monkeypatch.chdir(tmp_path)
    cfg = load(tmp_path, "test")
    assert cfg.environment.storage.path == tmp_path / "rel/dir"
    assert cfg.feed.active_version().endpoint == "ws://127.0.0.1:9/ws"
    assert cfg.environment.storage.flush_interval == 1.0


def test_unknown_keys_are_warnings(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_config(
        tmp_path,
        env="name: test\nfeed: testfeed\nextra_block: {a: 1}\nstorage: {type: local, path: d, tier: hot}\n",
    )
    with caplog.at_level(logging.WARNING):
        load(tmp_path, "test")
    text = caplog.text
    assert "unknown key extra_block ignored" in text
    assert "unknown key storage.tier ignored" in text


@pytest.mark.parametrize(
    ("name", "connector", "expected"),
    [
        ("kalshi", None, "kalshi"),
        ("kalshi-demo", None, "kalshi"),
        ("other", None, "websocket"),
        ("kalshi", "websocket", "websocket"),
        ("other", "kalshi", "kalshi"),
    ],
)
def test_connector_inference(tmp_path: Path, name: str, connector: str | None, expected: str) -> None:
    extra = f"connector: {connector}\n" if connector else ""
    write_config(
        tmp_path,
        feed_name=name,
        env=f"name: test\nfeed: {name}\nstorage: {{type: local, path: d}}\n",
        feed=f"name: {name}\ntype: websocket\n{extra}versions:\n"
        "  - {version: 1, endpoint: 'ws://h/x', active: true}\n",
    )
    cfg = load(tmp_path, "test")
    assert cfg.feed.connector_kind == expected
    assert cfg.feed.active_version().version == "1"


def test_example_configs_load() -> None:
    root = Path(__file__).resolve().parents[1] / "examples" / "config"
    for env_file in sorted((root / "environments").glob("*.yaml")):
        cfg = load(root, env_file.stem)
        assert cfg.feed.name == cfg.environment.feed
