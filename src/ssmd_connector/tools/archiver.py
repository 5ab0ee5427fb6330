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
import fcntl
import functools
import json
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

from nats.errors import Error as NatsError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from ..archive.layout import checkpoint_path
from ..archive.line import json_object, ts_ns
from ..archive.segments import atomic_write
from ..assembly.recorder import make_uploader
from ..assembly.writers import archive_writer
from ..config import Environment, load
from ..errors import ConfigError, SsmdError, WriteFailed
from ..keys import resolve_all
from ..message import Message
from ..metrics import ArchiverStats, archiver_registry
from ..natsconn import NatsConnection
from ..server import HealthServer
from ..uploader import Uploader
from ..writers.jsonl import JsonlWriter
from .jetstream_pull import Puller, stream_sequence

log = logging.getLogger(__name__)

LAG_EVERY = 2.0
"""Seconds between measurements of the consumer lag (one JetStream API request each)."""
_RETRY_FIRST, _RETRY_MAX = 0.5, 10.0
"""Backoff between attempts while archive writes fail."""


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


class AlreadyRunning(SsmdError):
    """Another ``ssmd archive`` holds the lock of this storage path and feed."""


def single_instance(root: Path, feed: str) -> IO[bytes] | None:
    """An exclusive lock on ``<storage>/.archiver-<feed>.lock``, held while the process lives (the
    kernel drops it when the process ends, however it ends): two archivers of one feed in one
    storage path would write the same segments and checkpoint. ``None`` if the lock file cannot be
    created (the storage is failing: the write retries report it)."""
    path = root / f".archiver-{feed}.lock"
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = path.open("ab")
    except OSError:
        return None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise AlreadyRunning(
            f"another ssmd archive is running for feed {feed!r} in {root} (it holds {path.name}): one archiver "
            "per feed and storage path"
        ) from None
    return lock


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


class ArchiverHealth:
    """The archiver's :class:`~ssmd_connector.server.HealthSource`: healthy while its loop turns
    (it turns at least once a second, idle or not, unless a write blocks); ready while NATS is
    connected, the stream was found and writes work."""

    def __init__(self, stats: ArchiverStats, *, stall_after: float = 30.0) -> None:
        self.stats = stats
        self.stall_after = stall_after
        self.last_cycle = time.monotonic()
        self.conn: NatsConnection | None = None
        self.writer: JsonlWriter | None = None
        self.consuming = False
        self.waiting = ""
        """Why the archiver is not consuming yet (e.g. the stream does not exist yet), for ``/ready``."""
        self.stopped = ""
        """Why the loop ended (the process is about to exit), for ``/health``."""

    def health(self) -> tuple[str | None, dict[str, Any]]:
        s = self.stats
        idle = time.monotonic() - self.last_cycle
        problem = None
        if self.stopped:
            problem = self.stopped
        elif self.consuming and idle > self.stall_after and not s.writes_failing:
            problem = f"the archiving loop has not turned for {idle:.0f}s"
        body: dict[str, Any] = {
            "feed": s.feed,
            "frames": s.frames,
            "checkpoint_sequence": s.checkpoint_seq,
            "lag_messages": s.lag_messages if s.lag_known else None,
            "nats": self.conn.status if self.conn is not None else "not started",
        }
        return problem, body

    def not_ready_reasons(self) -> list[str]:
        reasons = []
        if self.conn is None or not self.stats.nats_connected:
            status = self.conn.status if self.conn is not None else "not started"
            url = self.conn.url if self.conn is not None else "NATS"
            reasons.append(f"NATS {url}: {status}")
        elif not self.consuming:
            reasons.append(self.waiting or "starting: checking the stream and creating the consumer")
        if self.stats.writes_failing:
            reasons.append(
                f"writes failing (retrying; nothing is acknowledged until stored): {self.stats.writes_failing}"
            )
        return reasons

    def ready_body(self) -> dict[str, Any]:
        return {"feed": self.stats.feed}

    def before_scrape(self) -> None:
        nc = self.conn.client() if self.conn is not None else None
        self.stats.nats_connected = nc is not None and nc.is_connected
        if self.writer is not None:
            self.stats.segments_sealed = len(self.writer.sealed)


