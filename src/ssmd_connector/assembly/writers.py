"""The writers an environment's ``storage`` (and ``nats``) block asks for — for the recorder, and
the same local archive writer for the archiver (``ssmd archive``), in its durable mode."""

from __future__ import annotations

from ..archive.layout import SPILL_DIR
from ..archive.line import ArchivedLines
from ..config import Environment, Storage
from ..interfaces import Writer
from ..writers.jsonl import JsonlWriter, StorageLost


def archive_writer(
    storage: Storage, *, on_storage_lost: StorageLost | None = None, durable: bool = False
) -> JsonlWriter:
    """The local archive under ``storage``. ``durable`` — the archiver's mode — fsyncs every flush,
    seals only once the caller has checkpointed, and writes back lines it was given as they are."""
    return JsonlWriter(
        storage.path,
        compression=storage.compression,
        level=storage.compression_level,
        rotation=storage.rotation_seconds,
        on_storage_lost=on_storage_lost,
        durable=durable,
        encoder=ArchivedLines() if durable else None,
    )


def build_writers(env: Environment, on_storage_lost: StorageLost | None = None) -> list[Writer]:
    """The local archive, plus a JetStream publisher when the environment has a ``nats`` block."""
    storage = env.storage
    if storage.type != "local":
        raise ValueError(f"unknown storage type {storage.type!r}")  # config validation prevents this
    writers: list[Writer] = [archive_writer(storage, on_storage_lost=on_storage_lost)]
    if env.nats is not None:
        from ..writers.nats import NatsWriter  # noqa: PLC0415 - only environments that publish need it

        n = env.nats
        writers.append(
            NatsWriter(
                n.url,
                n.stream,
                n.subject_prefix,
                create_stream=n.create_stream,
                max_pending=n.max_pending,
                publish=n.publish,
                max_backlog_bytes=n.max_backlog_mb << 20,
                spill_dir=storage.path / SPILL_DIR,
                max_spill_bytes=n.spill_mb << 20,
            )
        )
    return writers
