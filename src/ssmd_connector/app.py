"""Assembly: from loaded config and secrets to a running recorder (runner + health server).

Shared by the ``ssmd-connector`` CLI and the ``ssmd demo`` command so both run the same thing.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Mapping
from dataclasses import dataclass

from .config import Environment, LoadedConfig
from .connectors.build import build_connectors
from .incidents import Incidents
from .kalshi.auth import KEY_ID_VAR
from .ledger import Ledger
from .metrics import FeedStats, make_registry
from .runner import Runner
from .secrets import Secret
from .server import HealthServer
from .uploader import Uploader
from .writers.build import build_writers

log = logging.getLogger(__name__)


IDENTIFIERS = frozenset({KEY_ID_VAR})
"""Resolved keys that name a credential rather than hold one (Kalshi's API key id): shown alike
in logs, ``/ready`` and the ledger, so an operator can tell which key was rejected."""


def confidential(secrets: Mapping[str, Secret]) -> list[Secret]:
    """The secrets the log filter must mask: all but the identifiers."""
    return [value for name, value in secrets.items() if name not in IDENTIFIERS]


def make_uploader(env: Environment, secrets: Mapping[str, Secret]) -> Uploader | None:
    up = env.storage.upload
    if up is None:
        return None
    return Uploader(
        env.storage.path,
        up.bucket,
        prefix=up.prefix,
        endpoint_url=up.endpoint_url,
        region=up.region,
        credentials=secrets,
        access_key_var=up.access_key_var,
        secret_key_var=up.secret_key_var,
        delete_after_upload=up.delete_after_upload,
        interval=up.interval,
    )


@dataclass
class Recorder:
    runner: Runner
    server: HealthServer
    ledger: Ledger
    uploader: Uploader | None = None

    @classmethod
    def build(cls, config: LoadedConfig, secrets: Mapping[str, Secret]) -> Recorder:
        """Everything validated and wired; raises ``ConfigError`` for anything the user must fix."""
        env, feed = config.environment, config.feed
        stats = FeedStats(feed.name)
        ledger = Ledger(env.storage.path, feed.name)
        incidents = Incidents(stats)
        incidents.record = ledger.record

        def storage_lost(message: str, fields: dict[str, object]) -> None:
            incidents.happened(f"storage:{fields.get('path')}", "storage", message, fields)

        runner = Runner(
            feed.name,
            build_connectors(env, feed, secrets, ledger, stats),
            build_writers(env, storage_lost),
            stats=stats,
            flush_interval=env.storage.flush_interval,
            incidents=incidents,
        )
        return cls(runner, HealthServer(runner, make_registry([stats])), ledger, make_uploader(env, secrets))

    async def run(self, host: str, port: int, *, handle_signals: bool = True) -> None:
        """Serve health, record until SIGINT/SIGTERM (or ``runner.stop()``), shut down cleanly."""
        await self.server.start(host, port)
        log.info("health server on http://%s:%d (/health, /ready, /metrics)", host, self.server.port)
        loop = asyncio.get_running_loop()
        if handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self._on_signal, sig)
        stop_uploads = asyncio.Event()
        uploads = asyncio.create_task(self.uploader.run(stop_uploads)) if self.uploader else None
        try:
            await self.runner.run()
        finally:
            stop_uploads.set()
            if uploads is not None:
                await uploads  # one last round: what the shutdown sealed is uploaded too
            if handle_signals:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
            await self.server.stop()
            try:
                await self.ledger.close()
            except OSError as exc:
                log.error("the coverage ledger could not be written at shutdown: %s", exc.strerror or exc)  # noqa: TRY400

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("%s received: stopping (draining and flushing first)", sig.name)
        self.runner.stop()
