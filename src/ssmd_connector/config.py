"""Configuration: ``DIR/environments/NAME.yaml`` and ``DIR/feeds/FEED.yaml``.

Loading collects *every* problem, each as one line naming the file, the field and what was
expected, so a user fixes a file in one pass. Unknown keys are tolerated (real files carry extra
blocks for other tools) and reported as warnings.

A relative ``storage.path`` is resolved against the current working directory of the process.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .connectors.kalshi.protocol import DEFAULT_CHANNELS, ORDERBOOK_DELTA, RECORDABLE_CHANNELS
from .connectors.websocket import DEFAULT_RECEIVE_BUFFER
from .errors import ConfigError
from .writers.segments import parse_rotation

log = logging.getLogger(__name__)

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
"""Names that become path components: no separators, no '..', no leading dot or dash."""

STORAGE_TYPES = ("local",)
CONNECTORS = ("websocket", "kalshi")


def check_safe_name(value: str) -> str:
    if not SAFE_NAME.match(value) or ".." in value:
        raise ValueError(
            "must be a safe file name: letters, digits, '.', '_' or '-', not starting with '.' "
            f"or '-', no '..' (got {value!r})"
        )
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True, frozen=True)


class KeySpec(_Model):
    name: str
    source: str = Field(description="e.g. env:KALSHI_API_KEY,KALSHI_PRIVATE_KEY")


class Upload(_Model):
    """Upload sealed segments and manifests to S3-compatible storage (needs ``rotation``)."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    access_key_var: str = "AWS_ACCESS_KEY_ID"
    """Names, in the environment's resolved keys, of the credentials (never the values)."""
    secret_key_var: str = "AWS_SECRET_ACCESS_KEY"  # noqa: S105 - a variable's name, not a secret
    delete_after_upload: bool = False
    interval: float = Field(default=10.0, gt=0)


class Storage(_Model):
    type: str
    path: Path
    flush_interval: float = Field(default=1.0, gt=0, le=1.0, description="seconds, at most 1")
    compression: Literal["none", "zstd", "gzip"] = "none"
    """Each flush is one complete zstd frame / gzip member appended to <feed>.jsonl.zst / .gz."""
    compression_level: int | None = Field(default=None, ge=1, le=22)
    upload: Upload | None = None
    rotation: str | None = None
    """``15m``, ``1h``…: sealed segments aligned to the UTC clock, with a manifest; none = one file a day."""

    @field_validator("rotation")
    @classmethod
    def _rotation(cls, value: str | None) -> str | None:
        if value is not None:
            parse_rotation(value)
        return value

    @property
    def rotation_seconds(self) -> int | None:
        return parse_rotation(self.rotation) if self.rotation else None

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in STORAGE_TYPES:
            raise ValueError(f"unknown storage type {value!r} (expected one of: {', '.join(STORAGE_TYPES)})")
        return value


class Discover(_Model):
    """Tickers from REST ``GET /trade-api/v2/markets``, following the cursor."""

    status: str | None = "open"
    series: list[str] = Field(default_factory=list)


class SubscriptionSpec(_Model):
    """What a Kalshi feed subscribes to (ignored by the generic WebSocket connector)."""

    channels: list[str] = Field(default_factory=lambda: list(DEFAULT_CHANNELS), min_length=1)
    markets: list[str] = Field(default_factory=list)
    discover: Discover | None = None
    max_markets_per_connection: int = Field(default=200, ge=1, le=10_000)
    stale_after: float = Field(default=30.0, gt=0, description="seconds without any arriving frame or pong")
    connect_stagger: float = Field(default=0.25, ge=0, description="seconds between opening shards")
    command_timeout: float = Field(default=10.0, gt=0)
    receive_buffer: int = Field(
        default=DEFAULT_RECEIVE_BUFFER, ge=0, description="socket receive buffer (SO_RCVBUF) in bytes; 0 = OS"
    )

    @field_validator("channels")
    @classmethod
    def _known_channels(cls, value: list[str]) -> list[str]:
        unknown = [c for c in value if c not in RECORDABLE_CHANNELS]
        if unknown:
            raise ValueError(
                f"unsupported channel(s) {', '.join(map(repr, unknown))}"
                f" (expected any of: {', '.join(sorted(RECORDABLE_CHANNELS))})"
            )
        return list(dict.fromkeys(value))


class NatsSpec(_Model):
    """Also publish every frame to NATS JetStream (alongside the local archive)."""

    url: str = "nats://127.0.0.1:4222"
    stream: str
    subject_prefix: str = "ssmd"
    create_stream: bool = False

    @field_validator("subject_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$", value):
            raise ValueError(f"expected dot-separated tokens of letters, digits, '_' or '-', got {value!r}")
        return value

    max_pending: int = Field(default=4096, ge=2)
    max_backlog_mb: int = Field(default=256, ge=1)
    """While NATS is down or slow, hold at most this much unacknowledged in memory; then spill to
    disk (``spill_mb``) or, without a spill, pause reading."""
    spill_mb: int = Field(default=0, ge=0)
    """Beyond the memory backlog, queue up to this much on disk under ``<storage.path>/.nats-spill``
    (0: no spill)."""
    publish: Literal["auto", "fast-batch", "per-message"] = "auto"
    """How publishes are acknowledged: ``auto`` uses fast-ingest batches when the stream allows
    them (nats-server >= 2.14, ``allow_batched``), one PubAck per frame otherwise."""


