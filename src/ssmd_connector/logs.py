"""Logging setup, with a last line of defence against leaking secrets.

Secrets are wrapped in :class:`~ssmd_connector.secrets.Secret` and never formatted on purpose; this
filter additionally masks any resolved secret value that would still reach a log record (e.g.
inside a third-party library's error text).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

from .secrets import Secret


class RedactSecrets(logging.Filter):
    def __init__(self, secrets: Iterable[Secret] = ()) -> None:
        super().__init__()
        self._values: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[Secret]) -> None:
        for s in secrets:
            v = s.reveal()
            if len(v) >= 4:
                self._values.append(v)
                # PEM keys are multi-line; mask each substantial line too.
                self._values += [line for line in v.splitlines() if len(line) >= 16]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._values:
            return True
        text = record.getMessage()
        masked = text
        for v in self._values:
            if v in masked:
                masked = masked.replace(v, "********")
        if masked != text:
            record.msg, record.args = masked, None
        return True


REDACTOR = RedactSecrets()


def setup(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(REDACTOR)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
