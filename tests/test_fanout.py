"""The fan-out hub and client queues: one message per view, conflation, lag policies."""

import json
from typing import Any

from fixtures import block as make_block
from fixtures import fill, new, remove, status, update

from hlbook.book.books import Applied, Books
from hlbook.server.fanout import SLOW_CLIENT_CODE, ClientQueue, Hub
from hlbook.server.frames import Message
from hlbook.stages import Stage

BUYER = "0x" + "b" * 40
SELLER = "0x" + "5" * 40


def started_books() -> Books:
    """BTC with a bid and an ask, ETH with a bid, at height 10."""
    books = Books(9)
    books.apply(
        make_block(
            10,
            statuses=[status(1, "open", px="100.0"), status(2, "open", side="A", px="101.0")],
            diffs=[
                new(1, px="100.0", sz="1.0"),
                new(2, side="A", px="101.0", sz="2.0"),
                new(3, coin="ETH", px="10.0", sz="5.0"),
            ],
        )
    )
    return books


def publish(hub: Hub, applied: Applied, books: Books) -> None:
    """Every stage of one applied block, in order (as the data path does)."""
    for stage in Stage:
        hub.publish(stage, applied.block, books, applied.touched)


def drain(client: ClientQueue) -> list[dict[str, Any]]:
    out = []
    while (message := client.pop()) is not None:
        out.append(json.loads(message.payload))
    return out


def L2BookSub(coin: str, n_levels: int | None = None) -> dict[str, Any]:
    raw: dict[str, Any] = {"type": "l2Book", "coin": coin}
    if n_levels is not None:
        raw["nLevels"] = n_levels
    return raw


def BboSub(coin: str) -> dict[str, Any]:
    return {"type": "bbo", "coin": coin}


def TradesSub(coin: str) -> dict[str, Any]:
    return {"type": "trades", "coin": coin}


def L4BookSub(coin: str) -> dict[str, Any]:
    return {"type": "l4Book", "coin": coin}


def subscribe(hub: Hub, client: ClientQueue, raw: dict[str, Any], books: Books) -> Message | None:
    """Subscribe as a session does: parse through the registry, then the hub."""
    channel, key, echo = hub.registry.parse(raw)
    return hub.subscribe(client, channel, key, books, echo)


def key(hub: Hub, raw: dict[str, Any]) -> Any:
    return hub.registry.parse(raw)[1]


def loads(message: Message | None) -> Any:
    assert message is not None
    return json.loads(message.payload)


def test_subscribe_returns_the_immediate_snapshot() -> None:
    books, hub, client = started_books(), Hub(), ClientQueue()
    l2 = loads(subscribe(hub, client, L2BookSub("BTC"), books))
    assert l2["channel"] == "l2Book"
    assert l2["data"]["levels"] == [
        [{"px": "100.0", "sz": "1.0", "n": 1}],
        [{"px": "101.0", "sz": "2.0", "n": 1}],
    ]
    bbo = loads(subscribe(hub, client, BboSub("BTC"), books))
    assert bbo["data"]["bbo"] == [
        {"px": "100.0", "sz": "1.0", "n": 1},
        {"px": "101.0", "sz": "2.0", "n": 1},
    ]
    l4 = loads(subscribe(hub, client, L4BookSub("BTC"), books))
    snap = l4["data"]["Snapshot"]
    assert (snap["coin"], snap["height"]) == ("BTC", 10)
    assert [o["oid"] for o in snap["levels"][0]] == [1]
    assert snap["levels"][0][0]["user"].startswith("0x")
    assert subscribe(hub, client, TradesSub("BTC"), books) is None


def test_one_message_built_per_view_and_shared_by_all_subscribers() -> None:
    books, hub = started_books(), Hub()
    clients = [ClientQueue() for _ in range(50)]
    for client in clients:
        subscribe(hub, client, L2BookSub("BTC"), books)
    before = hub.stats.messages_built
    applied = books.apply(make_block(11, diffs=[update(1, "1.0", "0.4")]))
    publish(hub, applied, books)
    assert hub.stats.messages_built == before + 1
    messages = [client.pop() for client in clients]
    assert len({id(m) for m in messages}) == 1  # the very same Message (and frames)
    assert messages[0] is not None
    assert messages[0].shared == 50
    assert loads(messages[0])["data"]["levels"][0] == [{"px": "100.0", "sz": "0.4", "n": 1}]


