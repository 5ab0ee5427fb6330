"""Configuration: ``DIR/environments/NAME.yaml`` and ``DIR/feeds/FEED.yaml``.

Loading collects *every* problem of both files, each as one line naming the file, the field and
what was expected, so a user fixes the files in one pass — and catches them before anything
connects: URLs are parsed in full (scheme, host, IPv6 literal, port range), the storage path must
be a directory (or creatable) that a file can really be written to, names must be safe file
names in full, header values may not carry control characters, and a key given twice in one
mapping is an error (YAML would silently keep the last). Unknown keys are tolerated (real files
carry extra blocks for other tools) and reported as warnings.

A relative ``storage.path`` is resolved against the current working directory of the process;
``~`` and ``~user`` are expanded.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .archive.layout import parse_rotation
from .errors import ConfigError
from .kalshi.wire import DEFAULT_CHANNELS, RECORDABLE_CHANNELS, needs_markets
from .keys import SUPPORTED_SCHEMES
from .secrets import HEADER_CONTROL, SECRET_REF
from .settings import DEFAULT_RECEIVE_BUFFER

log = logging.getLogger(__name__)

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""Names that become path components: no separators, no '..', no leading dot or dash. Matched in
full (``fullmatch``: ``$`` would also match before a trailing newline)."""

STORAGE_TYPES = ("local",)
CONNECTORS = ("websocket", "kalshi")

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
"""An HTTP header name (RFC 9110 token)."""


def check_safe_name(value: str) -> str:
    if not SAFE_NAME.fullmatch(value) or ".." in value:
        raise ValueError(
            "must be a safe file name: letters, digits, '.', '_' or '-', not starting with '.' "
            f"or '-', no '..', no control characters (got {value!r})"
        )
    return value


def check_url(value: str, schemes: tuple[str, ...]) -> str:
    """A URL parsed in full: one of ``schemes``, a host (an IPv6 literal in brackets must be a
    valid address), a port in 1-65535 if given, no credentials, no whitespace or control
    characters."""
    expected = " or ".join(f"{s}://" for s in schemes)
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"expected a {expected} URL without spaces or control characters, got {value!r}")
    try:
        url = urlsplit(value)
        port = url.port
    except ValueError as exc:  # "Invalid IPv6 URL", "Port out of range 0-65535", "Port could not be cast…"
        raise ValueError(f"expected a {expected} URL, got {value!r}: {exc}") from None
    if url.scheme not in schemes:
        raise ValueError(f"expected a {expected} URL, got {value!r}")
    if not url.hostname:
        raise ValueError(f"expected a {expected} URL with a host, got {value!r}")
    if url.netloc.startswith("[") or ":" in url.hostname:
        try:
            ipaddress.IPv6Address(url.hostname)
        except ValueError:
            raise ValueError(f"{value!r}: {url.hostname!r} is not a valid IPv6 address") from None
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"{value!r}: port {port} is out of range (1-65535)")
    if url.username is not None or url.password is not None:
        raise ValueError(f"{value!r}: credentials in a URL end up in logs; put them in headers with ${{VAR}}")
    return value


