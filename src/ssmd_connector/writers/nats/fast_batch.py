"""JetStream fast-ingest batches, sans I/O: reply subjects out, flow frames in.

Why this exists: with one PubAck per frame the publisher parses one reply message per frame, and
that — not the server — capped acknowledged publishing near 90k frames/s here. In a *fast batch*
(nats-server >= 2.14, streams with ``allow_batched``) the server stores each message as it
arrives and acknowledges cumulatively: "everything through batch sequence N is stored", at least
every ``flow`` messages. With ``gap=fail`` a lost message ends the batch instead of being skipped,
so a cumulative ack really covers every frame below it. ``Nats-Msg-Id`` de-duplication still
applies inside batches (checked against the real server in the tests), so a batch that fails is
simply re-sent as a new one and nothing is stored twice.

The wire contract carries no batch headers; everything rides in the reply subject::

    <inbox>.<batch id>.<flow>.fail.<batch seq>.<op>.$FI     op: 0 start, 1 add, 3 end, 4 ping

and the server answers on those subjects with::

    {"type":"ack","seq":N,"msgs":F}                     stored through N (acks at least every F)
    {"type":"gap",...} / {"type":"err",...}             the batch is being abandoned
    {"stream":S,"seq":Q,"batch":B,"count":C}            end of batch: C messages handled
    {"error":{...},"stream":S,"seq":0}                  end of batch: failed

An end-of-batch answer whose ``count`` falls short of what was sent means the server abandoned
the batch (that is the only tell), so it is a failure too.
"""

from __future__ import annotations

from typing import Any

import msgspec

START, ADD, END, PING = 0, 1, 3, 4
_decode = msgspec.json.Decoder(dict[str, Any]).decode


class FastBatch:
    """One fast-ingest batch: the sequence numbers sent, and how far the server has stored them."""

    def __init__(self, inbox: str, batch_id: str, flow: int) -> None:
        if not 0 < len(batch_id) <= 64 or not batch_id.isalnum():
            raise ValueError(f"batch id must be 1-64 letters or digits, got {batch_id!r}")
        self.id = batch_id
        self.flow = flow
        self.subject = ""
        """A subject of the stream, for the end and ping messages (the first message's subject)."""
        self._prefix = f"{inbox}.{batch_id}.{flow}.fail."
        self.sent = 0
        """Batch sequence of the last message sent (the first is 1)."""
        self.stored = 0
        """Every message through this batch sequence is stored."""
        self.ended = False
        self.closed = False
        """The batch is over: ended and answered, or abandoned (see ``failure``)."""
        self.failure: str | None = None

    @property
    def unstored(self) -> int:
        return self.sent - self.stored

    def next_reply(self, subject: str) -> str:
        """The reply subject for the next message (which goes to ``subject``)."""
        self.sent += 1
        if self.sent == 1:
            self.subject = subject
            return f"{self._prefix}1.{START}.$FI"
        return f"{self._prefix}{self.sent}.{ADD}.$FI"

    def end_reply(self) -> str:
        """Reply subject for the end-of-batch marker (not stored); answered with the batch result."""
        self.ended = True
        return f"{self._prefix}{self.sent + 1}.{END}.$FI"

    def ping_reply(self) -> str:
        """Reply subject for a ping: the server answers with its latest ack (recovers a lost one)."""
        return f"{self._prefix}{self.sent}.{PING}.$FI"

    def on_frame(self, data: bytes) -> None:
        """Apply one frame the server sent to this batch's inbox."""
        if self.closed:
            return
        try:
            frame = _decode(data)
        except msgspec.DecodeError:
            self._fail(f"unreadable reply {data[:200]!r}")
            return
        kind = frame.get("type")
        if kind == "ack":
            seq = frame.get("seq")
            if isinstance(seq, int) and seq > self.stored:
                self.stored = min(seq, self.sent)
        elif kind in ("gap", "err"):
            self._fail(f"{kind}: {_describe(frame)}")
        elif "error" in frame:
            self._fail(_describe(frame))
        elif "stream" in frame:
            count = frame.get("count")
            if count == self.sent:
                self.stored = self.sent
                self.closed = True
            else:
                self._fail(f"abandoned by the server after {count} of {self.sent} messages")
        # anything else (a future frame type) is informational: ignored

    def fail(self, reason: str) -> None:
        """Give up on this batch from our side (a timeout, a lost connection)."""
        self._fail(reason)

    def _fail(self, reason: str) -> None:
        self.failure = reason
        self.closed = True


def _describe(frame: dict[str, Any]) -> str:
    error = frame.get("error")
    if isinstance(error, dict):
        return f"{error.get('description', '?')} (code {error.get('err_code', '?')})"
    return msgspec.json.encode(frame).decode()[:200]
