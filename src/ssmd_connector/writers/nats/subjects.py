"""Subjects frames are published to: ``<prefix>.<feed>.<message type>.<market ticker>``.

Tokens are made subject-safe: Kalshi tickers contain ``.``, which becomes ``_`` (tickers never
contain ``_``, so the mapping is reversible); whitespace, ``*`` and ``>`` become ``_`` too, and a
missing type or ticker is ``_``. Subjects are cached per (feed, type, ticker): the hot path looks
one up per frame, and building it costs a regex and three decodes.
"""

from __future__ import annotations

import functools
import re

from ...message import Message

_UNSAFE = re.compile(rb"[.\s*>]")
_TICKER_KEY = b'"market_ticker":"'
_MAX_CACHED = 100_000


@functools.lru_cache(maxsize=65536)
def subject_token(raw: bytes | str) -> str:
    """A NATS subject token: no '.', whitespace, '*' or '>'; empty → '_'. (Cached: tickers repeat.)"""
    data = raw.encode() if isinstance(raw, str) else raw
    return _UNSAFE.sub(b"_", data).decode("utf-8", "replace") or "_"


def ticker_of(frame: bytes) -> bytes:
    """The first ``market_ticker`` value in a frame, found by a byte scan (no JSON parse)."""
    i = frame.find(_TICKER_KEY)
    if i < 0:
        return b""
    start = i + len(_TICKER_KEY)
    end = frame.find(b'"', start)
    return frame[start:end] if end > 0 else b""


class Subjects:
    """The subject of each message under one prefix. ``cache`` is public so the writer's loop can
    look a subject up inline and call :meth:`make` only on a miss."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.cache: dict[tuple[str, str, bytes], str] = {}

    def make(self, msg: Message) -> str:
        """``<prefix>.<feed>.<type>.<ticker>`` for a message, cached."""
        key = (msg.feed, msg.kind, ticker_of(msg.frame))
        subject = self.cache.get(key)
        if subject is None:
            if len(self.cache) >= _MAX_CACHED:
                self.cache.clear()
            kind = subject_token(msg.kind) if msg.kind else "_"
            subject = self.cache[key] = f"{self.prefix}.{subject_token(msg.feed)}.{kind}.{subject_token(key[2])}"
        return subject
