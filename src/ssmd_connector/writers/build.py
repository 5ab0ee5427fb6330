"""Building the writers an environment's ``storage`` block asks for."""

from __future__ import annotations

from ..archive.layout import SPILL_DIR
from ..config import Environment
from ..interfaces import Writer
from .jsonl import JsonlWriter, StorageLost


def build_writers(env: Environment, on_storage_lost: StorageLost | None = None) -> list[Writer]:
    """The local archive, plus a JetStream publisher when the environment has a ``nats`` block."""
    storage = env.storage
    if storage.type != "local":
        raise ValueError(f"unknown storage type {storage.type!r}")  # config validation prevents this
    writers: list[Writer] = [
        JsonlWriter(
            storage.path,
            compression=storage.compression,
            level=storage.compression_level,
            rotation=storage.rotation_seconds,
            on_storage_lost=on_storage_lost,
        )
    ]
    if env.nats is not None:
        from .nats import NatsWriter  # noqa: PLC0415 - only environments that publish need it

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
