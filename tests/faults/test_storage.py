"""Storage that disappears, breaks, fills up or was configured wrong (rows 2, 4, 7, 11, 13)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp import web

from ssmd_connector.archive.line import decode_frame

from ..helpers import CLI, ScriptedServer, cli_env, frame, read_lines, write_config
from .harness import recorder_cli, ssmd, start_recording, streaming, unshare_available, until

NO_UNSHARE = unshare_available()


async def test_storage_deleted_while_recording_is_noticed_recreated_and_the_loss_counted(tmp_path: Path) -> None:
    """Row 2: ``rm -rf`` of the storage directory. Before, the recorder went on writing into the
    deleted file with every signal green and 0 frames survived. Now: noticed at the next flush,
    said everywhere (log, metric, /ready, ledger — with how many lines went with the file), the
    directory recreated, and every frame not yet flushed written there."""
    server = ScriptedServer(streaming(frame, per_ms=1))
    await server.start()
    data = tmp_path / "data"
    env = f"name: test\nfeed: testfeed\nstorage: {{type: local, path: {data}, flush_interval: 0.2}}\n"
    rec = await start_recording(tmp_path, server.url, env=env)
    await until(lambda: len(server.sent) > 1500 and data.exists(), what="recording")
    shutil.rmtree(data)
    await until(lambda: len(read_lines(data)) > 500, what="writing again into a recreated directory")
    status, ready = await rec.get("/ready")
    assert status == 503 and any("the archive file is gone" in r for r in ready["reasons"]), ready
    assert await rec.metric("ssmd_errors_total", kind="storage") == 1
    assert await rec.stop() == 0, rec.stderr[-2000:]
    await server.stop()
    sent = server.sent[: server.client_closed[0]]
    kept = [decode_frame(x) for x in read_lines(data)]
    (incident,) = [e for e in rec.ledger() if e["event"] == "incident" and e["kind"] == "storage"]
    # Exactly what went into the deleted file is missing, and the ledger says how much.
    assert incident["lines"] > 0 and kept == sent[incident["lines"] : len(sent)]
    assert "the archive file is gone" in rec.stderr


def _torn_day(data: Path) -> Path:
    day = data / "2026-11-29"
    day.mkdir(parents=True)
    path = day / "testfeed.jsonl"
    good = [b'{"ts":"2026-11-29T23:59:59.%06dZ","feed":"testfeed","data":{"i":%d}}' % (i, i) for i in range(3)]
    path.write_bytes(b"\n".join(good) + b'\n{"ts":"2026-11-29T23:59:59.999999Z","feed":"testfe')
    return path


async def test_a_torn_line_in_a_previous_days_file_is_read_around_and_repaired_at_start(tmp_path: Path) -> None:
    """Row 4: a crash before midnight tears yesterday's file, which today's run never opened: it was
    never repaired and ``ssmd cat`` / ``stats`` crashed on it."""
    data = tmp_path / "data"
    torn = _torn_day(data)
    cat = ssmd("cat", str(data))
    assert cat.returncode == 0 and len(cat.stdout.splitlines()) == 3, cat.stderr
    assert "2026-11-29/testfeed.jsonl:4: torn last line" in cat.stderr and "Traceback" not in cat.stderr
    strict = ssmd("stats", str(data), "--strict")
    assert strict.returncode == 1 and "frames: 3" in strict.stdout and "1 unreadable line(s)" in strict.stderr

    server = ScriptedServer(streaming(frame))
    await server.start()
    rec = await start_recording(tmp_path, server.url)
    await until(lambda: len(server.sent) > 100)
    assert await rec.stop() == 0
    await server.stop()
    assert torn.read_bytes().endswith(b'"data":{"i":2}}\n')  # the torn tail moved aside
    assert len(list(torn.parent.glob("testfeed.jsonl.torn-*"))) == 1
    assert ssmd("cat", str(data), "--strict").returncode == 0


@pytest.mark.parametrize("case", ["file", "under-a-file"])
def test_storage_path_that_cannot_be_a_directory_is_a_config_error(tmp_path: Path, case: str) -> None:
    """Row 7: accepted by start-up and ``ssmd validate``, it failed at the first write and every
    frame was lost at shutdown."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file")
    path = blocker if case == "file" else blocker / "data"
    cfg = write_config(tmp_path / "cfg", storage=path)
    expected = "is not a directory"
    for proc in (
        ssmd("validate", "--config-dir", str(cfg), cwd=tmp_path),
        recorder_cli("--env", "test", "--config-dir", str(cfg), cwd=tmp_path),
    ):
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert f"environments/test.yaml: storage.path: {path}" in proc.stderr and expected in proc.stderr


