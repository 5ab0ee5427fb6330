"""Compression for archive files: each flush becomes one complete, independent member.

A zstd file is then a sequence of zstd frames, a gzip file a sequence of gzip members — both
valid streams for ``zstdcat`` / ``zcat``, DuckDB and polars. Because members are complete, a
crash can only tear the last one, and repair cuts the file back to the last member boundary.
(Read such files with a streaming reader: ``zstandard``'s one-shot ``decompress`` stops after
the first frame.)
"""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass
from typing import Protocol

import zstandard

COMPRESSIONS = ("none", "zstd", "gzip")
_SCAN_CHUNK = 1 << 20


class _Decompressor(Protocol):
    @property
    def eof(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    def decompress(self, data: bytes) -> bytes: ...


@dataclass(frozen=True)
class Codec:
    name: str
    suffix: str
    level: int

    def compress(self, data: bytes) -> bytes:
        if self.name == "zstd":
            return zstandard.ZstdCompressor(level=self.level).compress(data)
        if self.name == "gzip":
            return gzip.compress(data, compresslevel=self.level, mtime=0)
        return data

    def _decompressor(self) -> _Decompressor:
        if self.name == "zstd":
            return zstandard.ZstdDecompressor().decompressobj()
        return zlib.decompressobj(wbits=31)

    def complete_prefix(self, fd: int, size: int) -> int:
        """Length of the longest prefix of the file made of complete members whose content ends
        with a newline (whole archive lines). Streams the file; memory stays bounded."""
        if self.name == "none":
            raise ValueError("plain files are repaired line by line")
        good = 0  # end of the last complete member
        pos = 0
        dec = self._decompressor()
        last_byte = b""
        pending = b""
        while pos < size or pending:
            if not pending:
                pending = os.pread(fd, min(_SCAN_CHUNK, size - pos), pos)
                pos += len(pending)
                if not pending:
                    break
            try:
                out = dec.decompress(pending)
            except (zstandard.ZstdError, zlib.error):
                return good
            if out:
                last_byte = out[-1:]
            if dec.eof:
                rest = dec.unused_data
                end = pos - len(rest)
                if last_byte != b"\n":
                    return good
                good = end
                dec = self._decompressor()
                last_byte = b""
                pending = rest
            else:
                pending = b""
        return good


def codec(name: str, level: int | None = None) -> Codec:
    if name == "zstd":
        return Codec("zstd", ".zst", 3 if level is None else level)
    if name == "gzip":
        return Codec("gzip", ".gz", 6 if level is None else level)
    return Codec("none", "", 0)
