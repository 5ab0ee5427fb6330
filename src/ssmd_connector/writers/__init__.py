"""Destinations for messages. Built from the environment's ``storage`` block."""

from __future__ import annotations

from ..config import Environment
from ..interfaces import Writer
from .jsonl import JsonlWriter


def build_writers(env: Environment) -> list[Writer]:
    storage = env.storage
    if storage.type == "local":
        return [JsonlWriter(storage.path, compression=storage.compression, level=storage.compression_level)]
    raise ValueError(f"unknown storage type {storage.type!r}")  # config validation prevents this


__all__ = ["JsonlWriter", "build_writers"]
