"""Every message type the simulator emits validates against Kalshi's own JSON Schemas.

The schemas come from Kalshi's AsyncAPI spec (an exact copy in tests/data). One documented
discrepancy is relaxed: the spec's ``marketTicker`` pattern ``^[A-Z0-9-]+$`` rejects the ``.``
that real tickers carry, including the spec's own examples (``FED-23DEC-T3.00``), so the test
allows ``.``; every other constraint stands.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from ssmd_connector.sim import SimConfig, SimServer

from ..simclient import SimClient, reply_to

SPEC = Path(__file__).resolve().parents[1] / "data" / "kalshi-asyncapi.yaml"


def validator_factory() -> Callable[[str], jsonschema.protocols.Validator]:
    doc = yaml.safe_load(SPEC.read_text())
    schemas = doc["components"]["schemas"]
    assert schemas["marketTicker"]["pattern"] == "^[A-Z0-9-]+$"  # the discrepancy is still there
    schemas["marketTicker"]["pattern"] = "^[A-Z0-9.-]+$"
    registry: Registry[Any] = Registry().with_resource(
        "urn:kalshi", Resource.from_contents(doc, default_specification=DRAFT202012)
    )

    def make(name: str) -> jsonschema.protocols.Validator:
        assert name in schemas, name
        return jsonschema.Draft202012Validator(
            {"$ref": f"urn:kalshi#/components/schemas/{name}"},
            registry=registry,
            format_checker=jsonschema.FormatChecker(),
        )

    return make


def schema_for(frame: dict[str, Any]) -> str:
    kind = frame["type"]
    if kind == "ok" and isinstance(frame.get("msg"), list):
        return "listSubscriptionsResponsePayload"
    if kind == "market_lifecycle_v2" and frame["msg"].get("event_type") == "metadata_updated":
        return "marketMetadataUpdatedPayload"
    return {
        "subscribed": "subscribedResponsePayload",
        "unsubscribed": "unsubscribedResponsePayload",
        "ok": "okResponsePayload",
        "error": "errorResponsePayload",
        "orderbook_snapshot": "orderbookSnapshotPayload",
        "orderbook_delta": "orderbookDeltaPayload",
        "ticker": "tickerPayload",
        "trade": "tradePayload",
        "market_lifecycle_v2": "marketLifecycleV2Payload",
        "event_lifecycle": "eventLifecyclePayload",
    }[kind]


async def test_every_message_type_validates_against_kalshis_schemas() -> None:
    sim = SimServer(SimConfig(port=0, markets=30, rate=6000, seed=3))
    await sim.start()
    client = await SimClient.connect(sim)
    try:
        tickers = sim.model.open_tickers[:8]
        cid = await client.cmd(
            "subscribe", {"channels": ["orderbook_delta", "ticker", "trade"], "market_tickers": tickers}
        )
        ob = (await client.until(reply_to(cid, "subscribed")))["msg"]["sid"]
        await client.cmd("subscribe", {"channels": ["market_lifecycle_v2"]})
        await client.collect(2.0)
        cid = await client.cmd(
            "update_subscription", {"sid": ob, "action": "add_markets", "market_tickers": sim.model.open_tickers[8:10]}
        )
        await client.until(reply_to(cid, "ok"))
        cid = await client.cmd("update_subscription", {"sid": ob, "action": "get_snapshot"})
        await client.until(reply_to(cid, "orderbook_snapshot"))
        cid = await client.cmd("list_subscriptions")
        await client.until(reply_to(cid, "ok"))
        cid = await client.cmd("subscribe", {"channels": ["bogus"]})
        await client.until(reply_to(cid, "error"))
        await sim.inject("error25")
        await client.until(lambda f: f.get("type") == "error" and f["msg"]["code"] == 25)
        cid = await client.cmd("unsubscribe", {"sids": [ob + 1]})
        await client.until(reply_to(cid, "unsubscribed"))
    finally:
        await client.close()
        await sim.stop()

    make = validator_factory()
    validators: dict[str, jsonschema.protocols.Validator] = {}
    seen: dict[str, int] = {}
    lifecycle_kinds: set[str] = set()
    for frame in client.frames:
        if "_ping" in frame:
            continue
        name = schema_for(frame)
        validator = validators.setdefault(name, make(name))
        errors = sorted(validator.iter_errors(frame), key=str)
        assert not errors, (name, frame, [e.message for e in errors[:3]])
        seen[name] = seen.get(name, 0) + 1
        if frame["type"] == "market_lifecycle_v2":
            lifecycle_kinds.add(frame["msg"]["event_type"])
    assert set(seen) == {
        "subscribedResponsePayload",
        "unsubscribedResponsePayload",
        "okResponsePayload",
        "listSubscriptionsResponsePayload",
        "errorResponsePayload",
        "orderbookSnapshotPayload",
        "orderbookDeltaPayload",
        "tickerPayload",
        "tradePayload",
        "marketLifecycleV2Payload",
    }, seen
    assert lifecycle_kinds & {"close_date_updated", "deactivated"}, lifecycle_kinds
    assert any("." in t for t in sim.model.open_tickers)  # the relaxed pattern is exercised


async def test_a_living_universes_lifecycle_validates_too() -> None:
    """New events and markets, determinations, settlements, metadata and price-structure updates,
    as the living simulator sends them. Newer than the spec copy, following Kalshi's documentation:
    a top-level ``sending_ts_ms`` (the schemas allow extra members, so they accept it; asserted
    here so that stays true) and sub-penny ``deci_cent`` markets."""
    sim = SimServer(SimConfig(port=0, markets=5, rate=4000, churn=40, lifetime=1.0))
    await sim.start()
    client = await SimClient.connect(sim)
    kinds: set[str] = set()
    try:
        cid = await client.cmd("subscribe", {"channels": ["market_lifecycle_v2"]})
        await client.until(reply_to(cid, "subscribed"))

        def everything(frame: dict[str, Any]) -> bool:
            if frame.get("type") == "market_lifecycle_v2":
                kinds.add(frame["msg"]["event_type"])
            wanted = {"created", "determined", "settled", "metadata_updated", "price_level_structure_updated"}
            return wanted <= kinds

        await client.until(everything, timeout=20)
    finally:
        await client.close()
        await sim.stop()
    make = validator_factory()
    checked: dict[str, int] = {}
    for frame in client.frames:
        if "_ping" in frame or frame["type"] == "subscribed":
            continue
        name = schema_for(frame)
        errors = sorted(make(name).iter_errors(frame), key=str)
        assert not errors, (name, frame, [e.message for e in errors[:3]])
        checked[name] = checked.get(name, 0) + 1
    assert checked.get("eventLifecyclePayload", 0) >= 1 and checked["marketLifecycleV2Payload"] >= 3, checked
    assert checked.get("marketMetadataUpdatedPayload", 0) >= 1, checked
    lifecycle = [f for f in client.frames if f.get("type") == "market_lifecycle_v2"]
    assert all(isinstance(f.get("sending_ts_ms"), int) for f in lifecycle)
    structures = {f["msg"].get("price_level_structure") for f in lifecycle} - {None}
    assert "deci_cent" in structures, structures