class _Persist:
    """Retries what must reach the disk — the batch, the checkpoint, the seals — until it does,
    so a full disk is an outage the archiver rides out (and reports once), not an exit that
    leaves the stream unarchived until someone restarts it. Retrying is exact: the writer keeps
    whatever it has not written and resumes where it stopped; nothing is acknowledged meanwhile."""

    def __init__(self, stats: ArchiverStats, stop: asyncio.Event) -> None:
        self.stats = stats
        self.stop = stop
        self.delay = _RETRY_FIRST

    def failed(self, exc: Exception) -> None:
        text = (
            str(exc)
            if isinstance(exc, WriteFailed)
            else f"{exc.strerror or exc}"
            if isinstance(exc, OSError)
            else str(exc)
        )
        if not self.stats.writes_failing:
            self.stats.write_errors += 1
            log.error("archive writes failing (retrying; nothing is acknowledged until stored): %s", text)
        self.stats.writes_failing = text

    async def __call__(self, op: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await op()
            except (WriteFailed, OSError) as exc:
                self.failed(exc)
                if self.stop.is_set():
                    raise SsmdError(
                        f"stopped while archive writes fail ({self.stats.writes_failing}): what was not stored "
                        "was not acknowledged either; the next run resumes from the checkpoint"
                    ) from None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), self.delay)
                self.delay = min(self.delay * 2, _RETRY_MAX)
                continue
            if self.stats.writes_failing:
                log.info("archive writes work again")
                self.stats.writes_failing = ""
            self.delay = _RETRY_FIRST
            return


async def _measure_lag(js: JetStreamContext, stream: str, durable: str, stats: ArchiverStats) -> None:
    """The feed's messages in the stream not archived yet: the consumer's pending (not delivered)
    plus its unacknowledged (delivered, not yet stored and checkpointed). A failed look-up keeps
    the previous value (the NATS state is reported on its own)."""
    try:
        info = await js.consumer_info(stream, durable, timeout=1.0)
    except (NatsError, OSError, TimeoutError):
        return
    stats.lag_messages = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
    stats.lag_known = True


async def _lag_loop(
    js: JetStreamContext, stream: str, durable: str, stats: ArchiverStats, stop: asyncio.Event, every: float
) -> None:
    """The lag, on its own timer: measured between batches it froze while a batch was retried
    (a write outage), just when it matters."""
    while not stop.is_set():
        await _measure_lag(js, stream, durable, stats)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


async def _wait_for_stream(
    js: JetStreamContext, env_name: str, stream: str, url: str, health: ArchiverHealth, stop: asyncio.Event
) -> bool:
    """Wait (with backoff, ``/ready`` saying why) until the stream exists: at boot the archiver
    may well start before the recorder has created it — a transient state, not a configuration
    error to exit on (systemd would not restart an exit 2). False if stopped first."""
    delay = _RETRY_FIRST
    while True:
        try:
            await asyncio.wait_for(js.stream_info(stream), 5.0)
        except NotFoundError:
            why = (
                f"no stream {stream!r} on {url} yet (environments/{env_name}.yaml: nats.stream; "
                "the recorder creates it with nats.create_stream: true): waiting for it"
            )
        except (NatsError, OSError, TimeoutError) as exc:
            why = f"stream {stream!r} on {url} could not be looked up ({exc or type(exc).__name__}): retrying"
        else:
            if health.waiting:
                log.info("stream %r found: starting", stream)
            health.waiting = ""
            return True
        if why != health.waiting:
            log.warning("%s", why)
        health.waiting = why
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        if stop.is_set():
            return False
        delay = min(delay * 2, _RETRY_MAX)


