"""Client requests, validation and the official reply texts (sans I/O)."""

import orjson
import pytest

from hlbook.server.protocol import (
    BboSub,
    Health,
    L2BookSub,
    L4BookSub,
    Ping,
    ProtocolError,
    Subscribe,
    TradesSub,
    Unsubscribe,
    already,
    error_message,
    parse_request,
    pong_message,
    subscription_response,
    too_many,
)


def sub(subscription: dict[str, object], method: str = "subscribe") -> str:
    return orjson.dumps({"method": method, "subscription": subscription}).decode()


def test_l2book_defaults_and_echo() -> None:
    request = parse_request(sub({"type": "l2Book", "coin": "BTC"}))
    assert request == Subscribe(
        L2BookSub("BTC"),
        {"type": "l2Book", "coin": "BTC", "nSigFigs": None, "mantissa": None},
    )
    assert isinstance(request, Subscribe)
    assert isinstance(request.subscription, L2BookSub)
    assert request.subscription.n_levels == 20


def test_echo_keeps_the_clients_keys_and_order() -> None:
    raw = {"coin": "ETH", "type": "l2Book", "nLevels": 5, "nSigFigs": 5, "mantissa": 2}
    request = parse_request(sub(raw))
    assert isinstance(request, Subscribe)
    assert request.subscription == L2BookSub("ETH", 5, 2, 5)
    assert list(request.echo) == ["coin", "type", "nLevels", "nSigFigs", "mantissa"]
    reply = orjson.loads(subscription_response("subscribe", request.echo))
    assert reply == {
        "channel": "subscriptionResponse",
        "data": {"method": "subscribe", "subscription": raw},
    }


@pytest.mark.parametrize(
    ("subscription", "expected"),
    [
        ({"type": "bbo", "coin": "@107"}, BboSub("@107")),
        ({"type": "trades", "coin": "xyz:XYZ100"}, TradesSub("xyz:XYZ100")),
        ({"type": "l4Book", "coin": "PURR/USDC"}, L4BookSub("PURR/USDC")),
        ({"type": "l2Book", "coin": "BTC", "nSigFigs": 2}, L2BookSub("BTC", 2)),
        ({"type": "l2Book", "coin": "BTC", "nSigFigs": 5, "mantissa": 5}, L2BookSub("BTC", 5, 5)),
        ({"type": "l2Book", "coin": "BTC", "nSigFigs": None, "mantissa": None}, L2BookSub("BTC")),
        ({"type": "l2Book", "coin": "BTC", "nLevels": 100}, L2BookSub("BTC", n_levels=100)),
    ],
)
def test_valid_subscriptions(subscription: dict[str, object], expected: object) -> None:
    request = parse_request(sub(subscription))
    assert isinstance(request, Subscribe)
    assert request.subscription == expected
    undo = parse_request(sub(subscription, "unsubscribe"))
    assert isinstance(undo, Unsubscribe)
    assert undo.subscription == expected


@pytest.mark.parametrize(
    "subscription",
    [
        {"type": "l2Book", "coin": "BTC", "nSigFigs": 1},
        {"type": "l2Book", "coin": "BTC", "nSigFigs": 6},
        {"type": "l2Book", "coin": "BTC", "nSigFigs": "5"},
        {"type": "l2Book", "coin": "BTC", "nSigFigs": 5.0},
        {"type": "l2Book", "coin": "BTC", "nSigFigs": True},
        {"type": "l2Book", "coin": "BTC", "nSigFigs": 4, "mantissa": 2},
        {"type": "l2Book", "coin": "BTC", "mantissa": 2},
        {"type": "l2Book", "coin": "BTC", "nSigFigs": 5, "mantissa": 3},
        {"type": "l2Book", "coin": "BTC", "nLevels": 0},
        {"type": "l2Book", "coin": "BTC", "nLevels": 101},
        {"type": "l2Book"},
        {"type": "l2Book", "coin": 5},
        {"type": "candle", "coin": "BTC", "interval": "1m"},
        {"type": "allMids"},
        {"coin": "BTC"},
    ],
)
def test_invalid_subscriptions_get_the_official_text_with_valid_json(
    subscription: dict[str, object],
) -> None:
    request = parse_request(sub(subscription))
    assert isinstance(request, ProtocolError)
    prefix = "Invalid subscription: "
    assert request.text.startswith(prefix)
    assert orjson.loads(request.text[len(prefix) :]) == subscription


@pytest.mark.parametrize(
    "message",
    [
        "not json",
        "{",
        "[]",
        "42",
        '"ping"',
        '{"method": "subscribe"}',
        '{"method": "subscribe", "subscription": "l2Book"}',
        '{"method": "frobnicate"}',
        '{"subscription": {"type": "bbo", "coin": "BTC"}}',
        b"\xff\xfe\x00",
    ],
)
def test_garbage_gets_the_parse_error_text(message: str | bytes) -> None:
    request = parse_request(message)
    assert isinstance(request, ProtocolError)
    assert request.text.startswith("Error parsing JSON into valid websocket request: ")
    # The error message itself is always valid JSON.
    assert orjson.loads(error_message(request.text))["channel"] == "error"


def test_long_garbage_is_truncated_in_the_error() -> None:
    request = parse_request("x" * 100_000)
    assert isinstance(request, ProtocolError)
    assert len(request.text) < 1000


def test_long_json_is_echoed_whole_so_it_stays_valid_json() -> None:
    message = orjson.dumps({"method": "bar", "pad": "x" * 2000}).decode()
    request = parse_request(message)
    assert isinstance(request, ProtocolError)
    embedded = request.text.removeprefix("Error parsing JSON into valid websocket request: ")
    assert orjson.loads(embedded) == {"method": "bar", "pad": "x" * 2000}


def test_ping_health_and_extra_keys() -> None:
    assert parse_request('{"method":"ping","id":7}') == Ping()
    assert parse_request('{"method":"health"}') == Health()
    assert pong_message() == '{"channel":"pong"}'


def test_reply_texts() -> None:
    echo = {"type": "trades", "coin": "BTC"}
    assert already(True, echo) == 'Already subscribed: {"type":"trades","coin":"BTC"}'
    assert already(False, echo) == 'Already unsubscribed: {"type":"trades","coin":"BTC"}'
    assert too_many(1000) == "Cannot subscribe to more than 1000 channels."
    assert orjson.loads(error_message('quote " and \\')) == {
        "channel": "error",
        "data": 'quote " and \\',
    }