def test_only_changed_views_are_sent() -> None:
    books, hub, client = started_books(), Hub(), ClientQueue()
    subscribe(hub, client, L2BookSub("BTC", n_levels=1), books)
    subscribe(hub, client, BboSub("BTC"), books)
    subscribe(hub, client, L2BookSub("ETH"), books)
    # A bid below the best changes BTC's full book but neither the top level nor the bbo.
    applied = books.apply(make_block(11, diffs=[new(9, px="99.0")]))
    publish(hub, applied, books)
    assert drain(client) == []
    applied = books.apply(make_block(12, diffs=[new(10, coin="ETH", px="11.0")]))
    publish(hub, applied, books)
    assert [m["channel"] for m in drain(client)] == ["l2Book"]


def test_l2_and_bbo_conflate_for_a_slow_client() -> None:
    books, hub, client = started_books(), Hub(), ClientQueue()
    subscribe(hub, client, L2BookSub("BTC"), books)
    subscribe(hub, client, BboSub("BTC"), books)
    for height, size in zip(range(11, 31), [f"{i}.0" for i in range(2, 22)], strict=True):
        previous = books.order(1)
        assert previous is not None
        applied = books.apply(make_block(height, diffs=[update(1, previous.sz, size)]))
        publish(hub, applied, books)
    messages = {m["channel"]: m["data"] for m in drain(client)}
    assert sorted(messages) == ["bbo", "l2Book"]  # the newest of each, nothing else
    assert messages["l2Book"]["levels"][0][0]["sz"] == "21.0"
    assert messages["bbo"]["bbo"][0]["sz"] == "21.0"
    assert client.stats.conflated == 38


def test_trades_overflow_disconnects_with_a_reason_never_a_gap() -> None:
    books, hub = started_books(), Hub()
    slow, fast = ClientQueue(max_messages=3), ClientQueue(max_messages=100)
    for client in (slow, fast):
        subscribe(hub, client, TradesSub("BTC"), books)
    for height in range(11, 16):
        fills = [
            fill(BUYER, height, side="B", crossed=True),
            fill(SELLER, height, side="A", crossed=False),
        ]
        publish(hub, books.apply(make_block(height, fills=fills)), books)
        while fast.pop() is not None:
            pass
    assert slow.close_reason is not None
    code, reason = slow.close_reason
    assert code == SLOW_CLIENT_CODE
    assert "trades BTC" in reason
    assert slow.stats.disconnected_for_lag
    assert slow.pop() is None  # nothing half-delivered after the decision
    assert not fast.stats.disconnected_for_lag
    assert fast.close_reason is None
    assert hub.stats.disconnected_for_lag == 1
    assert slow not in hub.clients()


def test_trades_message_pairs_fills() -> None:
    books, hub, client = started_books(), Hub(), ClientQueue()
    subscribe(hub, client, TradesSub("BTC"), books)
    fills = [
        fill(SELLER, 77, side="A", crossed=True, px="100.0", sz="0.5"),
        fill(BUYER, 77, side="B", crossed=False, px="100.0", sz="0.5"),
    ]
    publish(hub, books.apply(make_block(11, fills=fills)), books)
    [message] = drain(client)
    assert message["channel"] == "trades"
    assert message["data"] == [
        {
            "coin": "BTC",
            "side": "A",
            "px": "100.0",
            "sz": "0.5",
            "hash": f"0x{77:064x}",
            "time": fills[0][1]["time"],
            "tid": 77,
            "users": [BUYER, SELLER],
        }
    ]


def test_l4_overflow_resends_a_fresh_snapshot() -> None:
    books, hub = started_books(), Hub()
    client = ClientQueue(max_messages=2)
    first = subscribe(hub, client, L4BookSub("BTC"), books)
    assert first is not None
    client.put(first, key(hub, L4BookSub("BTC")))
    for height in range(11, 15):
        applied = books.apply(make_block(height, diffs=[new(100 + height, px="99.0")]))
        publish(hub, applied, books)
    assert client.close_reason is None
    assert client.stats.resnapshots >= 1
    messages = drain(client)
    kinds = [next(iter(m["data"])) for m in messages]
    # Whatever was dropped was replaced by a snapshot that the later updates follow.
    last_snapshot = max(i for i, kind in enumerate(kinds) if kind == "Snapshot")
    heights = [messages[last_snapshot]["data"]["Snapshot"]["height"]] + [
        m["data"]["Updates"]["height"] for m in messages[last_snapshot + 1 :]
    ]
    assert heights == list(range(heights[0], 15))
    snapshot_oids = {o["oid"] for o in messages[last_snapshot]["data"]["Snapshot"]["levels"][0]}
    assert {100 + h for h in range(11, heights[0] + 1)} <= snapshot_oids


