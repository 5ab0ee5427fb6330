"""RSA-PSS request signing, as Kalshi specifies it; verification for the simulator.

Kalshi signs ``<ms timestamp><METHOD><path without query>`` with RSA-PSS / SHA-256, MGF1(SHA-256),
salt length = digest length, and sends key id, timestamp and base64 signature in the
``KALSHI-ACCESS-*`` headers. PSS is randomised: a verifier must verify, never compare strings.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ..errors import ConfigError
from ..secrets import Secret

KEY_ID_VAR = "KALSHI_API_KEY"
PRIVATE_KEY_VAR = "KALSHI_PRIVATE_KEY"

H_KEY = "KALSHI-ACCESS-KEY"
H_TIMESTAMP = "KALSHI-ACCESS-TIMESTAMP"
H_SIGNATURE = "KALSHI-ACCESS-SIGNATURE"

_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)


def signing_message(timestamp_ms: int | str, method: str, path: str) -> bytes:
    return f"{timestamp_ms}{method.upper()}{path.split('?', 1)[0]}".encode()


def load_private_key(value: Secret) -> rsa.RSAPrivateKey:
    """PEM text or a path to a PEM file; PKCS#1 or PKCS#8. Errors never quote the key."""
    text = value.reveal()
    if "-----BEGIN" not in text:
        path = Path(text).expanduser()
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(
                [f"{PRIVATE_KEY_VAR}: neither PEM text nor a readable file ({exc.strerror or exc})"]
            ) from None
    else:
        data = text.replace("\\n", "\n").encode()  # tolerate PEMs squeezed into one env line
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ConfigError(
            [f"{PRIVATE_KEY_VAR}: not a readable unencrypted RSA private key in PEM format (PKCS#1 or PKCS#8)"]
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError([f"{PRIVATE_KEY_VAR}: expected an RSA private key, got {type(key).__name__}"])
    return key


class Signer:
    """Signs requests for one API key. Holds the key object, never prints it."""

    def __init__(self, key_id: str, private_key: rsa.RSAPrivateKey) -> None:
        self.key_id = key_id
        self._key = private_key

    def __repr__(self) -> str:
        return f"Signer(key_id={self.key_id!r})"

    def sign(self, timestamp_ms: int, method: str, path: str) -> str:
        signature = self._key.sign(signing_message(timestamp_ms, method, path), _PSS, hashes.SHA256())
        return base64.b64encode(signature).decode()

    def headers(self, method: str, path: str, timestamp_ms: int | None = None) -> dict[str, str]:
        ts = timestamp_ms if timestamp_ms is not None else time.time_ns() // 1_000_000
        return {H_KEY: self.key_id, H_TIMESTAMP: str(ts), H_SIGNATURE: self.sign(ts, method, path)}


def verify(public_key: rsa.RSAPublicKey, timestamp_ms: str, method: str, path: str, signature_b64: str) -> bool:
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        public_key.verify(signature, signing_message(timestamp_ms, method, path), _PSS, hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


def handshake_problem(
    keys: Mapping[str, rsa.RSAPublicKey],
    headers: Mapping[str, str],
    method: str,
    path: str,
    *,
    now: float,
    max_skew: float,
) -> str | None:
    """Why a signed request must be refused (``None``: it is not), as an exchange checks it — the
    server side of :class:`Signer`, shared by the simulator and the replay server. ``now`` is the
    verifier's clock (seconds since the epoch)."""
    key_id, ts, sig = headers.get(H_KEY), headers.get(H_TIMESTAMP), headers.get(H_SIGNATURE)
    if not key_id or not ts or not sig:
        return "missing KALSHI-ACCESS-* headers"
    if key_id not in keys:
        return "unknown API key id"
    if not ts.isdigit() or abs(int(ts) / 1000 - now) > max_skew:
        return "timestamp outside the allowed window"
    if not verify(keys[key_id], ts, method, path, sig):
        return "INCORRECT_API_KEY_SIGNATURE"
    return None


def unauthorized_body(details: str) -> dict[str, Any]:
    """The JSON body of Kalshi's 401 answer."""
    return {"error": {"code": "authentication_error", "message": "authentication error", "details": details}}


def generate_key_pair() -> tuple[rsa.RSAPrivateKey, str]:
    """A fresh 2048-bit key and its PKCS#1 PEM text (what Kalshi's key download looks like)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    return key, pem


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def load_public_key(pem: bytes) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, rsa.RSAPublicKey):
        raise TypeError("not an RSA public key")
    return key