@pytest.mark.skipif(NO_UNSHARE is not None, reason=str(NO_UNSHARE))
def test_storage_on_a_read_only_filesystem_is_a_config_error(tmp_path: Path) -> None:
    """Row 7, read-only: a real read-only tmpfs mounted in a private mount namespace."""
    ro = tmp_path / "ro"
    ro.mkdir()
    cfg = write_config(tmp_path / "cfg", storage=ro / "data")
    for argv in (["ssmd", "validate", "--config-dir", str(cfg)], [*CLI, "--env", "test", "--config-dir", str(cfg)]):
        tool = str(Path(CLI[0]).parent / argv[0]) if argv[0] == "ssmd" else argv[0]
        script = f'mount -t tmpfs -o ro tmpfs "{ro}" && exec "{tool}" "$@"'
        proc = subprocess.run(
            ["unshare", "-rm", "sh", "-c", script, "sh", *argv[1:]], capture_output=True, text=True, check=False
        )
        assert proc.returncode == 2, proc.stderr
        assert "storage.path:" in proc.stderr and "Read-only file system" in proc.stderr


def test_storage_path_with_a_tilde_is_expanded(tmp_path: Path) -> None:
    """Row 11: ``~/x`` became a literal ``./~/x`` directory."""
    home = tmp_path / "home"
    home.mkdir()
    cfg = write_config(tmp_path / "cfg", env="name: test\nfeed: testfeed\nstorage: {type: local, path: '~/archive'}\n")
    proc = ssmd("validate", "--config-dir", str(cfg), env={**cli_env(), "HOME": str(home)})
    assert proc.returncode == 0, proc.stderr
    assert f"archive in {home / 'archive'}" in proc.stdout
    assert not (Path.cwd() / "~").exists()


@pytest.mark.parametrize(
    ("storage", "needle"),
    [
        ("storage: {type: local, path: ''}", "storage.path: expected a directory path, got an empty string"),
        (
            "storage: {type: local, path: a}\nstorage: {type: local, path: b}",
            "environments/test.yaml: line 4, column 1: duplicate key 'storage' (first given at line 3)",
        ),
    ],
)
def test_empty_path_and_duplicate_blocks_are_config_errors(tmp_path: Path, storage: str, needle: str) -> None:
    """Row 11: ``path: ""`` recorded into the current directory; a second ``storage:`` block
    silently replaced the first."""
    cfg = write_config(tmp_path / "cfg", env=f"name: test\nfeed: testfeed\n{storage}\n")
    for proc in (
        ssmd("validate", "--config-dir", str(cfg), cwd=tmp_path),
        recorder_cli("--env", "test", "--config-dir", str(cfg), cwd=tmp_path),
    ):
        assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.skipif(NO_UNSHARE is not None, reason=str(NO_UNSHARE))
