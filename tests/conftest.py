"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import free_port
from .natsserver import NatsServer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    """A real nats-server with JetStream on a free port, storing under ``tmp_path``."""
    srv = NatsServer(tmp_path / "js", free_port())
    srv.start()
    yield srv
    srv.stop()
