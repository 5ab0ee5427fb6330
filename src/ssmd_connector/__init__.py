"""ssmd-connector: a market-data recorder for Kalshi.

Data flow: config → keys → connector (frames enter in ``connectors/``, are stamped in
``pipeline.Intake``) → runner (bounded queue, reconnects) → writers (lines built in
``archive.line.LineEncoder``, landing in ``writers/``) → server (health and metrics).
"""

from ._version import __version__
from .archive.line import LineEncoder, decode_frame
from .errors import (
    AuthenticationFailed,
    ConfigError,
    ConnectionFailed,
    Disconnected,
    MissingKey,
    SsmdError,
    UnsupportedKeySource,
    WriteFailed,
)
from .interfaces import Connector, FrameSink, KeyResolver, Writer
from .message import Message
from .secrets import Secret

__all__ = [
    "AuthenticationFailed",
    "ConfigError",
    "ConnectionFailed",
    "Connector",
    "Disconnected",
    "FrameSink",
    "KeyResolver",
    "LineEncoder",
    "Message",
    "MissingKey",
    "Secret",
    "SsmdError",
    "UnsupportedKeySource",
    "WriteFailed",
    "Writer",
    "__version__",
    "decode_frame",
]
