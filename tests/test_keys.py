from __future__ import annotations

import pytest

from ssmd_connector.errors import MissingKey, UnsupportedKeySource
from ssmd_connector.keys import EnvKeyResolver, resolve_all
from ssmd_connector.secrets import Secret

SECRET = "s3cr3t-value-do-not-print"


def test_env_resolver_returns_every_variable() -> None:
    r = EnvKeyResolver({"A": SECRET, "B": "other"})
    out = r.resolve("env:A, B")
    assert {k: v.reveal() for k, v in out.items()} == {"A": SECRET, "B": "other"}


def test_missing_variable_is_named_and_value_never_shown() -> None:
    r = EnvKeyResolver({"A": SECRET})
    with pytest.raises(MissingKey) as info:
        r.resolve("env:A,B")
    assert "B" in str(info.value)
    assert SECRET not in str(info.value)


def test_empty_variable_is_an_error() -> None:
    with pytest.raises(MissingKey, match="A is set but empty"):
        EnvKeyResolver({"A": ""}).resolve("env:A")


@pytest.mark.parametrize("source", ["vault:x", "file:/etc/key", "A,B", "env:"])
def test_unsupported_sources(source: str) -> None:
    with pytest.raises(UnsupportedKeySource):
        EnvKeyResolver({}).resolve(source)


def test_resolve_all_resolves_every_entry_and_names_the_failing_one() -> None:
    r = EnvKeyResolver({"A": "1", "B": "2", "C": SECRET})
    merged = resolve_all([("one", "env:A"), ("two", "env:B,C")], r)
    assert sorted(merged) == ["A", "B", "C"]
    with pytest.raises(MissingKey, match=r"keys\[1\] \('two'\): environment variable D is not set") as info:
        resolve_all([("one", "env:C"), ("two", "env:D")], r)
    assert SECRET not in str(info.value)


def test_secret_is_masked_everywhere() -> None:
    s = Secret(SECRET)
    assert SECRET not in repr(s)
    assert SECRET not in str(s)
    assert SECRET not in f"{s}"
    assert SECRET not in repr({"k": s})
    assert s.reveal() == SECRET
