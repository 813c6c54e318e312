"""Official shapes of fills and order statuses, which statuses are kept, aggregateByTime."""

from typing import Any

import msgspec
from fixtures import MainnetSlice, fill, line, status

from hlbook.history.wire import (
    aggregate_by_time,
    fill_wire,
    is_recorded,
    is_rejection,
    order_status_wire,
    unknown_oid,
)
from hlbook.node.formats import FillLine, Order, StatusLine, Stream, decode_line

TAKER = "0x1624a8af8b91cc781586b4d7a33b8e693dc11015"
MAKER = "0x5eaac7c475b1fad85701f02c4e9e796a53f94bd5"

# The official fill keys (@nktkas/hyperliquid UserFill; cloid etc. only when present).
FILL_KEYS = {
    "coin",
    "px",
    "sz",
    "side",
    "time",
    "startPosition",
    "dir",
    "closedPnl",
    "hash",
    "oid",
    "crossed",
    "fee",
    "tid",
    "feeToken",
    "twapId",
}
ORDER_KEYS = {
    "coin",
    "side",
    "limitPx",
    "sz",
    "oid",
    "timestamp",
    "origSz",
    "triggerCondition",
    "isTrigger",
    "triggerPx",
    "children",
    "isPositionTpsl",
    "reduceOnly",
    "orderType",
    "tif",
    "cloid",
}


def fills_of(*events: list[Any]) -> list[dict[str, Any]]:
    decoded = decode_line(Stream.FILLS, line(1, events))
    assert isinstance(decoded, FillLine)
    return [fill_wire(f) for _, f in decoded.events]


def test_real_fills_keep_every_field_the_node_wrote(mainnet: MainnetSlice) -> None:
    seen = 0
    for raw in mainnet.lines[Stream.FILLS]:
        decoded = decode_line(Stream.FILLS, raw)
        assert isinstance(decoded, FillLine)
        originals = msgspec.json.decode(raw)["events"]
        for (_, parsed), (_, original) in zip(decoded.events, originals, strict=True):
            wire = fill_wire(parsed)
            assert wire == original  # twapId null stays null, cloid only when present
            assert FILL_KEYS <= set(wire) <= FILL_KEYS | {"cloid", "builderFee", "liquidation"}
            seen += 1
    assert seen == 22


def test_twap_id_is_always_present() -> None:
    (wire,) = fills_of(fill(TAKER, 1, side="B", crossed=True))
    assert (
        "twapId"
        not in msgspec.json.decode(line(1, [fill(TAKER, 1, side="B", crossed=True)]))["events"][0][
            1
        ]
    )
    assert wire["twapId"] is None


def test_order_status_shape_for_a_real_filled_order(mainnet: MainnetSlice) -> None:
    for raw in mainnet.lines[Stream.STATUSES]:
        decoded = decode_line(Stream.STATUSES, raw)
        assert isinstance(decoded, StatusLine)
        for event in decoded.events:
            if event.status == "filled":
                order = event.parsed_order()
                answer = order_status_wire(order, "filled", 1778002753646)
                assert answer["status"] == "order"
                assert set(answer["order"]) == {"order", "status", "statusTimestamp"}
                assert set(answer["order"]["order"]) == ORDER_KEYS
                assert answer["order"]["order"] == {
                    key: value
                    for key, value in msgspec.json.decode(event.order).items()
                    if key in ORDER_KEYS
                }
                return
    raise AssertionError("no filled status in the slice")


def test_unknown_oid() -> None:
    assert unknown_oid() == {"status": "unknownOid"}


