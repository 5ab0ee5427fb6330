"""Archive lines: verbatim embedding, lossless fallbacks, timestamp format."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from ssmd_connector.archive.line import LineEncoder, decode_frame, is_verbatim_json
from ssmd_connector.clock import TimestampFormatter, day_of
from ssmd_connector.message import Message

NS = int(datetime(2026, 11, 24, 10, 30, 0, 123456, tzinfo=UTC).timestamp()) * 1_000_000_000 + 123_456_789


def _parses(frame: bytes) -> bool:
    try:
        msgspec.json.decode(frame)
    except msgspec.DecodeError:
        return False
    return True


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
    assert not is_verbatim_json(frame)
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


@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.sampled_from(["kalshi", "other"]), st.binary(max_size=40), st.booleans()),
        max_size=30,
    )
)
def test_batch_encoding_equals_line_by_line(rows: list[tuple[int, str, bytes, bool]]) -> None:
    """The fast batch path (shared heads, one join per read) produces exactly the per-line bytes."""
    msgs = []
    for stamp, feed, frame, binary in rows:
        # Flag frames JSON-valid the way the Kalshi connector would: only when they parse.
        json_valid = not binary and _parses(frame)
        msgs.append(Message(NS + stamp * 1000, feed, frame, binary, json_valid))
    enc = LineEncoder()
    data, stop = enc.encode_batch(msgs)
    assert stop == len(msgs)
    assert data == b"".join(LineEncoder().encode(m) for m in msgs)


def test_batch_encoding_stops_at_day_bound_and_feed_change() -> None:
    enc = LineEncoder()
    day_end = NS - NS % (86_400 * 10**9) + 86_400 * 10**9
    msgs = [
        Message(NS, "kalshi", b"1", json_valid=True),
        Message(NS, "kalshi", b"2", json_valid=True),
        Message(day_end, "kalshi", b"3", json_valid=True),
    ]
    data, stop = enc.encode_batch(msgs, 0, NS - 1, day_end, "kalshi")
    assert stop == 2 and data.count(b"\n") == 2
    data, stop = enc.encode_batch([msgs[0], Message(NS, "other", b"4")], 0, 0, -1, "kalshi")
    assert stop == 1 and data.endswith(b'"data":1}\n')


def _json_texts() -> st.SearchStrategy[bytes]:
    """Frames a feed could send, weighted towards the edges of the verbatim rule: huge numbers,
    deep nesting around the limit, odd escapes and code points, almost-JSON."""
    from ssmd_connector.archive.line import MAX_JSON_DEPTH  # noqa: PLC0415

    scalars = st.one_of(
        st.integers(1, 6000).map(lambda n: b"9" * n),  # beyond what msgspec builds past ~4,300 digits
        st.sampled_from([b"1e400", b"-1e999", b"1e-999", b"-0.0", b"0", b"1.5E+3", b"true", b"null"]),
        st.text(max_size=20).map(lambda t: json.dumps(t, ensure_ascii=False).encode()),
        st.sampled_from([b'"\\ud83d\\ude00"', b'"\\u0000"', b'"\\ud800"', b'"\\/"', b'"\x7f"']),
    )

    def nest(inner: bytes, depth: int, kind: int) -> bytes:
        return (b"[" * depth + inner + b"]" * depth) if kind else (b'{"k":' * depth + inner + b"}" * depth)

    nested = st.builds(nest, scalars, st.integers(0, MAX_JSON_DEPTH + 3), st.integers(0, 1))
    objects = st.lists(scalars, max_size=4).map(lambda xs: b'{"type":"t","xs":[' + b",".join(xs) + b"]}")
    almost = st.builds(lambda b, cut: b[:cut], objects, st.integers(0, 40))
    return st.one_of(nested, objects, almost, st.binary(max_size=60))


@given(_json_texts(), st.booleans())
def test_a_line_written_is_always_read_back(frame: bytes, binary: bool) -> None:
    """The writer's rule and the readers' are one: every line parses, and returns its frame."""
    from ssmd_connector.archive.line import parse_line  # noqa: PLC0415

    out = line(frame, binary)
    assert parse_line(out.rstrip(b"\n")) is not None
    assert decode_frame(out) == frame
    assert (b'"enc"' not in out[:60]) == (not binary and is_verbatim_json(frame))