def check_storage_path(path: Path) -> str | None:
    """Why the recorder could not write under ``path``, or ``None``: it must be a directory, or
    not exist yet below a directory; either way a file must really be creatable there (proved
    with a temporary file: permissions alone do not show a read-only filesystem). A symbolic
    link on the way that points nowhere (a disk not mounted) is refused, not written around."""
    try:
        probe = path
        while not probe.exists():
            if probe.is_symlink():
                return f"{probe} is a symbolic link to {os.readlink(probe)}, which does not exist (not mounted?)"
            if probe.parent == probe:
                break
            probe = probe.parent
        if path.exists() and not path.is_dir():
            return f"{path} exists and is not a directory"
        if not probe.is_dir():
            return f"{path} cannot be created: {probe} is not a directory"
    except OSError as exc:  # e.g. a name too long, a loop of links
        return f"{path} cannot be used: {exc.strerror or exc}"
    try:
        fd, name = tempfile.mkstemp(prefix=".ssmd-write-test-", dir=probe)
        try:
            os.write(fd, b"x")
        finally:
            os.close(fd)
            os.unlink(name)
    except OSError as exc:
        where = "" if probe == path else f" ({path} does not exist; {probe} is where it would be created)"
        return f"{path} is not writable{where}: {exc.strerror or exc}"
    return None


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
    """Absolute, or relative to the working directory; ``~`` is expanded. Checked to be writable."""
    flush_interval: float = Field(default=1.0, gt=0, le=1.0, description="seconds, at most 1")
    compression: Literal["none", "zstd", "gzip"] = "none"
    """Each flush is one complete zstd frame / gzip member appended to <feed>.jsonl.zst / .gz."""
    compression_level: int | None = Field(default=None, ge=1, le=22)
    """zstd 1-22, gzip 1-9."""
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

    @field_validator("path", mode="before")
    @classmethod
    def _path(cls, value: Any) -> Any:
        if isinstance(value, str):
            if not value.strip():
                raise ValueError("expected a directory path, got an empty string")
            if "\x00" in value:
                raise ValueError(f"a path cannot contain a NUL character (got {value!r})")
            if value.startswith("~"):
                expanded = os.path.expanduser(value)
                if expanded.startswith("~"):
                    raise ValueError(f"cannot expand {value!r}: no such user, or no home directory")
                return expanded
        return value

    @model_validator(mode="after")
    def _level_fits_codec(self) -> Storage:
        level = self.compression_level
        if level is not None and self.compression == "gzip" and level > 9:
            raise ValueError(f"compression_level {level} is out of range for gzip (1-9)")
        return self

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in STORAGE_TYPES:
            raise ValueError(f"unknown storage type {value!r} (expected one of: {', '.join(STORAGE_TYPES)})")
        return value


DISCOVER_STATUSES = ("unopened", "open", "paused", "closed", "settled")


