"""Storage that disappears, breaks, fills up or was configured wrong (rows 2, 4, 7, 11, 13)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest

from ssmd_connector.message import decode_frame

from ..helpers import CLI, ScriptedServer, cli_env, frame, read_lines, write_config
from .harness import ssmd, start_recording, streaming, unshare_available, until

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
        ssmd("validate", "--config-dir", str(cfg)),
        subprocess.run([*CLI, "--env", "test", "--config-dir", str(cfg)], capture_output=True, text=True, check=False),
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
        ssmd("validate", "--config-dir", str(cfg)),
        subprocess.run([*CLI, "--env", "test", "--config-dir", str(cfg)], capture_output=True, text=True, check=False),
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