async def test_a_full_disk_is_one_incident_however_many_retries_and_loses_nothing(tmp_path: Path) -> None:
    """Row 13: a full disk counted ~100 errors a second. Now one incident (``ssmd_errors_total``)
    with the retries in ``ssmd_write_retries_total``; when space is back, every frame is written.
    The disk is a real 1 MiB tmpfs in the recorder's own mount namespace, filled by a file the test
    removes (through ``/proc/<pid>/root``) to end the outage."""
    data = tmp_path / "data"
    data.mkdir()
    server = ScriptedServer(streaming(frame, per_ms=1))
    await server.start()
    env = f"name: test\nfeed: testfeed\nstorage: {{type: local, path: {data}, flush_interval: 0.2}}\n"
    script = (
        f'mount -t tmpfs -o size=1m tmpfs "{data}" && head -c 900000 /dev/zero > "{data}/filler" 2>/dev/null; exec "$@"'
    )
    rec = await start_recording(tmp_path, server.url, env=env, prefix=["unshare", "-rm", "sh", "-c", script, "sh"])
    inside = Path(f"/proc/{rec.proc.pid}/root") / str(data).lstrip("/")
    await until(lambda: rec.stderr.count("No space left on device") >= 1, what="the disk filling up")
    await asyncio.sleep(2.0)  # retries every 0.5 s meanwhile
    assert await rec.metric("ssmd_errors_total", kind="write") == 1
    assert await rec.metric("ssmd_write_retries_total") >= 2
    status, ready = await rec.get("/ready")
    assert status == 503 and any("No space left on device" in r for r in ready["reasons"])
    (inside / "filler").unlink()  # space is back
    await until(lambda: "writes recovered" in rec.stderr, what="recovery")
    sent_at_recovery = len(server.sent)
    await asyncio.sleep(1.0)  # a few flushes
    # Read while the recorder runs: its tmpfs goes away with its mount namespace.
    archived = [decode_frame(x) for x in read_lines(inside)]
    assert len(archived) >= sent_at_recovery and archived == server.sent[: len(archived)]
    assert await rec.metric("ssmd_errors_total", kind="write") == 1
    assert await rec.stop() == 0, rec.stderr[-2000:]
    await server.stop()
    assert rec.stderr.count("No space left on device") <= 2, "an outage is logged once, not per retry"


async def test_a_quiet_feeds_deleted_archive_is_noticed_too(tmp_path: Path) -> None:
    """Deletion was only checked when there was something to write: a feed that went quiet lost
    its file with every signal green."""

    async def burst(ws: web.WebSocketResponse, srv: ScriptedServer, _: int) -> None:
        for i in range(50):
            await srv.send(ws, frame(i))
        await asyncio.sleep(30)

    server = ScriptedServer(burst)
    await server.start()
    data = tmp_path / "data"
    env = f"name: test\nfeed: testfeed\nstorage: {{type: local, path: {data}, flush_interval: 0.2}}\n"
    rec = await start_recording(tmp_path, server.url, env=env)
    await until(lambda: len(read_lines(data)) == 50, what="the burst archived")
    shutil.rmtree(data)
    await until(lambda: "the archive file is gone" in rec.stderr, what="the loss noticed")
    status, ready = await rec.get("/ready")
    assert status == 503 and any("50 line(s)" in r for r in ready["reasons"]), ready
    assert await rec.metric("ssmd_errors_total", kind="storage") == 1
    assert await rec.stop() == 0
    await server.stop()
    (incident,) = [e for e in rec.ledger() if e["event"] == "incident"]
    assert incident["lines"] == 50


async def test_a_corrupt_manifest_is_set_aside_and_recording_goes_on(tmp_path: Path) -> None:
    """A manifest that does not parse stopped every write at start-up (an internal error on each
    flush, nothing recorded). Now it is moved aside and rebuilt from the segment files."""
    data = tmp_path / "data"
    day = data / datetime.now(UTC).strftime("%Y-%m-%d")
    day.mkdir(parents=True)
    (day / "testfeed.manifest.json").write_text('{"date": "x", "feed": "testfeed", "segm')
    server = ScriptedServer(streaming(frame))
    await server.start()
    env = f"name: test\nfeed: testfeed\nstorage: {{type: local, path: {data}, rotation: 1m}}\n"
    rec = await start_recording(tmp_path, server.url, env=env)
    await until(lambda: len(server.sent) > 500)
    assert await rec.stop() == 0, rec.stderr[-2000:]
    await server.stop()
    assert rec.proc.returncode == 0 and "internal error" not in rec.stderr
    assert len(list(day.glob("testfeed.manifest.json.corrupt-*"))) == 1
    assert ssmd("verify", str(data)).returncode == 0
    assert len(ssmd("cat", str(data)).stdout.splitlines()) == len(server.sent[: server.client_closed[0]])


