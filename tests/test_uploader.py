"""Upload of sealed segments and manifests to a real S3-compatible server (moto, in server mode)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from ssmd_connector.message import Message
from ssmd_connector.secrets import Secret
from ssmd_connector.sim import SimConfig, SimServer
from ssmd_connector.uploader import Uploader
from ssmd_connector.writers.jsonl import JsonlWriter

from .helpers import free_port
from .kalshi_helpers import KEY, KEY_ID, SECRETS, eventually, record

T0 = 1_795_000_000 * 10**9
CREDS = {"AWS_ACCESS_KEY_ID": Secret("testing"), "AWS_SECRET_ACCESS_KEY": Secret("testing")}


@pytest.fixture
def s3() -> Iterator[tuple[str, ThreadedMotoServer]]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    boto3.client(
        "s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    ).create_bucket(Bucket="archive")
    yield url, server
    server.stop()


def objects(url: str) -> dict[str, bytes]:
    c = boto3.client(
        "s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    out = {}
    for obj in c.list_objects_v2(Bucket="archive").get("Contents", []):
        out[obj["Key"]] = c.get_object(Bucket="archive", Key=obj["Key"])["Body"].read()
    return out


async def make_segments(root: Path, hours: range) -> None:
    w = JsonlWriter(root, compression="zstd", rotation=3600, now_ns=lambda: T0 + 10 * 3600 * 10**9)
    for h in hours:
        await w.write(
            [
                Message(T0 + h * 3600 * 10**9 + i, "kalshi", b'{"type":"t","i":%d}' % i, json_valid=True, kind="t")
                for i in range(50)
            ]
        )
    await w.close()


def test_uploads_each_file_once_verified_and_resumes(s3: tuple[str, ThreadedMotoServer], tmp_path: Path) -> None:
    url, server = s3
    asyncio.run(make_segments(tmp_path, range(2)))
    up = Uploader(tmp_path, "archive", prefix="ssmd", endpoint_url=url, region="us-east-1", credentials=CREDS)
    assert up.upload_pending() == 3  # two segments and the day's manifest
    assert up.upload_pending() == 0  # nothing twice
    stored = objects(url)
    for key, body in stored.items():
        local = tmp_path / key.removeprefix("ssmd/")
        assert hashlib.sha256(local.read_bytes()).digest() == hashlib.sha256(body).digest()
    # More data seals another segment and rewrites the manifest; the server goes away mid-round.
    asyncio.run(make_segments(tmp_path, range(2, 3)))
    server.stop()
    with pytest.raises(Exception):  # noqa: B017 - any connection error
        Uploader(
            tmp_path, "archive", prefix="ssmd", endpoint_url=url, region="us-east-1", credentials=CREDS
        ).upload_pending()
    server.start()  # back (moto keeps its state in this process)
    resumed = Uploader(tmp_path, "archive", prefix="ssmd", endpoint_url=url, region="us-east-1", credentials=CREDS)
    assert resumed.upload_pending() == 2  # the new segment and the changed manifest: no re-upload of the rest
    stored = objects(url)
    assert len([k for k in stored if k.endswith(".jsonl.zst")]) == 3
    manifest = json.loads(stored[next(k for k in stored if k.endswith("manifest.json"))])
    assert len(manifest["segments"]) == 3
    ledger = [json.loads(x) for x in (tmp_path / ".uploads.jsonl").read_text().splitlines()]
    assert len(ledger) == 5 and len({(e["path"], e["sha256"]) for e in ledger}) == 5


def test_delete_after_verified_upload(s3: tuple[str, ThreadedMotoServer], tmp_path: Path) -> None:
    url, _ = s3
    asyncio.run(make_segments(tmp_path, range(1)))
    segment = next(tmp_path.glob("*/kalshi-*.jsonl.zst"))
    body = segment.read_bytes()
    up = Uploader(
        tmp_path, "archive", endpoint_url=url, region="us-east-1", credentials=CREDS, delete_after_upload=True
    )
    assert up.upload_pending() == 2
    assert not segment.exists() and next(tmp_path.glob("*/kalshi.manifest.json")).exists()
    stored = objects(url)
    key = str(segment.relative_to(tmp_path))
    assert stored[key] == body
    assert base64.b64encode(hashlib.sha256(body).digest())


def test_recorder_uploads_what_it_seals(s3: tuple[str, ThreadedMotoServer], tmp_path: Path) -> None:
    url, _ = s3

    async def go() -> list[Path]:
        sim = SimServer(SimConfig(port=0, markets=8, rate=1000, public_keys={KEY_ID: KEY.public_key()}))
        await sim.start()
        sub = "  channels: [orderbook_delta, trade]\n  markets: [" + ", ".join(sim.model.open_tickers[:3]) + "]\n"
        storage = f", rotation: 1h, upload: {{bucket: archive, endpoint_url: '{url}', region: us-east-1}}"
        s = await record(tmp_path, sim, sub, storage=storage, secrets={**SECRETS, **CREDS})
        await eventually(lambda: s.recorder.runner.stats.messages > 500)
        await s.stop()
        await sim.stop()
        return sorted(p for p in s.data.glob("*/*") if not p.name.startswith("."))

    local = asyncio.run(go())
    stored = objects(url)
    for path in local:
        if path.name.endswith((".jsonl", ".manifest.json")) and "events" not in path.name:
            key = str(path.relative_to(tmp_path / "data"))
            assert stored[key] == path.read_bytes(), key
    assert any(k.endswith("manifest.json") for k in stored) and any(k.endswith(".jsonl") for k in stored)
