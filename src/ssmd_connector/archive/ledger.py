"""The coverage ledger's file format: ``<date>/<feed>.events.jsonl``, one JSON object a line.

Each line has ``ts`` (the time it was recorded, as archive lines have), ``feed``, ``shard`` (the
connection, or ``recorder`` / ``rest``) and ``event``, plus the event's fields; the events are
listed in :mod:`ssmd_connector.ledger`, which writes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .layout import ledger_path
from .line import json_object


def is_event(line: bytes) -> bool:
    """A complete ledger line (the repair at start keeps it)?"""
    return json_object(line) is not None


def summary(directory: Path, feed: str) -> dict[str, Any]:
    """Gaps and unplanned disconnects of the day, for the manifest."""
    gaps: list[dict[str, Any]] = []
    disconnects = 0
    try:
        text = ledger_path(directory, feed).read_bytes()
    except FileNotFoundError:
        return {"gaps": gaps, "disconnects": disconnects}
    for line in text.splitlines():
        ev = json_object(line)
        if ev is None:
            continue  # (a torn line: the ledger repairs it when it next writes that file)
        if ev.get("event") == "gap":
            gaps.append({k: ev.get(k) for k in ("ts", "shard", "sid", "channel", "expected", "got", "missing")})
        elif ev.get("event") == "disconnect" and not ev.get("requested"):
            disconnects += 1
    return {"gaps": gaps, "disconnects": disconnects}
