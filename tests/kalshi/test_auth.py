"""RSA-PSS signing as Kalshi specifies it, and key loading from PEM text or file."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from ssmd_connector.errors import ConfigError
from ssmd_connector.kalshi.auth import Signer, generate_key_pair, load_private_key, signing_message, verify
from ssmd_connector.secrets import Secret

KEY, PKCS1 = generate_key_pair()
PKCS8 = KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()


def test_signing_message_is_timestamp_method_path_without_query() -> None:
    assert signing_message(1703123456789, "get", "/trade-api/ws/v2?x=1") == b"1703123456789GET/trade-api/ws/v2"


def test_signature_is_pss_sha256_with_digest_length_salt() -> None:
    signer = Signer("key-1", KEY)
    headers = signer.headers("GET", "/trade-api/ws/v2", timestamp_ms=1703123456789)
    assert headers["KALSHI-ACCESS-KEY"] == "key-1"
    assert headers["KALSHI-ACCESS-TIMESTAMP"] == "1703123456789"
    sig = base64.b64decode(headers["KALSHI-ACCESS-SIGNATURE"])
    # Verify independently with exactly Kalshi's parameters (raises if anything differs).
    KEY.public_key().verify(
        sig,
        b"1703123456789GET/trade-api/ws/v2",
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
        hashes.SHA256(),
    )
    assert verify(KEY.public_key(), "1703123456789", "GET", "/trade-api/ws/v2", headers["KALSHI-ACCESS-SIGNATURE"])
    assert not verify(KEY.public_key(), "1703123456790", "GET", "/trade-api/ws/v2", headers["KALSHI-ACCESS-SIGNATURE"])
    other, _ = generate_key_pair()
    assert not verify(
        other.public_key(), "1703123456789", "GET", "/trade-api/ws/v2", headers["KALSHI-ACCESS-SIGNATURE"]
    )
    assert not verify(KEY.public_key(), "1", "GET", "/x", "not base64!")


def test_signatures_are_randomised_and_fresh_per_call() -> None:
    signer = Signer("k", KEY)
    assert signer.sign(1, "GET", "/p") != signer.sign(1, "GET", "/p")


@pytest.mark.parametrize("pem", [PKCS1, PKCS8], ids=["pkcs1", "pkcs8"])
def test_loads_pem_text_and_files(tmp_path: Path, pem: str) -> None:
    assert load_private_key(Secret(pem)).key_size == 2048
    path = tmp_path / "key.pem"
    path.write_text(pem)
    assert load_private_key(Secret(str(path))).key_size == 2048
    assert load_private_key(Secret(pem.replace("\n", "\\n"))).key_size == 2048


def test_bad_keys_are_config_errors_that_never_quote_the_key(tmp_path: Path) -> None:
    broken = PKCS1[:200] + "garbage" + PKCS1[220:]
    with pytest.raises(ConfigError) as info:
        load_private_key(Secret(broken))
    assert "KALSHI_PRIVATE_KEY: not a readable" in str(info.value)
    assert PKCS1[40:80] not in str(info.value)
    with pytest.raises(ConfigError, match="neither PEM text nor a readable file"):
        load_private_key(Secret(str(tmp_path / "missing.pem")))


def test_signer_repr_hides_the_key() -> None:
    assert "PRIVATE" not in repr(Signer("k", KEY))


def test_the_exchange_side_check_names_what_is_wrong_with_a_handshake() -> None:
    """The server side of signing, shared by the simulator and the replay server, on its own clock."""
    from ssmd_connector.kalshi.auth import handshake_problem  # noqa: PLC0415

    key, _ = generate_key_pair()
    signer = Signer("k1", key)
    keys = {"k1": key.public_key()}
    headers = signer.headers("GET", "/trade-api/ws/v2", timestamp_ms=1_000_000)

    def check(h: dict[str, str], now: float = 1_000.0, path: str = "/trade-api/ws/v2") -> str | None:
        return handshake_problem(keys, h, "GET", path, now=now, max_skew=5)

    assert check(headers) is None
    assert check({}) == "missing KALSHI-ACCESS-* headers"
    assert check({**headers, "KALSHI-ACCESS-KEY": "k2"}) == "unknown API key id"
    assert check(headers, now=1_006.0) == "timestamp outside the allowed window"
    assert check(headers, path="/trade-api/v2/markets") == "INCORRECT_API_KEY_SIGNATURE"