class Environment(_Model):
    name: str
    feed: str
    keys: list[KeySpec] = Field(default_factory=list)
    storage: Storage
    subscription: SubscriptionSpec = Field(default_factory=SubscriptionSpec)
    nats: NatsSpec | None = None

    @field_validator("name", "feed")
    @classmethod
    def _safe(cls, value: str) -> str:
        return check_safe_name(value)


class FeedVersion(_Model):
    version: str
    endpoint: str
    active: bool = False
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra handshake headers; ``${VAR}`` in a value is replaced by the resolved secret VAR."""
    rest_endpoint: str | None = None

    @field_validator("endpoint")
    @classmethod
    def _ws_url(cls, value: str) -> str:
        if not re.match(r"^wss?://[^/\s]+", value):
            raise ValueError(f"expected a ws:// or wss:// URL, got {value!r}")
        return value


class Feed(_Model):
    name: str
    type: Literal["websocket"]
    connector: Literal["websocket", "kalshi"] | None = None
    versions: list[FeedVersion] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _safe(cls, value: str) -> str:
        return check_safe_name(value)

    def active_version(self) -> FeedVersion:
        active = [v for v in self.versions if v.active]
        if len(active) != 1:  # load_feed rejects this; guard direct construction too
            raise ConfigError([f"feed {self.name!r}: expected exactly one active version, found {len(active)}"])
        return active[0]

    @property
    def connector_kind(self) -> str:
        """The connector to use: explicit ``connector``, else inferred from the name."""
        if self.connector is not None:
            return self.connector
        return "kalshi" if self.name.lower().startswith("kalshi") else "websocket"


class LoadedConfig(BaseModel):
    model_config = ConfigDict(frozen=True)
    environment: Environment
    feed: Feed
    environment_file: Path
    feed_file: Path


def _read_yaml(path: Path, label: str) -> Any:
    if not path.is_file():
        raise ConfigError([f"{label}: file not found ({path})"])
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{label}: cannot read file: {exc}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError([f"{label}: YAML syntax error at {where}{exc.problem or exc}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{label}: YAML syntax error: {exc}"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"{label}: expected a mapping at the top level, got {type(data).__name__}"])
    return data


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _describe(error: Any) -> str:
    kind = error["type"]
    if kind == "missing":
        return "missing required field"
    if kind == "value_error":
        return str(error["msg"]).removeprefix("Value error, ")
    given = error.get("input")
    shown = f" (got {type(given).__name__} {given!r})" if not isinstance(given, dict | list) else ""
    return f"{error['msg']}{shown}"


def _validate(model: type[_Model], data: Any, label: str) -> Any:
    try:
        obj = model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([f"{label}: {_loc(e['loc'])}: {_describe(e)}" for e in exc.errors()]) from None
    for path in _unknown_keys(obj):
        log.warning("%s: unknown key %s ignored", label, path)
    return obj


def _unknown_keys(obj: BaseModel, prefix: str = "") -> list[str]:
    found = [f"{prefix}{key}" for key in (obj.model_extra or {})]
    for name in type(obj).model_fields:
        value = getattr(obj, name)
        if isinstance(value, BaseModel):
            found += _unknown_keys(value, f"{prefix}{name}.")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    found += _unknown_keys(item, f"{prefix}{name}[{i}].")
    return found


def load_environment(config_dir: Path, env_name: str) -> tuple[Environment, Path]:
    try:
        check_safe_name(env_name)
    except ValueError as exc:
        raise ConfigError([f"--env: environment name {exc}"]) from None
    path = config_dir / "environments" / f"{env_name}.yaml"
    label = f"environments/{env_name}.yaml"
    env: Environment = _validate(Environment, _read_yaml(path, label), label)
    if env.storage.upload is not None and env.storage.rotation is None:
        raise ConfigError([f"{label}: storage.upload: uploads sealed segments, so storage.rotation must be set"])
    sub = env.subscription
    if ORDERBOOK_DELTA in sub.channels and not sub.markets and sub.discover is None:
        raise ConfigError(
            [f"{label}: subscription: orderbook_delta needs markets (subscription.markets or subscription.discover)"]
        )
    if env.name != env_name:
        log.warning("%s: name %r differs from the file name; using the file's contents", label, env.name)
    if not env.storage.path.is_absolute():
        env = env.model_copy(update={"storage": env.storage.model_copy(update={"path": Path.cwd() / env.storage.path})})
    return env, path


def load_feed(config_dir: Path, feed_name: str) -> tuple[Feed, Path]:
    path = config_dir / "feeds" / f"{feed_name}.yaml"
    label = f"feeds/{feed_name}.yaml"
    feed: Feed = _validate(Feed, _read_yaml(path, label), label)
    problems = []
    if feed.name != feed_name:
        problems.append(f"{label}: name: expected {feed_name!r} (the file name), got {feed.name!r}")
    active = [i for i, v in enumerate(feed.versions) if v.active]
    if not active:
        problems.append(f"{label}: versions: no version has 'active: true' (expected exactly one)")
    elif len(active) > 1:
        listed = ", ".join(f"versions[{i}]" for i in active)
        problems.append(f"{label}: versions: more than one active version ({listed}); expected exactly one")
    if problems:
        raise ConfigError(problems)
    return feed, path


def load(config_dir: Path, env_name: str) -> LoadedConfig:
    """Load and validate an environment and the feed it names."""
    if not config_dir.is_dir():
        raise ConfigError([f"--config-dir: directory not found ({config_dir})"])
    env, env_path = load_environment(config_dir, env_name)
    feed, feed_path = load_feed(config_dir, env.feed)
    return LoadedConfig(environment=env, feed=feed, environment_file=env_path, feed_file=feed_path)