async def archive(
    config_dir: Path,
    env_name: str,
    stop: asyncio.Event,
    batch: int = 4096,
    *,
    health_addr: tuple[str, int] | None = None,
    lag_every: float = LAG_EVERY,
) -> int:
    """Archive until ``stop``; with ``health_addr``, serve ``/health``, ``/ready`` and ``/metrics``
    there from the start (while NATS is still unreachable too: that is what ``/ready`` is for)."""
    cfg = load(config_dir, env_name)
    env, feed = cfg.environment, cfg.feed.name
    if env.nats is None:
        raise ConfigError([f"environments/{env_name}.yaml: nats: the archiver needs a nats block"])
    storage = env.storage
    lock = single_instance(storage.path, feed)
    writer = archive_writer(storage, durable=True)
    uploader = make_uploader(env, resolve_all([(k.name, k.source) for k in env.keys]))
    stats = ArchiverStats(feed, started_ns=time.time_ns())
    health = ArchiverHealth(stats)
    health.writer = writer
    server = None
    if health_addr is not None:
        server = HealthServer(health, archiver_registry(stats, uploader.stats if uploader is not None else None))
        await server.start(*health_addr)
        log.info("health server on http://%s:%d (/health, /ready, /metrics)", health_addr[0], server.port)
    try:
        return await _archive(env_name, env, feed, writer, uploader, stats, health, stop, batch, lag_every)
    finally:
        if server is not None:
            await server.stop()
        if lock is not None:
            lock.close()


async def _archive(
    env_name: str,
    env: Environment,
    feed: str,
    writer: JsonlWriter,
    uploader: Uploader | None,
    stats: ArchiverStats,
    health: ArchiverHealth,
    stop: asyncio.Event,
    batch: int,
    lag_every: float,
) -> int:
    assert env.nats is not None
    storage = env.storage
    persist = _Persist(stats, stop)
    await persist(lambda: asyncio.to_thread(storage.path.mkdir, parents=True, exist_ok=True))
    ckpt = Checkpoint(checkpoint_path(storage.path, feed))
    stats.checkpoint_seq = ckpt.stream_seq
    await asyncio.to_thread(writer.truncate_to, ckpt.sizes, feed)
    conn = health.conn = NatsConnection(env.nats.url)
    nc = await conn.wait(stop)
    if nc is None:
        await conn.close()
        print(f"stopped before NATS {env.nats.url} was reachable ({conn.status})", file=sys.stderr)
        return 0
    stats.nats_connected = nc.is_connected
    js = nc.jetstream()
    if not await _wait_for_stream(js, env_name, env.nats.stream, env.nats.url, health, stop):
        await conn.close()
        print(f"stopped before stream {env.nats.stream!r} existed on {env.nats.url}", file=sys.stderr)
        return 0
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
    upload_stop = asyncio.Event()
    uploads = asyncio.create_task(uploader.run(upload_stop)) if uploader is not None else None
    log.info("archiving %s from stream %s after sequence %d into %s", feed, env.nats.stream, last, storage.path)
    health.consuming = True
    lag = asyncio.create_task(_lag_loop(js, env.nats.stream, durable, stats, stop, lag_every))
    try:
        while not stop.is_set():
            health.last_cycle = time.monotonic()
            stats.nats_connected = nc.is_connected
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
                    stats.skipped += 1
                    log.warning("stream sequence %d on %s is not an archive line: not archived", seq, m.subject)
                    continue
                fresh.append(message)
            if fresh:
                try:
                    await writer.write(fresh)
                except WriteFailed as exc:  # (buffered before its flush failed: the flush below retries)
                    persist.failed(exc)
            await persist(writer.flush)  # written and fsynced
            if last != ckpt.stream_seq:
                await persist(functools.partial(asyncio.to_thread, ckpt.save, last, dict(writer.sizes)))
            await persist(writer.seal_ready)
            stats.checkpoint_seq = last
            if fresh:
                stats.frames += len(fresh)
                stats.last_frame_ns = fresh[-1].received_ns
            stats.segments_sealed = len(writer.sealed)
            if msgs:
                try:  # AckPolicy.ALL: everything up to here. (Only advisory: the checkpoint decides.)
                    await nc.publish(msgs[-1].reply, b"+ACK")
                except (NatsError, OSError) as exc:
                    log.info("ack not sent (%s): the next run starts from the checkpoint anyway", exc)
                archived += len(fresh)
    except SsmdError as exc:
        health.stopped = str(exc)
        raise
    finally:
        lag.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lag
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


async def run_archive(config_dir: Path, env_name: str, health_addr: tuple[str, int] | None = None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return await archive(config_dir, env_name, stop, health_addr=health_addr)
