"""Fault injection: what real exchanges and networks do to a recorder, on demand or on a schedule.

Kinds (``KIND@SECONDS[:ARG]`` on the command line, e.g. ``gap@5``, ``silence@20:40``):

* ``close``     — clean WebSocket close from the server
* ``reset``     — TCP reset (RST, no close frame)
* ``silence``   — stop sending anything, pongs included, for ARG seconds (default: forever)
* ``gap``       — skip one sequence number on an order-book sid (or any sequenced sid)
* ``error25``   — terminal "Subscription buffer overflow" on a sid, which is then dropped
* ``error10``   — terminal "Channel error" on a sid, which is then dropped
* ``nonjson``   — one text frame that is not JSON
* ``auth``      — reject the next ARG handshakes with 401 (default 1)
* ``delay``     — hold every frame back by ARG seconds (default 2) for 5 seconds
* ``deaf``      — ignore commands (no replies at all) for ARG seconds (default: forever)
"""

from __future__ import annotations

from dataclasses import dataclass

FAULT_KINDS = ("close", "reset", "silence", "gap", "error25", "error10", "nonjson", "auth", "delay", "deaf")


@dataclass(frozen=True)
class Fault:
    kind: str
    at: float = 0.0
    """Seconds after the simulator starts (scheduled faults)."""
    arg: float | None = None
    connection: int | None = None
    """Which connection (0 = the first accepted); None = every open connection."""


def parse_fault(text: str) -> Fault:
    """``KIND@SECONDS[:ARG][#CONNECTION]`` → :class:`Fault`; raises ValueError with the expected form."""
    spec, _, conn = text.partition("#")
    kind, _, when = spec.partition("@")
    at_text, _, arg_text = when.partition(":")
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault {kind!r} (expected one of: {', '.join(FAULT_KINDS)})")
    try:
        at = float(at_text) if at_text else 0.0
        arg = float(arg_text) if arg_text else None
        connection = int(conn) if conn else None
    except ValueError:
        raise ValueError(f"bad fault {text!r}: expected KIND@SECONDS[:ARG][#CONNECTION], e.g. gap@5") from None
    return Fault(kind, at, arg, connection)
