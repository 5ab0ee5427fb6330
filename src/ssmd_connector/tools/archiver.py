"""``ssmd archive --env NAME --config-dir DIR``: JetStream → sealed segments, exactly once.

A pull consumer (``archiver-<feed>``, started afresh right after the checkpoint) on
``<subject_prefix>.<feed>.>`` takes the frames the recorder published and writes them through
the same writer as the recorder (segments, compression, manifest) under the environment's
``storage``. Per batch: write, fsync, checkpoint (the last stream sequence and the open files'
sizes, atomically), seal finished segments, then acknowledge. After a crash, open files are cut
back to the checkpoint and delivery resumes right after its sequence, so every frame lands once
even though JetStream delivers at least once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
from pathlib import Path

from nats.errors import Error as NatsError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from ..archive.layout import checkpoint_path
from ..archive.line import json_object, ts_ns
from ..archive.segments import atomic_write
from ..assembly.recorder import make_uploader
from ..assembly.writers import archive_writer
from ..config import load
from ..errors import ConfigError, SsmdError
from ..keys import resolve_all
from ..message import Message
from ..natsconn import NatsConnection
from .jetstream_pull import Puller, stream_sequence

log = logging.getLogger(__name__)


_HEAD = b'{"ts":"'


def archived_message(line: bytes, subject: str, feed: str, kind_at: int) -> Message | None:
    """The message to archive for a line taken from the stream — ``frame`` is the line itself
    (written back byte for byte, see :class:`ArchivedLines`) — or ``None`` if it is not an archive
    line. No JSON parse: the receive time sits at a fixed place (``LineEncoder`` writes it first)
    and the message type is token ``kind_at`` of the subject (``_`` for none)."""
    if not (line.startswith(_HEAD) and line.endswith(b"}")) or b"\n" in line:
        return None
    end = line.find(b'"', len(_HEAD))
    try:
        ns = ts_ns(line[len(_HEAD) : end].decode("ascii"))
    except ValueError:
        return None
    tokens = subject.split(".")
    kind = tokens[kind_at] if len(tokens) > kind_at else "_"
    return Message(ns, feed, line, json_valid=True, kind="" if kind == "_" else kind)


class Checkpoint:
    def __init__(self, path: Path) -> None:
        self.path = path
        data = json_object(path.read_bytes()) if path.exists() else {}
        try:
            self.stream_seq: int = int((data or {})["stream_seq"] if path.exists() else 0)
            self.sizes: dict[Path, int] = {Path(p): int(n) for p, n in (data or {}).get("sizes", {}).items()}
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            raise SsmdError(
                f"{path}: the archiver's checkpoint is not readable ({exc}); it is written atomically, so it was "
                "changed by hand: restore it, or remove it to archive the stream again from its start"
            ) from None

    def save(self, stream_seq: int, sizes: dict[Path, int]) -> None:
        self.stream_seq = stream_seq
        body = {"stream_seq": stream_seq, "sizes": {str(p): n for p, n in sizes.items()}}
        atomic_write(self.path, json.dumps(body).encode())


async def archive(config_dir: Path, env_name: str, stop: asyncio.Event, batch: int = 4096) -> int:
    cfg = load(config_dir, env_name)
    env, feed = cfg.environment, cfg.feed.name
    if env.nats is None:
        raise ConfigError([f"environments/{env_name}.yaml: nats: the archiver needs a nats block"])
    storage = env.storage
    writer = archive_writer(storage, durable=True)
    storage.path.mkdir(parents=True, exist_ok=True)
    ckpt = Checkpoint(checkpoint_path(storage.path, feed))
    await asyncio.to_thread(writer.truncate_to, ckpt.sizes, feed)
    conn = NatsConnection(env.nats.url)
    nc = await conn.wait(stop)
    if nc is None:
        await conn.close()
        print(f"stopped before NATS {env.nats.url} was reachable ({conn.status})", file=sys.stderr)
        return 0
    js = nc.jetstream()
    try:
        await js.stream_info(env.nats.stream)
    except NotFoundError:
        await conn.close()
        raise ConfigError(
            [
                f"environments/{env_name}.yaml: nats.stream: no stream {env.nats.stream!r} on {env.nats.url} "
                "(the recorder creates it with nats.create_stream: true)"
            ]
        ) from None
    # The checkpoint, not the consumer, is the source of truth: start a fresh consumer right after
    # it, so delivery is in stream order (redeliveries of a killed run would otherwise come after
    # newer messages, once their ack wait expired).
    durable = f"archiver-{feed}"
    with contextlib.suppress(NotFoundError):
        await js.delete_consumer(env.nats.stream, durable)
    start = ckpt.stream_seq + 1
    config = ConsumerConfig(
        durable_name=durable,
        filter_subject=f"{env.nats.subject_prefix}.{feed}.>",
        ack_policy=AckPolicy.ALL,
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE if start > 1 else DeliverPolicy.ALL,
        opt_start_seq=start if start > 1 else None,
        ack_wait=300.0,
        max_ack_pending=100_000,
    )
    await js.add_consumer(env.nats.stream, config)
    puller = Puller(nc, env.nats.stream, durable, batch)
    await puller.start()
    kind_at = env.nats.subject_prefix.count(".") + 2  # <prefix>.<feed>.<type>.<ticker>
    last = ckpt.stream_seq
    archived = rejected = 0
    uploader = make_uploader(env, resolve_all([(k.name, k.source) for k in env.keys]))
    upload_stop = asyncio.Event()
    uploads = asyncio.create_task(uploader.run(upload_stop)) if uploader is not None else None
    log.info("archiving %s from stream %s after sequence %d into %s", feed, env.nats.stream, last, storage.path)
    while not stop.is_set():
        msgs = await puller.take(timeout=1.0)
        fresh = []
        for m in msgs:
            seq = stream_sequence(m.reply)
            if seq <= last:
                continue  # archived before a crash, delivered again: skip (exactly once)
            last = seq
            message = archived_message(m.data, m.subject, feed, kind_at)
            if message is None:
                rejected += 1
                log.warning("stream sequence %d on %s is not an archive line: not archived", seq, m.subject)
                continue
            fresh.append(message)
        if fresh:
            await writer.write(fresh)
        await writer.flush()  # written and fsynced
        if last != ckpt.stream_seq:
            await asyncio.to_thread(ckpt.save, last, dict(writer.sizes))
        await writer.seal_ready()
        if msgs:
            try:  # AckPolicy.ALL: everything up to here. (Only advisory: the checkpoint decides.)
                await nc.publish(msgs[-1].reply, b"+ACK")
            except (NatsError, OSError) as exc:
                log.info("ack not sent (%s): the next run starts from the checkpoint anyway", exc)
            archived += len(fresh)
    await writer.flush()
    await asyncio.to_thread(ckpt.save, last, dict(writer.sizes))
    await writer.close()
    await asyncio.to_thread(ckpt.save, last, {})
    upload_stop.set()
    if uploads is not None:
        await uploads
    with contextlib.suppress(Exception):
        await asyncio.wait_for(puller.stop(), 5)
        await asyncio.wait_for(conn.close(), 10)
    skipped = f" ({rejected} message(s) that were not archive lines skipped)" if rejected else ""
    print(f"archived {archived} frame(s) this run; up to stream sequence {last}{skipped}", file=sys.stderr)
    return 0


async def run_archive(config_dir: Path, env_name: str) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return await archive(config_dir, env_name, stop)
