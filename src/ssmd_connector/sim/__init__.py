"""A protocol-faithful Kalshi simulator: WebSocket v2 + the REST endpoints the recorder uses.

A product feature (offline demos, CI, fault drills), importable for tests::

    sim = SimServer(SimConfig(port=0, markets=50, rate=2000))
    await sim.start()
    ...; sim.faults.inject("gap"); ...
    await sim.stop()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .faults import FAULT_KINDS, Fault, parse_fault
from .market import MarketModel

if TYPE_CHECKING:
    from .server import SimConfig, SimServer

__all__ = ["FAULT_KINDS", "Fault", "MarketModel", "SimConfig", "SimServer", "parse_fault"]


def __getattr__(name: str) -> Any:
    """The server (and aiohttp under it) imported when first asked for: ``ssmd export`` and the
    other archive tools parse the fault kinds without loading a web server (every export job
    process starts by importing the ``ssmd`` command)."""
    if name in ("SimConfig", "SimServer"):
        from . import server  # noqa: PLC0415

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The lazily imported names listed too (tab completion, ``help``)."""
    return sorted({*globals(), *__all__})
