"""Incidents: what went wrong, said loudly — and once.

An incident is anything that loses data or could: a connection that cannot be opened, a write
outage, a component that crashed on an unexpected exception, an archive file deleted under the
recorder. Each one is

* logged when it starts (an internal error with its traceback) and when it ends;
* counted **once** in ``ssmd_errors_total{kind}``, however long it lasts and however many retries
  it takes (retries have their own counters, e.g. ``ssmd_write_retries_total``);
* written to the coverage ledger (``"event":"incident"``), so the archive itself says what went
  wrong and when;
* shown by ``/ready`` while it lasts — and an incident that is over at once (a deleted file,
  recreated) for :data:`HOLD` seconds more, so a probe or a person looking sees it;
* for internal errors (bugs), also shown by ``/health`` (503) while they last.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .metrics import FeedStats

log = logging.getLogger(__name__)

HOLD = 60.0
"""Seconds an incident that ended at once stays visible in ``/ready``."""

Record = Callable[[str, str, dict[str, Any]], None]
"""Writes a ledger event: (event, source, fields) — :meth:`ssmd_connector.ledger.Ledger.record`."""


@dataclass
class Incident:
    key: str
    """What is failing (``write``, ``connect:kalshi-0``, ``internal:drain``…): one incident per key at a time."""
    kind: str
    """Its ``ssmd_errors_total`` kind."""
    message: str
    started: float
    internal: bool = False
    until: float | None = None
    """For an incident that ended at once: when it stops being shown."""


class Incidents:
    """The incidents of one feed, as the recorder's components report them."""

    def __init__(self, stats: FeedStats, *, clock: Callable[[], float] = time.monotonic, hold: float = HOLD) -> None:
        self._stats = stats
        self._clock = clock
        self._hold = hold
        self._active: dict[str, Incident] = {}
        self.record: Record | None = None
        """Set by the assembly once the ledger exists."""

    def begin(self, key: str, kind: str, message: str, *, exc: BaseException | None = None) -> bool:
        """An incident starts (or goes on: then only its message is updated). Returns True when new."""
        current = self._active.get(key)
        if current is not None and current.until is None:
            current.message = message
            return False
        internal = kind == "internal"
        self._active[key] = Incident(key, kind, message, self._clock(), internal)
        self._stats.ongoing[key] = kind
        self._stats.error(kind)
        if internal:
            log.error("internal error: %s (restarting it with backoff)", message, exc_info=exc)
        else:
            log.error("%s", message)
        self._ledger("incident", key, kind, message)
        return True

    def end(self, key: str, how: str = "recovered") -> None:
        """The incident is over. An internal error stays visible for :data:`HOLD` seconds more:
        a component that crashed and came straight back must still be seen to have crashed."""
        incident = self._active.get(key)
        if incident is None or incident.until is not None:
            return
        self._stats.ongoing.pop(key, None)
        now = self._clock()
        if incident.internal:
            incident.until = now + self._hold
            incident.message += f" ({how} after {now - incident.started:.1f}s)"
        else:
            del self._active[key]
        log.info("%s: %s after %.1fs", key, how, now - incident.started)
        self._ledger("incident_ended", key, incident.kind, how)

    def happened(self, key: str, kind: str, message: str, fields: dict[str, Any] | None = None) -> None:
        """An incident that is already over (e.g. a deleted file recreated): counted, logged,
        recorded, and shown for :data:`HOLD` seconds."""
        now = self._clock()
        self._stats.ongoing.pop(key, None)
        self._active[key] = Incident(key, kind, message, now, kind == "internal", now + self._hold)
        self._stats.error(kind)
        log.error("%s", message)
        self._ledger("incident", key, kind, message, fields)

    def active(self) -> list[Incident]:
        now = self._clock()
        for key in [k for k, i in self._active.items() if i.until is not None and i.until <= now]:
            del self._active[key]
        return list(self._active.values())

    def internal(self) -> list[Incident]:
        return [i for i in self.active() if i.internal]

    def _ledger(self, event: str, key: str, kind: str, message: str, fields: dict[str, Any] | None = None) -> None:
        if self.record is None:
            return
        body: dict[str, Any] = {"key": key, "kind": kind, "message": message}
        if fields:
            body.update(fields)
        try:
            self.record(event, "recorder", body)
        except Exception:  # the ledger must never turn one incident into two
            log.exception("cannot record the incident in the ledger")
