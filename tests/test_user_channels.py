"""The per-user channels and ``candle`` over a real hub and a real (in-memory) history store:
orderUpdates, userFills (snapshot + pushes, no gap, no duplicate), userEvents, candle."""

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fixtures import BASE_MS, USER, new, remove, status, update
from fixtures import block as make_block
from fixtures import fill as make_fill

from hlbook.book.books import Applied, Books
from hlbook.book.views import Ladders
from hlbook.channels import InvalidSubscription, Registry, Shared
from hlbook.history.recorder import HistoryRecorder
from hlbook.history.store import HistoryStore
from hlbook.server.fanout import ClientQueue, Hub
from hlbook.server.session import PrepareFirst, Session, SessionLimits
from hlbook.stages import Stage

OTHER = "0x" + "7" * 40
TAKER = "0x" + "a" * 40
LATER = BASE_MS + 60_000  # an order placed after the resting one
ORDER_HASH = "0x" + "c" * 64  # one taker order's transaction: its fills share it


@pytest.fixture
def store() -> Iterator[HistoryStore]:
    with HistoryStore(None) as opened:
        yield opened


class World:
    """Books, the history recorder and a hub, fed blocks the way the data path does."""

    def __init__(self, store: HistoryStore) -> None:
        self.books = Books(9)
        self.books.apply(make_block(10, diffs=[new(1, px="100.0", sz="1.0")]))
        self.recorder = HistoryRecorder(store)
        self.hub = Hub(Registry(Shared(ladders=Ladders(), history=store, recorder=self.recorder)))
        self.height = 10

    def block(self, **events: Any) -> Applied:
        self.height += 1
        applied = self.books.apply(make_block(self.height, **events))
        for stage in Stage:  # the recorder first, then the channels, as serve() wires them
            self.recorder.publish(stage, applied.block, self.books, applied.touched)
            self.hub.publish(stage, applied.block, self.books, applied.touched)
        return applied

    def session(self) -> Session:
        return Session(
            ClientQueue(),
            self.hub,
            books=lambda: self.books,
            health=dict,
            limits=SessionLimits(),
            now=0.0,
        )


def subscribe(session: Session, **subscription: Any) -> list[Any]:
    data = json.dumps({"method": "subscribe", "subscription": subscription})
    return session.receive(data, 1.0)


def drain(client: ClientQueue) -> list[Any]:
    out = []
    while (message := client.pop()) is not None:
        out.append(json.loads(message.payload))
    return out


def trade(tid: int, maker: str, taker: str, **extra: Any) -> list[list[Any]]:
    return [
        make_fill(taker, tid, side="B", crossed=True, **extra),
        make_fill(maker, tid, side="A", crossed=False, **extra),
    ]


def test_order_updates_carry_the_users_statuses_rejections_included(store: HistoryStore) -> None:
    world = World(store)
    session = world.session()
    subscribe(session, type="orderUpdates", user=USER.upper().replace("0X", "0x"))
    assert drain(session.client)[0]["channel"] == "subscriptionResponse"
    world.block(
        statuses=[
            status(5, "open", px="99.0", cloid="0x" + "1" * 32),
            status(6, "badAloPxRejected", px="98.0"),
            status(7, "open", user=OTHER),
            status(8, "filled", px="97.0", reduceOnly=True),
        ]
    )
    [message] = drain(session.client)
    assert message["channel"] == "orderUpdates"
    updates = message["data"]
    assert [(u["order"]["oid"], u["status"]) for u in updates] == [
        (5, "open"),
        (6, "badAloPxRejected"),
        (8, "filled"),
    ]
    assert updates[0]["order"]["cloid"] == "0x" + "1" * 32
    assert "cloid" not in updates[1]["order"]
    assert updates[2]["order"]["reduceOnly"] is True
    assert set(updates[0]["order"]) == {
        "coin", "side", "limitPx", "sz", "oid", "timestamp", "origSz", "cloid",
    }  # fmt: skip
    assert isinstance(updates[0]["statusTimestamp"], int)
    world.block(statuses=[status(9, "open", user=OTHER)])
    assert drain(session.client) == []  # nothing for this user


def test_user_fills_snapshot_then_pushes_without_gap_or_duplicate(store: HistoryStore) -> None:
    world = World(store)
    for tid in (1, 2):
        world.block(fills=trade(tid, USER, TAKER))
    session = world.session()
    [action] = subscribe(session, type="userFills", user=USER)
    assert isinstance(action, PrepareFirst)
    # Blocks between subscribing and the snapshot's read: held, not lost nor doubled.
    world.block(fills=trade(3, USER, TAKER))
    session.first_ready(action, action.job())
    world.block(fills=trade(4, USER, TAKER))
    response, snapshot, push3, push4 = drain(session.client)
    assert response["channel"] == "subscriptionResponse"
    assert snapshot["data"]["isSnapshot"] is True
    assert snapshot["data"]["user"] == USER
    assert [f["tid"] for f in snapshot["data"]["fills"]] == [2, 1]  # newest first
    assert "isSnapshot" not in push3["data"]
    assert [f["tid"] for f in push3["data"]["fills"]] == [3]
    assert [f["tid"] for f in push4["data"]["fills"]] == [4]
    fill = push4["data"]["fills"][0]
    assert {"coin", "px", "sz", "side", "time", "oid", "crossed", "fee", "tid", "hash"} <= set(fill)


