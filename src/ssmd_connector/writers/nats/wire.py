"""Handing nats-py a whole block of publishes at once.

Why: nats-py's ``publish`` costs a few µs of Python per call (subject checks, a header dict turned
into bytes, a command string, a flush-queue check) — a third of the recorder's CPU when it
published ~120k frames/s. The wire form of a message with headers is simple and stable::

    HPUB <subject> <reply> <header bytes> <total bytes>\\r\\n<headers><payload>\\r\\n

so a block of them is rendered here and handed over with the two internal calls ``publish``
itself ends in (queue the bytes, wake the flusher). Those calls are private to nats-py:
:class:`BlockSender` checks they exist and otherwise falls back to ``publish`` one message at a
time (slower, same bytes on the wire); ``tests/test_nats_writer.py`` fails if the fast path is
ever lost, so an upgrade cannot slow us down silently.
"""

from __future__ import annotations

from collections.abc import Sequence

from nats.aio.client import Client

Publish = tuple[str, str, str, bytes]
"""(subject, reply subject, Nats-Msg-Id, payload)."""


def render(block: Sequence[Publish]) -> bytes:
    """The HPUB commands for ``block``, in order (subjects and ids are ASCII, without spaces)."""
    parts: list[bytes] = []
    add = parts.append
    for subject, reply, msg_id, payload in block:
        header = f"NATS/1.0\r\nNats-Msg-Id: {msg_id}\r\n\r\n".encode()
        add(f"HPUB {subject} {reply} {len(header)} {len(header) + len(payload)}\r\n".encode())
        add(header)
        add(payload)
        add(b"\r\n")
    return b"".join(parts)


class BlockSender:
    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self.fast = all(hasattr(nc, name) for name in ("_send_command", "_flush_pending", "_flush_queue"))

    async def send(self, block: Sequence[Publish]) -> None:
        if not block:
            return
        nc = self._nc
        if not self.fast:
            for subject, reply, msg_id, payload in block:
                await nc.publish(subject, payload, reply=reply, headers={"Nats-Msg-Id": msg_id})
            return
        if nc.is_closed:
            raise ConnectionError("NATS connection closed")
        await nc._send_command(render(block))  # private: see the module docstring
        queue = nc._flush_queue
        if queue is not None and queue.empty():
            await nc._flush_pending()
