"""The NATS backlog's overflow on local disk: frames NATS has not taken yet, in order.

Why: while NATS is down the publisher keeps what it could not publish. In memory that is bounded
(``nats.max_backlog_mb``), and at the bound reading pauses — for the local archive too — so a long
outage would become gaps in the recording. With ``nats.spill_mb`` the overflow goes to
``<storage.path>/.nats-spill/`` instead and is published from there, in order, once NATS is back;
reading pauses only when the spill is full too.

Files are ``<n>.spill`` (``n`` increasing), one record per line::

    <Nats-Msg-Id> <subject> <archive line>

(ids and subjects hold no spaces, archive lines no newline), each with ``<n>.spill.done``: how many
bytes of it NATS has acknowledged. A file is deleted once all of it is acknowledged. Files left by
a run that crashed are published first by the next (same ids: JetStream's duplicate window drops
what was stored just before the crash). The methods do file I/O: call them in a worker thread.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import BinaryIO

from ...archive.segments import atomic_write

log = logging.getLogger(__name__)

Record = tuple[str, str, bytes]
"""(Nats-Msg-Id, subject, payload)."""


def _number(path: Path) -> int:
    return int(path.name.split(".", 1)[0])


class Spill:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        directory.mkdir(parents=True, exist_ok=True)
        self._files = sorted((p for p in directory.glob("*.spill") if p.name[:-6].isdigit()), key=_number)
        self._appending: BinaryIO | None = None
        self._done = self._read_done(self._files[0]) if self._files else 0
        """Bytes of the oldest file already acknowledged."""
        self.bytes = sum(p.stat().st_size for p in self._files) - self._done
        """Bytes on disk not acknowledged yet."""
        self._handed = 0
        """Of those, bytes handed out by :meth:`read` (in memory now, being published)."""
        if self._files:
            log.warning(
                "%d NATS spill file(s) left by an earlier run in %s: publishing them first", len(self._files), directory
            )

    @property
    def active(self) -> bool:
        """Something is on disk: new frames must queue behind it."""
        return bool(self._files)

    @property
    def full(self) -> bool:
        return self.bytes >= self.max_bytes

    @property
    def waiting_bytes(self) -> int:
        """Bytes only on disk (not also in memory being published)."""
        return self.bytes - self._handed

    def append(self, records: list[Record]) -> None:
        data = b"".join(
            b"%s %s %s\n" % (msg_id.encode(), subject.encode(), payload) for msg_id, subject, payload in records
        )
        if self._appending is None:
            path = self.directory / f"{_number(self._files[-1]) + 1 if self._files else 1}.spill"
            self._appending = open(path, "ab")  # noqa: SIM115 - kept open across calls
            self._files.append(path)
        self._appending.write(data)
        self._appending.flush()
        self.bytes += len(data)

    def read(self, max_records: int) -> tuple[list[Record], int]:
        """The oldest records not acknowledged (at most ``max_records``, from one file), and the
        offset where they end — to pass to :meth:`acknowledged` once NATS has them all."""
        path = self._files[0]
        records: list[Record] = []
        end = self._done
        with open(path, "rb") as f:
            f.seek(self._done)
            while len(records) < max_records:
                line = f.readline()
                if not line.endswith(b"\n"):
                    if line and path != self._appending_path:  # torn by a crash: skip it
                        log.warning("%s: torn last record skipped (the local archive has the frame)", path)
                        end += len(line)
                    break
                end += len(line)
                msg_id, subject, payload = line[:-1].split(b" ", 2)
                records.append((msg_id.decode(), subject.decode(), payload))
        self._handed = end - self._done
        return records, end

    def acknowledged(self, end: int) -> None:
        """NATS holds everything of the oldest file up to ``end``."""
        path = self._files[0]
        self.bytes -= end - self._done
        self._done = end
        self._handed = 0
        if end < path.stat().st_size:
            atomic_write(self._done_path(path), str(end).encode())
            return
        if path == self._appending_path:  # all of it read back: later frames start a new file
            assert self._appending is not None
            self._appending.close()
            self._appending = None
        path.unlink()
        self._done_path(path).unlink(missing_ok=True)
        self._files.pop(0)
        self._done = self._read_done(self._files[0]) if self._files else 0

    def close(self) -> None:
        if self._appending is not None:
            self._appending.close()
            self._appending = None

    @property
    def _appending_path(self) -> Path | None:
        return self._files[-1] if self._appending is not None else None

    @staticmethod
    def _done_path(path: Path) -> Path:
        return path.with_name(path.name + ".done")

    def _read_done(self, path: Path) -> int:
        try:
            return int(self._done_path(path).read_text())
        except (FileNotFoundError, ValueError):
            return 0