def test_user_fills_aggregated_by_time(store: HistoryStore) -> None:
    world = World(store)
    session = world.session()
    [action] = subscribe(session, type="userFills", user=TAKER, aggregateByTime=True)
    assert isinstance(action, PrepareFirst)
    session.first_ready(action, action.job())
    # One taker order filled by two makers at once: one aggregated fill.
    world.block(
        fills=[
            *trade(1, USER, TAKER, px="100.0", sz="1.0", oid=50, hash=ORDER_HASH),
            *trade(2, OTHER, TAKER, px="101.0", sz="3.0", oid=50, hash=ORDER_HASH),
        ]
    )
    *_, push = drain(session.client)
    [merged] = push["data"]["fills"]
    assert merged["sz"] == "4.0"
    assert merged["px"] == "100.75"
    assert merged["fee"] == "0.02"


def test_user_events_go_out_on_channel_user(store: HistoryStore) -> None:
    world = World(store)
    session = world.session()
    assert subscribe(session, type="userEvents", user=USER) == []
    world.block(fills=trade(1, USER, TAKER))
    _response, event = drain(session.client)
    assert event["channel"] == "user"
    assert [f["tid"] for f in event["data"]["fills"]] == [1]


def test_candles_follow_the_trades(store: HistoryStore) -> None:
    world = World(store)
    session = world.session()
    subscribe(session, type="candle", coin="BTC", interval="1m")
    assert [m["channel"] for m in drain(session.client)] == ["subscriptionResponse"]  # no trade yet
    world.block(fills=trade(1, USER, TAKER, px="100.0", sz="1.0"))
    world.block(fills=trade(2, USER, TAKER, px="103.0", sz="0.5"))
    [candle] = drain(session.client)  # conflated: the newest state of the candle
    data = candle["data"]
    assert (data["s"], data["i"], data["o"], data["c"], data["h"], data["l"]) == (
        "BTC", "1m", "100.0", "103.0", "103.0", "100.0",
    )  # fmt: skip
    assert data["v"] == "1.5"
    assert data["n"] == 2
    assert data["T"] == data["t"] + 60_000 - 1
    late = world.session()
    subscribe(late, type="candle", coin="BTC", interval="1m")
    assert drain(late.client)[1]["data"] == data  # the current candle at once


def test_open_orders_the_whole_list_at_once_and_after_each_block_that_changed_it(
    store: HistoryStore,
) -> None:
    world = World(store)
    main, hip3 = world.session(), world.session()
    subscribe(main, type="openOrders", user=USER.upper().replace("0X", "0x"))
    subscribe(hip3, type="openOrders", user=USER, dex="xyz")
    response, first = drain(main.client)
    assert response["channel"] == "subscriptionResponse"
    assert first["channel"] == "openOrders"
    assert first["data"]["dex"] == ""
    assert first["data"]["user"] == USER
    assert [o["oid"] for o in first["data"]["orders"]] == [1]
    assert drain(hip3.client)[1]["data"] == {"dex": "xyz", "user": USER, "orders": []}

    world.block(
        statuses=[status(5, px="99.0", tif="Alo", cloid="0x" + "1" * 32, timestamp=LATER)],
        diffs=[new(5, px="99.0", sz="2.0")],
    )
    [pushed] = drain(main.client)
    orders = pushed["data"]["orders"]
    assert [(o["oid"], o["sz"]) for o in orders] == [(5, "2.0"), (1, "1.0")]  # newest first
    assert orders[0]["tif"] == "Alo"
    assert orders[0]["cloid"] == "0x" + "1" * 32
    assert {"orderType", "isTrigger", "triggerPx", "children", "reduceOnly"} <= set(orders[0])
    assert drain(hip3.client) == []  # nothing on its dex

    world.block(statuses=[status(9, "open", user=OTHER)], diffs=[new(9, user=OTHER)])
    assert drain(main.client) == []  # another user's order
    world.block(diffs=[update(5, "2.0", "0.5", px="99.0")])  # partly filled
    assert [(o["oid"], o["sz"]) for o in drain(main.client)[0]["data"]["orders"]] == [
        (5, "0.5"),
        (1, "1.0"),
    ]
    world.block(
        statuses=[status(6, "open", coin="xyz:ABC", px="10.0")],
        diffs=[new(6, coin="xyz:ABC", px="10.0"), remove(1)],
    )
    assert [o["oid"] for o in drain(main.client)[0]["data"]["orders"]] == [5]
    assert [(o["oid"], o["coin"]) for o in drain(hip3.client)[0]["data"]["orders"]] == [
        (6, "xyz:ABC")
    ]


