"""The replay's archive reader: a block of lines decoded at once, and when a block holds a line
that is not an archive line, every good line around it still served and the bad one reported
with its file and line number."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from ssmd_connector.archive.compression import codec
from ssmd_connector.replay.source import messages

from ..archives import T0_NS, ts


def _line(ms: int, seq: int, *, stamp: str | None = None) -> bytes:
    frame = {"type": "trade", "sid": 3, "seq": seq, "msg": {"market_ticker": "M", "trade_id": str(seq)}}
    when = stamp if stamp is not None else ts(T0_NS + ms * 1_000_000)
    return b'{"ts":"' + when.encode() + b'","feed":"kalshi","data":' + msgspec.json.encode(frame) + b"}\n"


@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_bad_lines_are_reported_by_line_number_and_the_rest_served_in_order(
    tmp_path: Path, compression: str, capsys: pytest.CaptureFixture[str]
) -> None:
    day = tmp_path / ts(T0_NS)[:10]
    day.mkdir()
    deep = b'{"ts":"' + ts(T0_NS).encode() + b'","data":{"type":"trade","msg":' + b"[" * 5000 + b"]" * 5000 + b"}}\n"
    encoded = b'{"ts":"' + ts(T0_NS).encode() + b'","feed":"kalshi","enc":"text","data":"not json"}\n'
    body = b"".join(
        [
            _line(1, 1),  # line 1
            b'{"ts":"2026-1\n',  # 2: torn
            _line(2, 2),  # 3
            deep,  # 4: nested too deep for any decoder
            encoded,  # 5: stored with enc: not sent, not a problem
            _line(3, 3, stamp="not a time"),  # 6
            _line(4, 4, stamp=ts(T0_NS + 4_000_000).replace(".004000", ".004")),  # 7: another form of a time
            b"\n",  # 8: blank (reported, as ssmd verify does)
            _line(5, 5),  # 9
            b'{"ts":"2026',  # 10: torn last line, no newline
        ]
    )
    suffix = ".jsonl" if compression == "none" else ".jsonl.zst"
    (day / f"kalshi{suffix}").write_bytes(body if compression == "none" else codec(compression).compress(body))

    got = list(messages(tmp_path, "kalshi"))

    assert [bytes(m.msg) for m in got] == [
        msgspec.json.encode({"market_ticker": "M", "trade_id": str(n)}) for n in (1, 2, 4, 5)
    ]
    assert [m.seq for m in got] == [1, 2, 4, 5]
    assert got[2].ts == ts(T0_NS + 4_000_000)  # carried in the writer's own form
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    said = dict(w.split(f"kalshi{suffix}:", 1)[1].split(": ", 1) for w in warnings)
    assert sorted(said, key=int) == ["2", "4", "6", "8", "10"], warnings
    assert "corrupt or torn" in said["2"]
    assert "nested too deep" in said["4"]
    assert "not a receive time: 'not a time'" in said["6"]
    assert "torn last line" in said["10"]


def test_a_bad_time_is_reported_at_its_own_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    day = tmp_path / ts(T0_NS)[:10]
    day.mkdir()
    lines = [_line(1, 1), b"\n", _line(2, 2), _line(3, 3, stamp="2026-99-99T00:00:00Z"), _line(4, 4)]
    (day / "kalshi.jsonl").write_bytes(b"".join(lines))

    got = list(messages(tmp_path, "kalshi"))

    assert [m.seq for m in got] == [1, 2, 4]
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2 and "kalshi.jsonl:2: not an archive line" in warnings[0], warnings
    assert "kalshi.jsonl:4: not a receive time" in warnings[1], warnings


def test_a_line_nested_too_deep_among_good_ones_is_reported_not_raised(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    day = tmp_path / ts(T0_NS)[:10]
    day.mkdir()
    deep = (
        b'{"ts":"' + ts(T0_NS).encode() + b'","data":{"type":"trade","msg":' + b"[" * 50_000 + b"]" * 50_000 + b"}}\n"
    )
    (day / "kalshi.jsonl").write_bytes(_line(1, 1) + deep + _line(2, 2))

    got = list(messages(tmp_path, "kalshi"))

    assert [m.seq for m in got] == [1, 2]
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "kalshi.jsonl:2: not an archive line (nested too deep)" in warnings[0], warnings
