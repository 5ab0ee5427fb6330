"""``ssmd archive --health-addr``: /health, /ready and /metrics of the archiver, through a real
NATS outage and a real full disk (a tmpfs in the archiver's own mount namespace)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ..faults.harness import unshare_available
from ..helpers import archiver_cmd, free_port, write_config
from ..natsserver import NatsServer
from .test_archiver import archived_seqs, publish

NO_UNSHARE = unshare_available()


def get(port: int, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            body = r.read().decode()
            status = r.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read().decode(), exc.code
    return status, (body if path == "/metrics" else json.loads(body))


def metrics(port: int) -> dict[str, float]:
    """``name`` → value of the archiver's single-feed samples (labels dropped: one feed)."""
    _, text = get(port, "/metrics")
    return {s.name: s.value for fam in text_string_to_metric_families(text) for s in fam.samples}


def wait_for(cond: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if cond():
                return
        except (OSError, urllib.error.URLError):
            pass  # (not listening yet)
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.1)


def config(tmp_path: Path, nats_url: str, data: Path) -> Path:
    return write_config(
        tmp_path / "cfg",
        feed_name="kalshi",
        env=f"name: arch\nfeed: kalshi\nstorage:\n  type: local\n  path: {data}\n  rotation: 1h\n"
        f"nats: {{url: '{nats_url}', stream: KALSHI}}\n",
        feed="name: kalshi\ntype: websocket\nversions:\n"
        "  - {version: x, endpoint: 'ws://127.0.0.1:9/x', active: true}\n",
        env_name="arch",
    )


@pytest.mark.skipif(NO_UNSHARE is not None, reason=str(NO_UNSHARE))
def test_archiver_reports_nats_lag_and_a_full_disk_then_archives_everything_once(
    server: NatsServer, tmp_path: Path
) -> None:
    """The archiver starts while NATS is down (not ready, NATS disconnected), then archives into a
    1 MiB tmpfs that a filler file has nearly used up: one write error however many retries, not
    ready, the lag in messages and seconds growing; the filler removed (through
    ``/proc/<pid>/root``), it catches up: every frame once, lag 0, ready."""
    n, total = 6000, 6500
    data = tmp_path / "archive"
    data.mkdir()
    out = tmp_path / "copied"
    out.mkdir()
    cfg = config(tmp_path, server.url, data)
    server.stop()
    port = free_port()
    # Without `exec`: the shell outlives the archiver, to copy the archive out of the namespace.
    script = (
        f'mount -t tmpfs -o size=1m tmpfs "{data}" && head -c 900000 /dev/zero > "{data}/filler" 2>/dev/null; '
        f'"$@"; rc=$?; cp -a "{data}/." "{out}/"; rm -f "{out}/filler"; exit $rc'
    )
    cmd = archiver_cmd(cfg, health_port=port)
    stderr = tmp_path / "stderr"
    with stderr.open("w") as err:
        shell = subprocess.Popen(["unshare", "-rm", "sh", "-c", script, "sh", *cmd], stderr=err)
    try:
        wait_for(lambda: get(port, "/ready")[0] == 503, "listening before NATS is up")
        status, ready = get(port, "/ready")
        assert any(r.startswith(f"NATS {server.url}: connecting") for r in ready["reasons"]), ready
        assert get(port, "/health")[0] == 200  # alive: waiting for NATS is not a stall
        m = metrics(port)
        assert m["ssmd_archiver_nats_connected"] == 0 and m["ssmd_archiver_frames_total"] == 0
        assert "ssmd_archiver_lag_messages" not in m  # not measured yet: no made-up zero

        server.start()
        asyncio.run(publish(server.url, n))
        wait_for(lambda: metrics(port)["ssmd_archiver_write_errors_total"] == 1, "the disk filling up")
        first = metrics(port)
        assert first["ssmd_archiver_writes_failing"] == 1 and first["ssmd_archiver_nats_connected"] == 1
        wait_for(lambda: metrics(port)["ssmd_archiver_lag_messages"] > 0, "the lag measured while writes fail")
        time.sleep(1.5)  # retries meanwhile (0.5 s, 1 s, ...): still one outage
        during = metrics(port)
        assert during["ssmd_archiver_write_errors_total"] == 1
        # The lag is measured on its own timer: it grows during the outage (it was measured only
        # between batches, and froze while one was retried).
        asyncio.run(publish(server.url, total, first=n))
        stored = during["ssmd_archiver_checkpoint_sequence"]  # (frozen while writes fail)
        wait_for(
            lambda: metrics(port)["ssmd_archiver_lag_messages"] == total - stored, "the lag growing while writes fail"
        )
        assert during["ssmd_archiver_lag_seconds"] > 0
        assert during["ssmd_archiver_checkpoint_sequence"] < n
        assert metrics(port)["ssmd_archiver_writes_failing"] == 1  # (still the same outage)
        status, ready = get(port, "/ready")
        assert status == 503 and any("No space left on device" in r for r in ready["reasons"]), ready

        children = Path(f"/proc/{shell.pid}/task/{shell.pid}/children").read_text().split()
        archiver = int(children[0])
        (Path(f"/proc/{archiver}/root") / str(data).lstrip("/") / "filler").unlink()  # space is back
        wait_for(lambda: metrics(port)["ssmd_archiver_frames_total"] == total, "everything archived")
        wait_for(lambda: metrics(port)["ssmd_archiver_lag_messages"] == 0, "the lag measured as 0")
        after = metrics(port)
        assert after["ssmd_archiver_writes_failing"] == 0 and after["ssmd_archiver_write_errors_total"] == 1
        assert after["ssmd_archiver_lag_seconds"] == 0 and after["ssmd_archiver_checkpoint_sequence"] == total
        assert after["ssmd_archiver_last_frame_timestamp_seconds"] > 1.7e9
        assert get(port, "/ready") == (200, {"ready": True, "feed": "kalshi"})
        status, health = get(port, "/health")
        assert status == 200 and health["frames"] == total and health["lag_messages"] == 0, health

        os.kill(archiver, signal.SIGTERM)
        assert shell.wait(30) == 0, stderr.read_text()[-2000:]
    finally:
        if shell.poll() is None:  # (a failed assertion: the archiver too, not only its shell)
            with contextlib.suppress(OSError, ValueError):
                for child in Path(f"/proc/{shell.pid}/task/{shell.pid}/children").read_text().split():
                    os.kill(int(child), signal.SIGKILL)
            shell.kill()
    log = stderr.read_text()
    assert log.count("No space left on device") == 1, "an outage is logged once, not per retry"
    assert "archive writes work again" in log and "Traceback" not in log
    assert sorted(archived_seqs(out)) == list(range(total))  # exactly once, ssmd verify passes


def test_archiver_health_addr_errors_exit_2_without_a_traceback(server: NatsServer, tmp_path: Path) -> None:
    cfg = config(tmp_path, server.url, tmp_path / "archive")
    base = archiver_cmd(cfg)
    bad = subprocess.run([*base, "--health-addr", "nowhere"], capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 2 and "expected HOST:PORT" in bad.stderr and "Traceback" not in bad.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = subprocess.run(
            [*base, "--health-addr", f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=60, check=False
        )
    assert busy.returncode == 2, busy.stderr
    assert f"--health-addr 127.0.0.1:{port}: address already in use" in busy.stderr and "Traceback" not in busy.stderr