def test_open_orders_wait_for_the_details_of_diffs_applied_ahead(store: HistoryStore) -> None:
    """The diff stream may run ahead of the statuses: a list is never sent with an order
    that waits for its details, and the change it held back goes out once they arrive."""
    world = World(store)
    session = world.session()
    subscribe(session, type="openOrders", user=USER)
    drain(session.client)
    books, hub = world.books, world.hub
    first = make_block(11, statuses=[status(5, tif="Alo")], diffs=[new(5, px="99.0")])
    second = make_block(  # the user's next order is on another dex: only the wait sends 5
        12, statuses=[status(7, coin="xyz:ABC")], diffs=[new(7, coin="xyz:ABC")]
    )
    for block in (first, second):  # both blocks' diffs, and their early stage
        applied = books.apply_diffs(block)
        hub.publish(Stage.DIFFS, block, books, applied.touched)
    applied = books.attach_details(first)
    hub.publish(Stage.STATUSES, first, books, applied.touched)
    assert drain(session.client) == []  # the user's order 7 has no details yet
    applied = books.attach_details(second)
    hub.publish(Stage.STATUSES, second, books, applied.touched)
    [message] = drain(session.client)
    orders = {o["oid"]: o for o in message["data"]["orders"]}
    assert sorted(orders) == [1, 5]
    assert orders[5]["tif"] == "Alo"


def test_open_orders_are_sent_again_after_a_repair_of_a_coin_of_their_dex(
    store: HistoryStore,
) -> None:
    # A repair replaces a coin's book without diffs: the lists on its dex were left stale
    # until the user's next diff.
    world = World(store)
    main, hip3 = world.session(), world.session()
    subscribe(main, type="openOrders", user=USER)
    subscribe(hip3, type="openOrders", user=USER, dex="xyz")
    assert [o["oid"] for o in drain(main.client)[1]["data"]["orders"]] == [1]
    drain(hip3.client)
    world.books.set_coin("BTC", [], [])  # the node's snapshot: no order in BTC
    world.hub.resync(world.books, ["BTC"])
    [message] = drain(main.client)
    assert message["data"] == {"dex": "", "user": USER, "orders": []}
    assert drain(hip3.client) == []  # another dex: unchanged


def test_open_orders_of_a_user_busy_every_block_ask_the_details_to_catch_up(
    store: HistoryStore,
) -> None:
    """A market maker with a new order in every block is never whole while the statuses
    lag the diffs by a block: after CATCH_UP_AFTER_MS of block time the channel asks the
    data path to catch up, and the list goes out once it has."""
    from hlbook.channels.openorders import CATCH_UP_AFTER_MS

    world = World(store)
    session = world.session()
    subscribe(session, type="openOrders", user=USER)
    drain(session.client)
    books, hub = world.books, world.hub

    def busy(height: int) -> Any:  # the user's new order of this block
        return make_block(height, statuses=[status(height)], diffs=[new(height, px="99.0")])

    ahead = busy(11)
    hub.publish(Stage.DIFFS, ahead, books, books.apply_diffs(ahead).touched)
    first = ahead
    while not books.catch_up_wanted:  # the diffs one block ahead, every block
        behind, ahead = ahead, busy(ahead.height + 1)
        hub.publish(Stage.DIFFS, ahead, books, books.apply_diffs(ahead).touched)
        hub.publish(Stage.STATUSES, behind, books, books.attach_details(behind).touched)
        assert drain(session.client) == []  # never whole
        assert ahead.height < 100, "never asked"
    held = behind.time - first.time  # from the first list held back to the ask
    assert CATCH_UP_AFTER_MS <= held < CATCH_UP_AFTER_MS + 70
    # The data path catches up: the last block's statuses are attached before more diffs.
    hub.publish(Stage.STATUSES, ahead, books, books.attach_details(ahead).touched)
    [message] = drain(session.client)
    assert len(message["data"]["orders"]) == 1 + ahead.height - 10  # order 1 and each new one


@pytest.mark.parametrize(
    "raw",
    [
        {"type": "openOrders"},
        {"type": "openOrders", "user": USER, "dex": 5},
        {"type": "orderUpdates"},
        {"type": "orderUpdates", "user": "0x123"},
        {"type": "userFills", "user": "0x" + "g" * 40},
        {"type": "userFills", "user": USER, "aggregateByTime": "yes"},
        {"type": "candle", "coin": "BTC", "interval": "2m"},
        {"type": "candle", "interval": "1m"},
        {"type": "userEvents", "user": 5},
    ],
)
def test_invalid_user_and_candle_subscriptions(raw: dict[str, Any]) -> None:
    with pytest.raises(InvalidSubscription):
        Registry().parse(raw)