def test_l4_updates_carry_the_nodes_events_for_the_coin_only() -> None:
    books, hub, client = started_books(), Hub(), ClientQueue()
    subscribe(hub, client, L4BookSub("ETH"), books)
    applied = books.apply(
        make_block(
            11,
            statuses=[
                status(20, "open", coin="ETH", px="9.0"),
                status(21, "badAloPxRejected", coin="ETH"),
                status(22, "open", coin="BTC"),
            ],
            diffs=[
                new(20, coin="ETH", px="9.0"),
                new(22, px="98.0"),
                remove(3, coin="ETH", px="10.0"),
            ],
        )
    )
    publish(hub, applied, books)
    [message] = drain(client)
    updates = message["data"]["Updates"]
    assert updates["height"] == 11
    assert [s["order"]["oid"] for s in updates["order_statuses"]] == [20, 21]
    assert [d["oid"] for d in updates["book_diffs"]] == [20, 3]
    assert updates["book_diffs"][1]["raw_book_diff"] == "remove"


def test_unsubscribe_and_drop_forget_the_client() -> None:
    books, hub, client = started_books(), Hub(), ClientQueue()
    subscribe(hub, client, L2BookSub("BTC"), books)
    subscribe(hub, client, TradesSub("BTC"), books)
    assert set(client.subscriptions) == {key(hub, L2BookSub("BTC")), key(hub, TradesSub("BTC"))}
    hub.unsubscribe(client, key(hub, L2BookSub("BTC")))
    assert hub.subscription_count == 1
    hub.drop(client)
    assert hub.subscription_count == 0
    applied = books.apply(make_block(11, diffs=[update(1, "1.0", "0.5")]))
    publish(hub, applied, books)
    assert client.pop() is None


def test_resync_sends_fresh_views_and_l4_snapshots() -> None:
    books, hub, client = started_books(), Hub(), ClientQueue()
    subscribe(hub, client, L2BookSub("BTC"), books)
    subscribe(hub, client, L4BookSub("BTC"), books)
    subscribe(hub, client, L2BookSub("ETH"), books)
    hub.resync(books, ["BTC"])
    messages = drain(client)
    assert sorted(m["channel"] for m in messages) == ["l2Book", "l4Book"]
    assert all(m["data"].get("coin", "BTC") == "BTC" for m in messages)


def test_notify_all_reaches_every_subscribed_client() -> None:
    books, hub = started_books(), Hub()
    a, b, idle = ClientQueue(), ClientQueue(), ClientQueue()
    subscribe(hub, a, L2BookSub("BTC"), books)
    subscribe(hub, b, TradesSub("ETH"), books)
    hub.notify("feed stale")
    assert loads(a.pop()) == loads(b.pop()) == {"channel": "error", "data": "feed stale"}
    assert idle.pop() is None


def test_resync_after_a_repair_at_the_same_height_sends_the_repaired_l4_snapshot() -> None:
    books, hub = started_books(), Hub()
    watcher, late = ClientQueue(), ClientQueue()
    first = loads(subscribe(hub, watcher, L4BookSub("BTC"), books))
    assert [o["oid"] for o in first["data"]["Snapshot"]["levels"][0]] == [1]
    # A validation repair replaces BTC's book without a new block (same height).
    books.set_coin("BTC", [], [])
    hub.resync(books, ["BTC"])
    [message] = drain(watcher)
    assert message["data"]["Snapshot"]["height"] == 10
    assert message["data"]["Snapshot"]["levels"] == [[], []]
    fresh = loads(subscribe(hub, late, L4BookSub("BTC"), books))
    assert fresh["data"]["Snapshot"]["levels"] == [[], []]


def test_a_conflated_view_keeps_its_place_behind_no_backlog() -> None:
    books, hub, client = started_books(), Hub(), ClientQueue()
    subscribe(hub, client, L2BookSub("BTC"), books)
    subscribe(hub, client, TradesSub("BTC"), books)
    for height in range(11, 21):  # trades every block; the view changes every block too
        fills = [
            fill(BUYER, height, side="B", crossed=True),
            fill(SELLER, height, side="A", crossed=False),
        ]
        previous = books.order(1)
        assert previous is not None
        size = f"{height}.0"
        block = make_block(height, diffs=[update(1, previous.sz, size)], fills=fills)
        publish(hub, books.apply(block), books)
    messages = drain(client)
    # The newest view goes out first, not after the ten blocks of trades queued behind it.
    assert [m["channel"] for m in messages] == ["l2Book"] + ["trades"] * 10
    assert messages[0]["data"]["levels"][0][0]["sz"] == "20.0"


