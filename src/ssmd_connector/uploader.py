"""Object storage: sealed segments and manifests uploaded to S3-compatible storage.

Runs beside the recorder (or the archiver) on its own schedule, off the hot path (boto3 in a
worker thread). Every ``interval`` seconds it uploads each sealed segment and each manifest that
the upload ledger (``<storage.path>/.uploads.jsonl``) does not already record *with the same
SHA-256* — so a restart re-uploads nothing twice and misses nothing, and a manifest rewritten at a
later seal is uploaded again. Each upload sends the SHA-256 (``ChecksumAlgorithm=SHA256``) and is
verified afterwards against the object's stored checksum before it enters the ledger; failures
are retried on the next round with backoff. With ``delete_after_upload``, a segment's local copy
is removed once its upload is verified (manifests stay).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .archive import compression_of
from .archive.layout import UPLOAD_LEDGER
from .archive.line import json_object
from .metrics import UploadStats
from .secrets import Secret

log = logging.getLogger(__name__)

LEDGER = UPLOAD_LEDGER


class Uploader:
    def __init__(
        self,
        root: Path,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        credentials: Mapping[str, Secret] | None = None,
        access_key_var: str = "AWS_ACCESS_KEY_ID",
        secret_key_var: str = "AWS_SECRET_ACCESS_KEY",  # noqa: S107 - a variable's name, not a secret
        delete_after_upload: bool = False,
        interval: float = 10.0,
    ) -> None:
        self.root = root
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._endpoint = endpoint_url
        self._region = region
        creds = credentials or {}
        self._key = creds.get(access_key_var)
        self._secret = creds.get(secret_key_var)
        self._delete = delete_after_upload
        self.interval = interval
        self._client: Any = None
        self.uploaded: dict[str, str] = {}
        """Relative path → SHA-256 of what was uploaded and verified (the ledger, in memory)."""
        self.errors = 0
        self.stats = UploadStats()
        """For ``/metrics`` (``ssmd_uploaded_files_total``, ``ssmd_upload_errors_total``, ``ssmd_upload_failing``)."""
        self._load_ledger()

    def _load_ledger(self) -> None:
        try:
            text = (self.root / LEDGER).read_text()
        except FileNotFoundError:
            return
        for line in text.splitlines():
            entry = json_object(line.encode())  # (a torn last line: that file is uploaded again)
            if entry is not None and isinstance(entry.get("path"), str) and isinstance(entry.get("sha256"), str):
                self.uploaded[entry["path"]] = entry["sha256"]

    def _s3(self) -> Any:
        if self._client is None:
            import boto3  # noqa: PLC0415 - only deployments that upload need it

            self._client = boto3.client(
                "s3",
                endpoint_url=self._endpoint,
                region_name=self._region,
                aws_access_key_id=self._key.reveal() if self._key else None,
                aws_secret_access_key=self._secret.reveal() if self._secret else None,
            )
        return self._client

    def key_for(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def candidates(self) -> list[Path]:
        """Sealed segments and manifests, oldest day first (open files and ledgers never)."""
        out = []
        for day in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for p in sorted(day.iterdir()):
                sealed_segment = compression_of(p) is not None and "-" in p.name.split(".")[0]
                if p.is_file() and (sealed_segment or p.name.endswith(".manifest.json")):
                    out.append(p)
        return out

    def upload_pending(self) -> int:
        """One round (runs in a worker thread). Returns how many files were uploaded."""
        done = 0
        for path in self.candidates():
            rel = str(path.relative_to(self.root))
            data = path.read_bytes()
            digest = hashlib.sha256(data).digest()
            hexdigest = digest.hex()
            if self.uploaded.get(rel) == hexdigest:
                continue
            key = self.key_for(rel)
            checksum = base64.b64encode(digest).decode()
            s3 = self._s3()
            s3.put_object(Bucket=self.bucket, Key=key, Body=data, ChecksumAlgorithm="SHA256", ChecksumSHA256=checksum)
            head = s3.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
            stored = head.get("ChecksumSHA256")
            if stored != checksum or head.get("ContentLength") != len(data):
                raise OSError(f"s3://{self.bucket}/{key}: verification failed after upload")
            with open(self.root / LEDGER, "a") as f:
                f.write(json.dumps({"path": rel, "sha256": hexdigest, "key": key}) + "\n")
                f.flush()
                os.fsync(f.fileno())
            self.uploaded[rel] = hexdigest
            done += 1
            if self._delete and not path.name.endswith(".manifest.json"):
                path.unlink()
                log.info("uploaded and verified %s; local copy removed", rel)
        return done

    async def run(self, stop: asyncio.Event) -> None:
        """Upload rounds until ``stop``; one last round after it, so nothing sealed is left behind."""
        delay = self.interval
        while True:
            try:
                self.stats.uploaded += await asyncio.to_thread(self.upload_pending)
                self.stats.failing = False
                delay = self.interval
            except Exception as exc:  # network, credentials, throttling: retried next round
                self.errors += 1
                self.stats.errors += 1
                self.stats.failing = True
                delay = min(delay * 2, 300.0)
                log.warning("upload to s3://%s failed (retrying in %.0fs): %s", self.bucket, delay, exc)
            if stop.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
