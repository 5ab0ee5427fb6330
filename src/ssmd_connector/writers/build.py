"""Building the writers an environment's ``storage`` block asks for."""

from __future__ import annotations

from ..config import Environment
from ..interfaces import Writer
from .jsonl import JsonlWriter


def build_writers(env: Environment) -> list[Writer]:
    storage = env.storage
    if storage.type == "local":
        return [
            JsonlWriter(
                storage.path,
                compression=storage.compression,
                level=storage.compression_level,
                rotation=storage.rotation_seconds,
            )
        ]
    raise ValueError(f"unknown storage type {storage.type!r}")  # config validation prevents this
