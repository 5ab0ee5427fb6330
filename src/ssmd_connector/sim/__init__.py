"""A protocol-faithful Kalshi simulator: WebSocket v2 + the REST endpoints the recorder uses.

A product feature (offline demos, CI, fault drills), importable for tests::

    sim = SimServer(SimConfig(port=0, markets=50, rate=2000))
    await sim.start()
    ...; sim.faults.inject("gap"); ...
    await sim.stop()
"""

from .faults import FAULT_KINDS, Fault, parse_fault
from .market import MarketModel
from .server import SimConfig, SimServer

__all__ = ["FAULT_KINDS", "Fault", "MarketModel", "SimConfig", "SimServer", "parse_fault"]
