"""The archive: the on-disk format, the product's contract with its readers, defined in one place.

* :mod:`.layout` — where files are and what they are called (day files, segments and their
  parts, the manifest, the ledger, side files);
* :mod:`.line` — the archive line: how a frame becomes one (verbatim, or with ``enc``) and how it
  is read back, by one rule (:func:`.line.is_verbatim_json` / :func:`.line.parse_line`);
* :mod:`.compression` — zstd and gzip members, one implementation for writers and readers;
* :mod:`.repair` — torn tails cut off and kept aside at start;
* :mod:`.segments` — sealing segments, and the day manifest;
* :mod:`.ledger` — the coverage ledger's file format;
* :mod:`.reading` — reading an archive back, streaming, reporting what cannot be read.

Writers (:mod:`ssmd_connector.writers`) keep the buffering and the I/O; readers and tools import
the format from here only.
"""

from __future__ import annotations

from .layout import SUFFIXES, compression_of
from .line import decode_frame, frame_of, parse_line
from .reading import Problem, Reader, archive_files, read_lines

__all__ = [
    "SUFFIXES",
    "Problem",
    "Reader",
    "archive_files",
    "compression_of",
    "decode_frame",
    "frame_of",
    "parse_line",
    "read_lines",
]
