"""Compression of archive files, for writers and readers alike: each flush one complete member.

A zstd file is then a sequence of zstd frames, a gzip file a sequence of gzip members — both
valid streams for ``zstdcat`` / ``zcat``, DuckDB and polars. Because members are complete, a
crash can only tear the last one, and repair cuts the file back to the last member boundary.
(Read such files with a streaming reader: ``zstandard``'s one-shot ``decompress`` stops after
the first frame.)
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol

import zstandard

COMPRESSIONS = ("none", "zstd", "gzip")
_SCAN_CHUNK = 1 << 20


class _Decompressor(Protocol):
    @property
    def eof(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    def decompress(self, data: bytes) -> bytes: ...


class CorruptMember(ValueError):
    """A compressed member is corrupt or cut short; ``offset`` is where that member starts."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"compressed data at byte {offset}: {reason}")
        self.offset = offset


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

    def stream(self, f: BinaryIO, chunk: int = _SCAN_CHUNK) -> Iterator[bytes]:
        """The decompressed content of every member of ``f``, in order, in bounded memory.

        Raises :class:`CorruptMember` at a corrupt member and at a last member cut short:
        ``zstandard``'s stream reader returns a truncated last frame's data silently (as if the
        file ended there), which would let a damaged segment pass for a complete one.
        """
        if self.name == "none":
            yield from iter(lambda: f.read(chunk), b"")
            return
        dec = self._decompressor()
        member_start = pos = 0
        fed = False  # the current decompressor has seen input
        while data := f.read(chunk):
            pos += len(data)
            while data:
                try:
                    out = dec.decompress(data)
                except (zstandard.ZstdError, zlib.error) as exc:
                    raise CorruptMember(member_start, str(exc)) from None
                fed = True
                if out:
                    yield out
                if not dec.eof:
                    break
                data = dec.unused_data
                member_start = pos - len(data)
                dec, fed = self._decompressor(), False
        if fed:
            raise CorruptMember(member_start, "the last member is cut short (the file is truncated)")

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


def decompress(raw: bytes, compression: str) -> bytes:
    """Every member of a (possibly multi-member) compressed file held in memory; raises
    :class:`CorruptMember` at a corrupt or truncated member (unlike ``zstandard``'s stream reader)."""
    return b"".join(codec(compression).stream(io.BytesIO(raw)))
