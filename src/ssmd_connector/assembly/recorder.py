"""The recorder, assembled: from loaded configuration and resolved secrets to a running recorder
(connectors, writers, runner, health server, ledger, uploads). Shared by the ``ssmd-connector``
command and ``ssmd demo``, so both run the same thing.

Everything the lower layers are given here is a plain value or a settings object
(:mod:`ssmd_connector.settings`): no connector, writer or runner reads the configuration models.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Mapping
from dataclasses import dataclass

from .._version import __version__
from ..config import Discover, Environment, Feed, LoadedConfig
from ..connectors.headers import check_header_secret, interpolate_headers
from ..connectors.websocket import WebSocketConnector
from ..errors import ConfigError
from ..incidents import Incidents
from ..interfaces import Connector, ConnectorPool, ConnectorSetup
from ..kalshi.auth import KEY_ID_VAR, PRIVATE_KEY_VAR, Signer, load_private_key
from ..kalshi.wire import Ev
from ..ledger import Ledger
from ..metrics import FeedStats, make_registry
from ..runner import Runner
from ..secrets import Secret
from ..server import HealthServer
from ..settings import Discovery, KalshiSettings
from ..uploader import Uploader
from .writers import build_writers

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


def discovery(d: Discover) -> Discovery:
    status = tuple(d.status) if d.status is not None else None
    return Discovery(status, tuple(d.series), refresh=d.refresh, combos=d.combos)


def kalshi_settings(env: Environment, feed: Feed) -> KalshiSettings:
    """The environment's ``subscription`` and the feed's active endpoints, as the connector takes them."""
    from ..kalshi.markets import rest_base_from_ws  # noqa: PLC0415 - only Kalshi feeds need it

    version, sub = feed.active_version(), env.subscription
    return KalshiSettings(
        feed=feed.name,
        endpoint=version.endpoint,
        rest_base=version.rest_endpoint or rest_base_from_ws(version.endpoint),
        channels=tuple(sub.channels),
        markets=tuple(sub.markets),
        discover=discovery(sub.discover) if sub.discover is not None else None,
        max_markets_per_connection=sub.max_markets_per_connection,
        stale_after=sub.stale_after,
        connect_stagger=sub.connect_stagger,
        command_timeout=sub.command_timeout,
        receive_buffer=sub.receive_buffer,
    )


def kalshi_signer(secrets: Mapping[str, Secret], label: str) -> Signer | None:
    key_id, pem = secrets.get(KEY_ID_VAR), secrets.get(PRIVATE_KEY_VAR)
    if key_id is None and pem is None:
        return None
    if key_id is None or pem is None:
        missing = KEY_ID_VAR if key_id is None else PRIVATE_KEY_VAR
        raise ConfigError(
            [
                f"{label}: keys: {missing} is required with "
                f"{PRIVATE_KEY_VAR if key_id is None else KEY_ID_VAR} (add it to a keys source)"
            ]
        )
    check_header_secret(key_id.reveal(), KEY_ID_VAR, f"{label}: keys")  # (it is sent as a header)
    try:
        return Signer(key_id.reveal(), load_private_key(pem))
    except ConfigError as exc:
        raise ConfigError([f"{label}: keys: {p}" for p in exc.problems]) from None


def build_connectors(
    env: Environment, feed: Feed, secrets: Mapping[str, Secret], ledger: Ledger, stats: FeedStats
) -> ConnectorSetup:
    """Validate everything now (config errors surface before start-up) and return the setup
    the runner calls to create the connectors (Kalshi discovers markets there)."""
    if feed.connector_kind == "kalshi":
        from ..connectors.kalshi.feed import KalshiFeed  # noqa: PLC0415 - only Kalshi feeds need it

        signer = kalshi_signer(secrets, f"environments/{env.name}.yaml")
        if signer is None:
            log.warning(
                "no Kalshi credentials (%s, %s) among the environment's keys: connecting without "
                "authentication, which only a simulator started with --no-auth accepts",
                KEY_ID_VAR,
                PRIVATE_KEY_VAR,
            )
        return KalshiFeed(kalshi_settings(env, feed), signer, ledger, stats).connectors
    version = feed.active_version()
    label = f"feeds/{feed.name}.yaml"
    headers = interpolate_headers(version.headers, secrets, label)
    hint = (
        f"check the credentials in the handshake headers ({', '.join(headers)}) in {label} and the environment's keys"
        if headers
        else f"the endpoint wants credentials: add them as handshake headers in {label}"
    )
    connectors: list[Connector] = [
        WebSocketConnector(version.endpoint, label=feed.name, headers=headers, credentials_hint=hint)
    ]

    async def ready(_pool: ConnectorPool) -> list[Connector]:
        return connectors

    return ready


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

        def ledger_trouble(message: str | None) -> None:
            if message is None:
                incidents.end("ledger")
            else:
                incidents.begin("ledger", "storage", message)

        ledger.on_trouble = ledger_trouble

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
        uploader = make_uploader(env, secrets)
        registry = make_registry([stats], uploader.stats if uploader is not None else None)
        return cls(runner, HealthServer(runner, registry), ledger, uploader)

    async def run(self, host: str, port: int, *, handle_signals: bool = True) -> None:
        """Serve health, record until SIGINT/SIGTERM (or ``runner.stop()``), shut down cleanly."""
        self.ledger.record(Ev.RECORDER_STARTED, "recorder", {"version": __version__})
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
                log.error(  # noqa: TRY400 - a storage error, not a bug: no traceback
                    "the coverage ledger could not be written at shutdown (%s): %d event line(s) lost",
                    exc.strerror or exc,
                    self.ledger.unwritten,
                )

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("%s received: stopping (draining and flushing first)", sig.name)
        self.runner.stop()