class Discover(_Model):
    """Markets from REST ``GET /trade-api/v2/markets`` (every page), followed while recording:
    new ones added as Kalshi lists them, settled ones released."""

    status: list[str] | None = Field(default_factory=lambda: ["unopened", "open"])
    """One status or a list (``null``: every status)."""
    series: list[str] = Field(default_factory=list)
    refresh: float = Field(default=300.0, gt=0, description="seconds between REST re-discoveries")
    combos: bool = Field(default=False, description="include combo (multivariate) markets")

    @field_validator("status", mode="before")
    @classmethod
    def _one_or_more(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("status")
    @classmethod
    def _known_statuses(cls, value: list[str] | None) -> list[str] | None:
        unknown = [v for v in value or [] if v not in DISCOVER_STATUSES]
        if unknown:
            raise ValueError(f"unknown status {unknown[0]!r} (expected some of: {', '.join(DISCOVER_STATUSES)})")
        return value


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
        default=DEFAULT_RECEIVE_BUFFER,
        ge=0,
        le=2**31 - 1,
        description="socket receive buffer (SO_RCVBUF) in bytes; 0 = OS",
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
        return check_url(value, ("ws", "wss"))

    @field_validator("rest_endpoint")
    @classmethod
    def _rest_url(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value, ("http", "https"))

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _TOKEN.fullmatch(name):
                raise ValueError(f"{name!r} is not a valid HTTP header name")
            if HEADER_CONTROL.search(text):
                raise ValueError(f"{name}: a header value cannot contain CR, LF, NUL or other control characters")
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


class _Duplicate(yaml.constructor.ConstructorError):
    pass


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (the default keeps the last
    silently: a second ``storage:`` block would replace the first without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:
                continue  # an unhashable key: the base class reports it
            if first is not None:
                raise _Duplicate(
                    None,
                    None,
                    f"duplicate key {key!r} (first given at line {first.start_mark.line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep)


def _read_yaml(path: Path, label: str) -> Any:
    if not path.is_file():
        raise ConfigError([f"{label}: file not found ({path})"])
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{label}: cannot read file: {exc}"]) from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        if isinstance(exc, _Duplicate):
            raise ConfigError([f"{label}: {where}{exc.problem} — a key may appear once in a mapping"]) from None
        raise ConfigError([f"{label}: YAML syntax error at {where}{exc.problem or exc}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{label}: YAML syntax error: {exc}"]) from None
    except RecursionError:
        raise ConfigError([f"{label}: YAML nested too deeply to be a configuration file"]) from None
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
    problems = []
    if env.storage.upload is not None and env.storage.rotation is None:
        problems.append(f"{label}: storage.upload: uploads sealed segments, so storage.rotation must be set")
    sub = env.subscription
    if any(needs_markets(c) for c in sub.channels) and not sub.markets and sub.discover is None:
        problems.append(
            f"{label}: subscription: orderbook_delta needs markets (subscription.markets or subscription.discover)"
        )
    if env.name != env_name:
        log.warning("%s: name %r differs from the file name; using the file's contents", label, env.name)
    if not env.storage.path.is_absolute():
        env = env.model_copy(update={"storage": env.storage.model_copy(update={"path": Path.cwd() / env.storage.path})})
    unusable = check_storage_path(env.storage.path)
    if unusable:
        problems.append(f"{label}: storage.path: {unusable}")
    if problems:
        raise ConfigError(problems)
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
    """Load and validate an environment and the feed it names; every problem of both at once."""
    if not config_dir.is_dir():
        raise ConfigError([f"--config-dir: directory not found ({config_dir})"])
    problems: list[str] = []
    env: Environment | None = None
    try:
        env, env_path = load_environment(config_dir, env_name)
        feed_name: str | None = env.feed
    except ConfigError as exc:
        problems += exc.problems
        feed_name = _feed_named_by(config_dir, env_name)
    feed: Feed | None = None
    if feed_name is not None:
        try:
            feed, feed_path = load_feed(config_dir, feed_name)
        except ConfigError as exc:
            problems += exc.problems
    if env is not None and feed is not None:
        problems += _key_references(env, feed)
    if problems or env is None or feed is None:
        raise ConfigError(problems)
    return LoadedConfig(environment=env, feed=feed, environment_file=env_path, feed_file=feed_path)


def _key_references(env: Environment, feed: Feed) -> list[str]:
    """Key sources of a known scheme, and every ``${VAR}`` of the feed's headers among them —
    checked without resolving anything, so ``ssmd validate`` catches what start-up would."""
    env_label, feed_label = f"environments/{env.name}.yaml", f"feeds/{feed.name}.yaml"
    problems = []
    names: set[str] = set()
    for i, key in enumerate(env.keys):
        scheme, sep, rest = key.source.partition(":")
        listed = [n.strip() for n in rest.split(",") if n.strip()]
        if not sep or scheme.strip() not in SUPPORTED_SCHEMES:
            problems.append(
                f"{env_label}: keys[{i}].source: unsupported key source {scheme.strip()!r} "
                f"(expected 'env:VAR1,VAR2'; supported schemes: {', '.join(SUPPORTED_SCHEMES)})"
            )
        elif not listed:
            problems.append(f"{env_label}: keys[{i}].source: names no variables (expected 'env:VAR1,VAR2')")
        names.update(listed)
    for i, version in enumerate(feed.versions):
        for header, value in version.headers.items():
            problems += [
                f"{feed_label}: versions[{i}].headers.{header}: ${{{var}}} is not among the environment's keys "
                f"({env_label}: keys)"
                for var in SECRET_REF.findall(value)
                if var not in names
            ]
    return problems


def _feed_named_by(config_dir: Path, env_name: str) -> str | None:
    """The feed an environment file names, even when the file has other problems (so those of
    the feed file are reported in the same run); ``None`` when it names none usable."""
    try:
        check_safe_name(env_name)
        data = yaml.safe_load((config_dir / "environments" / f"{env_name}.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError, RecursionError):
        return None
    name = data.get("feed") if isinstance(data, dict) else None
    if not isinstance(name, str):
        return None
    try:
        return check_safe_name(name)
    except ValueError:
        return None
