"""One WebSocket client's protocol (sans I/O): requests in with explicit times, replies out."""

import math
from typing import Any

import orjson
import pytest
from fixtures import block as make_block
from fixtures import new, status

from hlbook.book.books import Books
from hlbook.server.fanout import SLOW_CLIENT_CODE, ClientQueue, Hub
from hlbook.server.session import Action, RunInfo, Session, SessionLimits, bounded_echo

PARSE = "Error parsing JSON into valid websocket request: "


def loaded_books() -> Books:
    books = Books(9)
    books.apply(
        make_block(
            10,
            statuses=[status(1, "open", px="100.0")],
            diffs=[new(1, px="100.0", sz="1.0"), new(2, side="A", px="101.0", sz="2.0")],
        )
    )
    return books


class Harness:
    """A session over a real hub and queue; ``books`` may be loaded later."""

    def __init__(self, books: Books | None = None, **limits: Any) -> None:
        self.books = books
        self.hub = Hub()
        self.client = ClientQueue(**limits.pop("queue", {}))
        self.session = Session(
            self.client,
            self.hub,
            books=lambda: self.books,
            health=lambda: {"status": "live"},
            limits=SessionLimits(**limits),
            now=0.0,
        )

    def send(self, message: Any, now: float = 1.0) -> list[Action]:
        data = message if isinstance(message, str | bytes) else orjson.dumps(message)
        return self.session.receive(data, now)

    def replies(self) -> list[Any]:
        out = []
        while (message := self.client.pop()) is not None:
            out.append(orjson.loads(message.payload))
        return out


def subscribe(kind: str, coin: str = "BTC", method: str = "subscribe", **extra: Any) -> Any:
    return {"method": method, "subscription": {"type": kind, "coin": coin, **extra}}


def test_ping_is_answered_exactly_and_extra_keys_are_ignored() -> None:
    harness = Harness(loaded_books())
    harness.send({"method": "ping", "id": 7})
    [message] = [harness.client.pop()]
    assert message is not None
    assert message.payload == b'{"channel":"pong"}'


def test_subscribe_replies_then_first_message_and_echo_is_verbatim() -> None:
    harness = Harness(loaded_books())
    harness.send(subscribe("l2Book", nSigFigs=5, mantissa=2))
    response, book = harness.replies()
    assert response == {
        "channel": "subscriptionResponse",
        "data": {
            "method": "subscribe",
            "subscription": {"type": "l2Book", "coin": "BTC", "nSigFigs": 5, "mantissa": 2},
        },
    }
    assert book["channel"] == "l2Book"
    assert book["data"]["levels"][0] == [{"px": "100.0", "sz": "1.0", "n": 1}]


def test_official_error_texts() -> None:
    harness = Harness(loaded_books(), max_subscriptions=2)
    harness.send(subscribe("trades"))
    harness.send(subscribe("trades"))
    harness.send(subscribe("bbo", "NOPE"))
    harness.send(subscribe("bbo", method="unsubscribe"))
    harness.send(subscribe("bbo"))
    harness.send(subscribe("l4Book"))
    errors = [m["data"] for m in harness.replies() if m["channel"] == "error"]
    assert errors == [
        'Already subscribed: {"type":"trades","coin":"BTC"}',
        'Invalid subscription: {"type":"bbo","coin":"NOPE"}',
        'Already unsubscribed: {"type":"bbo","coin":"BTC"}',
        "Cannot subscribe to more than 2 channels.",
    ]
    assert harness.session.stats.protocol_errors == 4


def test_an_unknown_coin_echo_includes_the_added_nulls() -> None:
    harness = Harness(loaded_books())
    harness.send(subscribe("l2Book", "NOPE"))
    [error] = harness.replies()
    embedded = error["data"].removeprefix("Invalid subscription: ")
    assert orjson.loads(embedded) == {
        "type": "l2Book",
        "coin": "NOPE",
        "nSigFigs": None,
        "mantissa": None,
    }


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
    harness = Harness(loaded_books())
    harness.send(message)
    [error] = harness.replies()  # the reply itself is valid JSON (it parsed)
    assert error["channel"] == "error"
    assert error["data"].startswith(PARSE)


def test_invalid_subscriptions_echo_the_object_as_valid_json() -> None:
    harness = Harness(loaded_books())
    raw = {"type": "l2Book", "coin": "BTC", "nSigFigs": 7}
    harness.send({"method": "subscribe", "subscription": raw})
    [error] = harness.replies()
    assert orjson.loads(error["data"].removeprefix("Invalid subscription: ")) == raw


def test_oversized_input_is_echoed_short_and_still_valid_json() -> None:
    harness = Harness(loaded_books())
    harness.send("x" * 60_000)
    harness.send({"method": "bar", "pad": "x" * 60_000, "list": list(range(10_000))})
    harness.send({"method": "subscribe", "subscription": {"type": "l2Book", "pad": "y" * 60_000}})
    garbage, long_json, long_sub = (m["data"] for m in harness.replies())
    assert len(garbage) < 1000
    assert len(long_json) < 1000
    assert len(long_sub) < 1000
    echoed = orjson.loads(long_json.removeprefix(PARSE))
    assert echoed["method"] == "bar"
    assert echoed["pad"].startswith("x")
    assert orjson.loads(long_sub.removeprefix("Invalid subscription: "))["type"] == "l2Book"