def test_which_statuses_are_kept() -> None:
    plain = msgspec.json.decode(msgspec.json.encode(status(1)["order"]), type=Order)
    trigger = msgspec.json.decode(
        msgspec.json.encode(status(2, isTrigger=True, triggerCondition="Price above 10")["order"]),
        type=Order,
    )
    for kept in (
        "filled",
        "canceled",
        "triggered",
        "marginCanceled",
        "reduceOnlyCanceled",
        "siblingFilledCanceled",
        "scheduledCancel",
        "internalCancel",
        "someFutureCanceled",
    ):
        assert is_recorded(kept, plain), kept
    for rejected in ("rejected", "badAloPxRejected", "perpMarginRejected", "iocCancelRejected"):
        assert is_rejection(rejected)
        assert not is_recorded(rejected, plain)
        assert not is_recorded(rejected, trigger)
    assert not is_recorded("open", plain)  # the book answers for resting orders
    assert is_recorded("open", trigger)  # trigger orders wait outside the book


# -- aggregateByTime ---------------------------------------------------------------


def taker_sweep() -> list[dict[str, Any]]:
    """One crossing order (oid 9) filled by three resting orders, oldest first."""
    common: dict[str, Any] = {"oid": 9, "time": 1000, "hash": "0x" + "ab" * 32}
    return fills_of(
        fill(TAKER, 1, side="B", crossed=True, px="100.0", sz="1.0", fee="0.1", **common),
        fill(TAKER, 2, side="B", crossed=True, px="101.0", sz="2.0", fee="0.2", **common),
        fill(TAKER, 3, side="B", crossed=True, px="102.0", sz="1.0", fee="0.1", **common),
    )


def test_a_crossing_order_filled_by_several_resting_orders_becomes_one_fill() -> None:
    sweep = taker_sweep()
    sweep[0]["startPosition"] = "5.0"
    sweep[1]["startPosition"] = "6.0"
    sweep[2]["startPosition"] = "8.0"
    (merged,) = aggregate_by_time(sweep, newest_first=False)
    assert merged["sz"] == "4.0"
    assert merged["px"] == "101.0"
    assert merged["fee"] == "0.4"
    assert merged["startPosition"] == "5.0"  # the position before the whole order
    assert merged["tid"] == 1
    assert (merged["oid"], merged["crossed"], merged["time"]) == (9, True, 1000)
    # Newest first, the earliest fill is last: same result.
    assert aggregate_by_time(list(reversed(sweep)), newest_first=True) == [merged]


def test_average_price_is_rounded_to_eight_decimals() -> None:
    sweep = taker_sweep()[:2]
    sweep[0]["px"], sweep[0]["sz"] = "1.0", "1.0"
    sweep[1]["px"], sweep[1]["sz"] = "2.0", "2.0"
    (merged,) = aggregate_by_time(sweep, newest_first=False)
    assert merged["px"] == "1.66666667"  # 5/3
    assert merged["sz"] == "3.0"


def test_resting_orders_and_other_orders_are_not_combined() -> None:
    common: dict[str, Any] = {"oid": 7, "time": 1000}
    # A resting order filled by two crossing orders: maker fills stay apart.
    makers = fills_of(
        fill(MAKER, 1, side="A", crossed=False, **common),
        fill(MAKER, 2, side="A", crossed=False, **common),
    )
    assert aggregate_by_time(makers, newest_first=False) == makers
    # Different oids, or times, are different groups.
    other = fills_of(
        fill(TAKER, 1, side="B", crossed=True, oid=1, time=5),
        fill(TAKER, 2, side="B", crossed=True, oid=2, time=5),
        fill(TAKER, 3, side="B", crossed=True, oid=2, time=6),
    )
    assert aggregate_by_time(other, newest_first=False) == other


def test_limit_returns_complete_groups_and_stops_reading() -> None:
    sweep = taker_sweep()
    single = fills_of(fill(TAKER, 5, side="A", crossed=True, oid=10, time=900))
    consumed: list[int] = []

    def lazy() -> Any:
        for item in [*sweep, *single, *taker_sweep()]:
            consumed.append(item["tid"])
            yield item

    found = aggregate_by_time(lazy(), newest_first=False, limit=2)
    assert [f["sz"] for f in found] == ["4.0", "1.0"]
    # It read the first fill of the third group to know the second was complete, no more.
    assert len(consumed) == 5
