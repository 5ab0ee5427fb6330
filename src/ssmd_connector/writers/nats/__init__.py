"""NATS JetStream writer: the scale-out path.

Each frame is published as its archive line (the exact bytes the file writer writes, without the
newline — so ``ts``, ``feed`` and the verbatim frame travel in the body) to
``<subject_prefix>.<feed>.<message type>.<market ticker>`` (:mod:`.subjects`). Every publish is
acknowledged by JetStream and carries ``Nats-Msg-Id: <feed>.<run>.<n>`` — stable for the frame, so
a publish retried after a timeout or a NATS restart is stored once (JetStream's duplicate window).

The package reads in the order a frame travels:

- :mod:`.writer` — :class:`NatsWriter`, what the runner drives: accepts batches, publishes, flushes;
- :mod:`.backlog` — frames accepted and not yet stored by JetStream: in memory up to a bound, then
  on disk (:mod:`.spill`); past the last bound the runner is told to stop feeding us;
- :mod:`.stream` — the connection (made in the background) and the stream, checked or created once;
- :mod:`.acks` — the two acknowledgement protocols, per-message PubAcks and fast-ingest batches
  (:mod:`.fast_batch`, sans I/O), behind one interface;
- :mod:`.wire` — publishes handed to nats-py a block at a time.

Nothing is dropped and nothing grows without bound: unacknowledged frames are kept and re-published
with the same ids, and a failure raises ``WriteFailed`` so the runner retries.
"""

from .subjects import subject_token, ticker_of
from .writer import NatsWriter, PublishMode

__all__ = ["NatsWriter", "PublishMode", "subject_token", "ticker_of"]