def test_json_nested_deeper_than_orjson_writes_is_an_error_reply() -> None:
    # orjson reads 1024 levels but writes ~254: the echo of such a request must not fail.
    harness = Harness(loaded_books())
    deep = '{"a":' * 300 + "1" + "}" * 300
    harness.send(deep)
    harness.send('{"method":"subscribe","subscription":' + deep + "}")
    harness.send('{"method":"ping"}')
    garbage, subscription, pong = harness.replies()
    assert garbage["channel"] == "error"
    assert garbage["data"].startswith(PARSE)
    orjson.loads(garbage["data"].removeprefix(PARSE))  # a shortened, valid echo
    assert subscription["channel"] == "error"
    assert pong == {"channel": "pong"}  # the session goes on


def test_bounded_echo_is_always_valid_json() -> None:
    nested: Any = "z" * 1000
    for _ in range(50):
        nested = {"k": [nested, "w" * 100]}
    for value in (nested, ["a" * 100] * 1000, {str(i): i for i in range(5000)}, "short"):
        text = bounded_echo(value)
        assert len(text) <= 512
        orjson.loads(text)


def test_subscriptions_wait_for_the_books_and_pings_do_not() -> None:
    harness = Harness(None, idle_timeout=60.0)
    harness.send(subscribe("l2Book"), now=5.0)
    harness.send(subscribe("trades"), now=6.0)
    harness.send({"method": "ping"}, now=7.0)
    assert harness.replies() == [{"channel": "pong"}]
    assert harness.session.waiting_for_books
    assert harness.session.deadline() == math.inf  # waiting for us is not idle
    harness.books = loaded_books()
    harness.session.books_ready(now=500.0)
    channels = [m["channel"] for m in harness.replies()]
    assert channels == ["subscriptionResponse", "l2Book", "subscriptionResponse"]
    assert harness.session.deadline() == 560.0


def test_idle_deadline_follows_activity() -> None:
    harness = Harness(loaded_books(), idle_timeout=10.0)
    assert harness.session.deadline() == 10.0
    harness.session.activity(4.0)  # e.g. a WebSocket ping frame
    assert harness.session.deadline() == 14.0
    harness.send({"method": "ping"}, now=9.0)
    assert harness.session.deadline() == 19.0


def test_health_is_answered_with_what_the_server_gives() -> None:
    harness = Harness(None)
    harness.send({"method": "health"})
    assert harness.replies() == [{"channel": "health", "data": {"status": "live"}}]


def test_post_info_becomes_a_call_and_its_answer_the_official_shape() -> None:
    harness = Harness(loaded_books())
    payload = {"type": "l2Book", "coin": "BTC"}
    [call] = harness.send(
        {"method": "post", "id": 3, "request": {"type": "info", "payload": payload}}
    )
    assert call == RunInfo(3, payload)
    harness.session.answered(call, b'{"type":"l2Book","data":{"coin":"BTC"}}', None)
    assert harness.replies() == [
        {
            "channel": "post",
            "data": {
                "id": 3,
                "response": {
                    "type": "info",
                    "payload": {"type": "l2Book", "data": {"coin": "BTC"}},
                },
            },
        }
    ]
    [call] = harness.send(
        {"method": "post", "id": 4, "request": {"type": "info", "payload": payload}}
    )
    assert isinstance(call, RunInfo)
    harness.session.answered(call, None, "node down")
    assert harness.replies() == [
        {
            "channel": "post",
            "data": {"id": 4, "response": {"type": "error", "payload": "node down"}},
        }
    ]


def test_actions_are_refused_read_only() -> None:
    harness = Harness(loaded_books())
    request = {"type": "action", "payload": {"action": {"type": "order"}}}
    assert harness.send({"method": "post", "id": 9, "request": request}) == []
    [reply] = harness.replies()
    assert reply["data"]["id"] == 9
    assert reply["data"]["response"]["type"] == "error"
    assert "read-only" in reply["data"]["response"]["payload"]


@pytest.mark.parametrize(
    "message",
    [
        {"method": "post", "request": {"type": "info", "payload": {}}},
        {"method": "post", "id": "7", "request": {"type": "info", "payload": {}}},
        {"method": "post", "id": 7},
    ],
)
def test_malformed_posts_get_the_parse_error(message: Any) -> None:
    harness = Harness(loaded_books())
    assert harness.send(message) == []
    [error] = harness.replies()
    assert error["channel"] == "error"
    assert error["data"].startswith(PARSE)


def test_pending_posts_are_bounded_and_ids_unique() -> None:
    harness = Harness(loaded_books(), max_pending_posts=2)
    post = {"type": "info", "payload": {"type": "meta"}}
    assert len(harness.send({"method": "post", "id": 1, "request": post})) == 1
    assert harness.send({"method": "post", "id": 1, "request": post}) == []
    assert len(harness.send({"method": "post", "id": 2, "request": post})) == 1
    assert harness.send({"method": "post", "id": 3, "request": post}) == []
    texts = [m["data"]["response"]["payload"] for m in harness.replies()]
    assert texts == [
        "duplicate pending post request id=1",
        "too many pending post requests id=3",
    ]


def test_a_client_that_never_reads_its_replies_is_disconnected() -> None:
    harness = Harness(loaded_books(), queue={"max_reply_bytes": 4096})
    for _ in range(1000):
        harness.send("x" * 1000)
        if harness.client.close_reason is not None:
            break
    assert harness.client.close_reason is not None
    code, reason = harness.client.close_reason
    assert code == SLOW_CLIENT_CODE
    assert "replies not read" in reason