def test_resubscribing_while_lagging_gets_no_stale_view_after_the_fresh_one() -> None:
    books, hub, client = started_books(), Hub(), ClientQueue()
    sub = L2BookSub("BTC")
    subscribe(hub, client, sub, books)
    publish(hub, books.apply(make_block(11, diffs=[update(1, "1.0", "0.9")])), books)
    hub.unsubscribe(client, key(hub, sub))  # the unsent block-11 view goes with the subscription
    client.reply(Message(b'{"channel":"subscriptionResponse"}'))
    snapshot = subscribe(hub, client, sub, books)
    assert snapshot is not None
    client.put(snapshot, key(hub, sub))
    publish(hub, books.apply(make_block(12, diffs=[update(1, "0.9", "0.7")])), books)
    sizes = [m["data"]["levels"][0][0]["sz"] for m in drain(client) if m["channel"] == "l2Book"]
    assert sizes == ["0.9", "0.7"]


def test_replies_have_their_own_budget_beside_the_queue_limit() -> None:
    client = ClientQueue(max_messages=2, max_reply_bytes=40)
    a, b, c = (Message(x) for x in (b"a", b"b", b"c"))
    assert client.put(a)
    assert client.put(b)
    assert not client.put(c)
    pong = Message(b'{"channel":"pong"}')  # 18 bytes
    assert client.reply(pong)
    assert client.reply(pong)
    assert not client.reply(pong)  # 54 bytes of unread replies: over the budget
    assert [client.pop() for _ in range(5)] == [a, b, pong, pong, None]
    assert client.reply(pong)  # read: room again


def test_queues_count_bytes_not_characters() -> None:
    client = ClientQueue(max_bytes=10)
    accented = Message("ééééé".encode())  # 5 characters, 10 bytes
    assert client.put(accented)
    assert client.queued_bytes == 10
    assert not client.put(Message(b"x"))


def test_a_client_dropped_while_first_messages_are_served_costs_no_one_else() -> None:
    books, hub = started_books(), Hub()
    # BTC and ETH change in a block whose statuses are not attached yet: their l4Book
    # first messages wait for the statuses stage.
    block = make_block(11, diffs=[new(20, px="99.0"), new(21, coin="ETH", px="9.0")])
    books.apply_diffs(block)
    tiny = ClientQueue(max_bytes=10)  # no snapshot fits: dropped at its first one
    other = ClientQueue()
    for coin in ("BTC", "ETH"):
        assert subscribe(hub, tiny, L4BookSub(coin), books) is None
    assert subscribe(hub, other, L4BookSub("BTC"), books) is None
    applied = books.attach_details(block)
    # BTC's first message drops the tiny client, the only one waiting for ETH's.
    publish(hub, applied, books)
    assert tiny.close_reason is not None
    [message] = drain(other)
    assert message["data"]["Snapshot"]["coin"] == "BTC"
    assert message["data"]["Snapshot"]["height"] == 11


def test_a_per_user_subscriber_dropped_mid_publication_costs_no_one_else() -> None:
    books, hub = started_books(), Hub()
    # The slow client is the only subscriber of its users' keys: dropping it in the middle
    # of a channel's publication removes keys while the channel walks them.
    slow, fast = ClientQueue(max_messages=1), ClientQueue()
    for user in (BUYER, SELLER):
        for kind in ("userFills", "userEvents"):
            subscribe(hub, slow, {"type": kind, "user": user}, books)
    subscribe(hub, fast, {"type": "userFills", "user": SELLER}, books)
    delivered = []
    for height in range(11, 14):
        fills = [
            fill(BUYER, height, side="B", crossed=True),
            fill(SELLER, height, side="A", crossed=False),
        ]
        publish(hub, books.apply(make_block(height, fills=fills)), books)
        delivered += [m["data"]["fills"][0]["tid"] for m in drain(fast)]
    assert slow.close_reason is not None
    assert slow.close_reason[0] == SLOW_CLIENT_CODE
    assert delivered == [11, 12, 13]
