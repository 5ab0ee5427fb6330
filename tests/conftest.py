"""Shared fixtures."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from ssmd_connector.sim import SimConfig, SimServer

from .helpers import free_port
from .natsserver import NatsServer

StartSim = Callable[[SimConfig], Awaitable[SimServer]]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    """A real nats-server with JetStream on a free port, storing under ``tmp_path``."""
    srv = NatsServer(tmp_path / "js", free_port())
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
async def start_sim() -> AsyncIterator[StartSim]:
    """Start simulators (``port=0``: a free port each); every one is stopped when the test ends,
    whether it passed or not."""
    started: list[SimServer] = []

    async def start(config: SimConfig) -> SimServer:
        sim = SimServer(config)
        started.append(sim)
        await sim.start()
        return sim

    yield start
    for sim in started:
        await sim.stop()
