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
from typing import Any

import msgspec
import nats
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from ..app import make_uploader
from ..config import load
from ..errors import ConfigError
from ..keys import resolve_all
from ..message import Message, decode_frame
from ..writers.jsonl import JsonlWriter
from ..writers.segments import atomic_write, ts_ns

log = logging.getLogger(__name__)


def to_message(line: bytes, feed: str) -> Message:
    """An archive line back into the message that produced it (re-encoding gives the same line)."""
    obj = msgspec.json.decode(line)
    enc = obj.get("enc")
    data = obj.get("data")
    kind = data.get("type", "") if enc is None and isinstance(data, dict) else ""
    return Message(
        ts_ns(obj["ts"]),
        obj.get("feed", feed),
        decode_frame(line),
        enc == "base64",
        enc is None,
        kind if isinstance(kind, str) else "",
    )


class Checkpoint:
    def __init__(self, path: Path) -> None:
        self.path = path
        data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        self.stream_seq: int = int(data.get("stream_seq", 0))
        self.sizes: dict[Path, int] = {Path(p): int(n) for p, n in data.get("sizes", {}).items()}

    def save(self, stream_seq: int, sizes: dict[Path, int]) -> None:
        self.stream_seq = stream_seq
        body = {"stream_seq": stream_seq, "sizes": {str(p): n for p, n in sizes.items()}}
        atomic_write(self.path, json.dumps(body).encode())


async def archive(config_dir: Path, env_name: str, stop: asyncio.Event, batch: int = 2000) -> int:
    cfg = load(config_dir, env_name)
    env, feed = cfg.environment, cfg.feed.name
    if env.nats is None:
        raise ConfigError([f"environments/{env_name}.yaml: nats: the archiver needs a nats block"])
    storage = env.storage
    writer = JsonlWriter(
        storage.path,
        compression=storage.compression,
        level=storage.compression_level,
        rotation=storage.rotation_seconds,
        durable=True,
    )
    storage.path.mkdir(parents=True, exist_ok=True)
    ckpt = Checkpoint(storage.path / f".archiver-{feed}.json")
    await asyncio.to_thread(writer.truncate_to, ckpt.sizes, feed)
    nc = await nats.connect(env.nats.url, max_reconnect_attempts=-1, reconnect_time_wait=0.5)
    js = nc.jetstream()
    # The checkpoint, not the consumer, is the source of truth: start a fresh consumer right after
    # it, so delivery is in stream order (redeliveries of a killed run would otherwise come after
    # newer messages, once their ack wait expired).
    durable = f"archiver-{feed}"
    with contextlib.suppress(NotFoundError):
        await js.delete_consumer(env.nats.stream, durable)
    start = ckpt.stream_seq + 1
    config = ConsumerConfig(
        ack_policy=AckPolicy.ALL,
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE if start > 1 else DeliverPolicy.ALL,
        opt_start_seq=start if start > 1 else None,
        ack_wait=300.0,
        max_ack_pending=100_000,
    )
    sub = await js.pull_subscribe(
        f"{env.nats.subject_prefix}.{feed}.>", durable=durable, stream=env.nats.stream, config=config
    )
    last = ckpt.stream_seq
    archived = 0
    uploader = make_uploader(env, resolve_all([(k.name, k.source) for k in env.keys]))
    upload_stop = asyncio.Event()
    uploads = asyncio.create_task(uploader.run(upload_stop)) if uploader is not None else None
    log.info("archiving %s from stream %s after sequence %d into %s", feed, env.nats.stream, last, storage.path)
    while not stop.is_set():
        try:
            msgs = await sub.fetch(batch, timeout=1.0)
        except NatsTimeout:
            msgs = []
        fresh = []
        for m in msgs:
            seq = m.metadata.sequence.stream
            if seq <= last:
                continue  # archived before a crash, delivered again: skip (exactly once)
            fresh.append(to_message(m.data, feed))
            last = seq
        if fresh:
            await writer.write(fresh)
        await writer.flush()  # written and fsynced
        if last != ckpt.stream_seq:
            await asyncio.to_thread(ckpt.save, last, dict(writer.sizes))
        await writer.seal_ready()
        if msgs:
            await msgs[-1].ack()  # AckPolicy.ALL: everything up to here
            archived += len(fresh)
    await writer.flush()
    await asyncio.to_thread(ckpt.save, last, dict(writer.sizes))
    await writer.close()
    await asyncio.to_thread(ckpt.save, last, {})
    upload_stop.set()
    if uploads is not None:
        await uploads
    with contextlib.suppress(Exception):  # (a pull subscription's drain can wait forever)
        await asyncio.wait_for(sub.unsubscribe(), 5)
    await nc.close()
    print(f"archived {archived} frame(s) this run; up to stream sequence {last}", file=sys.stderr)
    return 0


async def run_archive(config_dir: Path, env_name: str) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return await archive(config_dir, env_name, stop)
