"""Archive lines: verbatim embedding, lossless fallbacks, timestamp format."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from ssmd_connector.clock import TimestampFormatter, day_of
from ssmd_connector.message import LineEncoder, Message, decode_frame, is_verbatim_safe

NS = int(datetime(2026, 11, 24, 10, 30, 0, 123456, tzinfo=UTC).timestamp()) * 1_000_000_000 + 123_456_789


def line(frame: bytes, binary: bool = False, ns: int = NS) -> bytes:
    return LineEncoder().encode(Message(ns, "kalshi", frame, binary))


def test_valid_json_is_embedded_byte_for_byte() -> None:
    # Odd spacing, key order, number formats and escapes must survive untouched.
    frame = b'{"type":"ticker", "z":1.50,"a":[1e3, -0.0],"s":"\\u00e9\\/", "n":null}'
    out = line(frame)
    assert out == b'{"ts":"2026-11-24T10:30:00.123456Z","feed":"kalshi","data":' + frame + b"}\n"
    assert json.loads(out)["data"]["z"] == 1.5
    assert decode_frame(out) == frame


def test_non_json_text_is_stored_as_a_string() -> None:
    out = line(b"hello {not json")
    obj = json.loads(out)
    assert obj["enc"] == "text"
    assert obj["data"] == "hello {not json"
    assert decode_frame(out) == b"hello {not json"


def test_pretty_printed_json_does_not_break_the_line() -> None:
    frame = b'{\n  "a": 1\n}'
    out = line(frame)
    assert out.count(b"\n") == 1
    assert json.loads(out)["enc"] == "text"
    assert decode_frame(out) == frame


def test_binary_frames_are_base64() -> None:
    frame = bytes(range(256))
    out = line(frame, binary=True)
    obj = json.loads(out)
    assert obj["enc"] == "base64"
    assert base64.b64decode(obj["data"]) == frame


def test_binary_frame_with_json_content_is_still_marked_binary() -> None:
    out = line(b'{"a":1}', binary=True)
    assert json.loads(out)["enc"] == "base64"


def test_invalid_utf8_in_a_text_frame_is_base64() -> None:
    frame = b'{"a":"\xff"}'
    assert not is_verbatim_safe(frame)
    out = line(frame)
    assert json.loads(out)["enc"] == "base64"
    assert decode_frame(out) == frame


def test_timestamp_format_and_cache() -> None:
    fmt = TimestampFormatter()
    assert fmt.format(NS) == b"2026-11-24T10:30:00.123456Z"
    assert fmt.format(NS + 1_000) == b"2026-11-24T10:30:00.123457Z"
    assert fmt.format(NS + 1_000_000_000) == b"2026-11-24T10:30:01.123456Z"
    assert fmt.format(0) == b"1970-01-01T00:00:00.000000Z"
    assert day_of(NS) == "2026-11-24"


@given(st.binary(max_size=300), st.booleans())
def test_every_line_parses_and_round_trips(frame: bytes, binary: bool) -> None:
    out = line(frame, binary)
    assert out.endswith(b"\n") and out.count(b"\n") == 1
    obj = json.loads(out)  # the stdlib parser, independent of ours
    assert obj["ts"] == "2026-11-24T10:30:00.123456Z"
    assert obj["feed"] == "kalshi"
    assert decode_frame(out) == frame


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
        lambda children: st.lists(children) | st.dictionaries(st.text(), children),
        max_leaves=20,
    )
)
def test_any_json_value_is_verbatim(value: object) -> None:
    frame = msgspec.json.encode(value)
    out = line(frame)
    assert b'"enc"' not in out[: out.index(b'"data":')]
    assert decode_frame(out) == frame