async def test_another_feed_whose_name_starts_the_same_is_left_alone(tmp_path: Path) -> None:
    """Feeds ``testfeed`` and ``testfeed-b`` in one storage root: the first took the second's open
    segment for a crash's leftover and sealed it under the second's feet, and listed its files
    (its ledger too) in its own manifest."""
    data = tmp_path / "data"
    day = data / datetime.now(UTC).strftime("%Y-%m-%d")
    day.mkdir(parents=True)
    other_open = day / ".testfeed-b-0000.jsonl.open"
    other_open.write_bytes(b'{"ts":"2026-11-24T00:00:00.000000Z","feed":"testfeed-b","data":1}\n')
    (day / "testfeed-b-0001.jsonl").write_bytes(b'{"ts":"2026-11-24T00:01:00.000000Z","feed":"testfeed-b","data":2}\n')
    (day / "testfeed-b.events.jsonl").write_text('{"event":"connect"}\n')
    server = ScriptedServer(streaming(frame))
    await server.start()
    env = f"name: test\nfeed: testfeed\nstorage: {{type: local, path: {data}, rotation: 1m}}\n"
    rec = await start_recording(tmp_path, server.url, env=env)
    await until(lambda: len(server.sent) > 300)
    assert await rec.stop() == 0
    await server.stop()
    assert other_open.exists(), "another feed's open segment was sealed"
    manifest = json.loads((day / "testfeed.manifest.json").read_text())
    assert all(s["name"].startswith("testfeed-") and "testfeed-b" not in s["name"] for s in manifest["segments"])


async def test_stopping_while_writes_fail_says_what_was_not_stored_and_does_not_hang(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = ScriptedServer(streaming(frame))
    await server.start()
    rec = await start_recording(tmp_path, server.url, data=data)
    await until(lambda: len(read_lines(data)) > 100)
    day = next(data.iterdir())
    shutil.rmtree(day)
    day.write_text("a file where the day's directory should be")  # every write now fails
    await until(lambda: "cannot write archive file" in rec.stderr, what="writes failing")
    started = time.monotonic()
    code = await rec.stop(timeout=60)
    took = time.monotonic() - started
    await server.stop()
    assert code == 1 and took < 20, (code, took)
    assert "bytes of received frames not stored" in rec.stderr and "Traceback" not in rec.stderr
    assert rec.stderr.count("internal error") == 0


_PARTLY_WRITTEN = """
import asyncio, json, os, sys
from pathlib import Path
from ssmd_connector.archive import Reader
from ssmd_connector.errors import WriteFailed
from ssmd_connector.message import Message

from ssmd_connector.writers.jsonl import JsonlWriter

root = Path(sys.argv[1])
NS = 1_795_000_000 * 10**9


async def main() -> None:
    (root / "filler").write_bytes(b"x" * 400_000)
    w = JsonlWriter(root, compression=sys.argv[2], now_ns=lambda: NS)
    sent, i, failed = [], 0, False
    while not failed:  # incompressible frames until the disk is full in the middle of a write
        batch = [b'{"i":%d,"pad":"%s"}' % (i + k, os.urandom(400).hex().encode()) for k in range(50)]
        await w.write([Message(NS + i + k, "f", f) for k, f in enumerate(batch)])
        sent += batch
        i += 50
        try:
            await w.flush()
        except WriteFailed:
            failed = True
    day = next(p for p in root.iterdir() if p.is_dir())
    lost = len(list(Reader().lines(next(day.iterdir())))) if sys.argv[2] == "none" else None
    for f in day.iterdir():
        f.unlink()  # the file that was being written, deleted
    (root / "filler").unlink()  # space is back
    reports = []
    w._on_storage_lost = lambda message, fields: reports.append(fields)
    await w.close()
    problems = []
    lines = [line for f in sorted(day.iterdir()) for _, line in Reader(on_problem=problems.append).lines(f)]
    print(json.dumps({"sent": len(sent), "kept": len(lines), "problems": [str(p) for p in problems],
                      "reported": reports, "lost_before": lost,
                      "kept_is_suffix": [json.loads(x)["data"]["i"] for x in lines][-1] == i - 1}))


asyncio.run(main())
"""


@pytest.mark.skipif(NO_UNSHARE is not None, reason=str(NO_UNSHARE))
@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_a_file_deleted_while_a_write_to_it_was_cut_short_is_rewritten_whole(tmp_path: Path, compression: str) -> None:
    """Disk full in the middle of a write, then the file deleted: the new file started with the
    rest of the cut write — a torn first line, or (compressed) the tail of a zstd frame, which made
    the whole file unreadable. The unfinished write must be written again, whole."""
    root = tmp_path / "disk"
    root.mkdir()
    script = tmp_path / "partly_written.py"
    script.write_text(_PARTLY_WRITTEN)
    mount = f'mount -t tmpfs -o size=600k tmpfs "{root}" && exec "$0" "$@"'
    proc = subprocess.run(
        ["unshare", "-rm", "sh", "-c", mount, sys.executable, str(script), str(root), compression],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["problems"] == [], result["problems"]  # every line of the new file reads
    assert result["kept"] > 0 and result["kept_is_suffix"]
    assert len(result["reported"]) == 1  # and the deleted file was reported lost


_LEDGER_ON_A_FULL_DISK = """
import asyncio, json, os, sys
from pathlib import Path
from ssmd_connector.archive.ledger import is_event
from ssmd_connector.ledger import Ledger

root = Path(sys.argv[1])


async def main() -> None:
    (root / "filler").write_bytes(b"x" * (60 << 10))  # ~4 KiB left on a 64 KiB disk
    ledger = Ledger(root, "kalshi", flush_delay=0.01)
    said = []
    ledger.on_trouble = said.append
    for i in range(100):  # ~20 KiB of events: the write is cut short in the middle of a line
        ledger.record("command", "kalshi-0", {"i": i, "pad": os.urandom(80).hex()})
    for _ in range(200):
        await asyncio.sleep(0.01)
        if said:
            break
    await asyncio.sleep(0.2)  # a few retries, still failing
    failing = list(said)
    (root / "filler").unlink()  # space is back
    for _ in range(200):
        await asyncio.sleep(0.01)
        if said[-1] is None:
            break
    await ledger.close()
    day = next(p for p in root.iterdir() if p.is_dir())
    raw = (day / "kalshi.events.jsonl").read_bytes().splitlines()
    print(json.dumps({"failing": [m for m in failing if m], "said": [m is not None for m in said],
                      "parse": all(is_event(x) for x in raw), "i": [json.loads(x)["i"] for x in raw]}))


asyncio.run(main())
"""


@pytest.mark.skipif(NO_UNSHARE is not None, reason=str(NO_UNSHARE))
def test_the_ledger_on_a_full_disk_says_so_and_keeps_every_event_once(tmp_path: Path) -> None:
    """A ledger write cut short by a full disk was retried whole: the lines already written were
    written again, after a torn one, on every retry — and nothing said the ledger was failing.
    Now: exactly the unwritten bytes are kept and retried, and the trouble is said (the recorder
    turns it into a storage incident), then its end."""
    root = tmp_path / "disk"
    root.mkdir()
    script = tmp_path / "ledger_full.py"
    script.write_text(_LEDGER_ON_A_FULL_DISK)
    mount = f'mount -t tmpfs -o size=64k tmpfs "{root}" && exec "$0" "$@"'
    proc = subprocess.run(
        ["unshare", "-rm", "sh", "-c", mount, sys.executable, str(script), str(root)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["i"] == list(range(100)) and result["parse"]  # every event, once, in order, whole
    assert result["failing"] and "No space left on device" in result["failing"][0]
    assert "event line(s) kept, retrying" in result["failing"][0]
    assert result["said"][-1] is False  # ... and then that it is written again
