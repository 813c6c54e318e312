"""``allMids``: the channel (first message all coins, then only changes; per dex) and the
info type, on real books."""

import json
from typing import Any

import pytest
import trio
from fixtures import block as make_block
from fixtures import new, update

from hlbook.book.books import Books
from hlbook.book.mids import dex_of, mids
from hlbook.channels import InvalidSubscription
from hlbook.info.allmids import AllMidsInfo
from hlbook.info.base import InfoError
from hlbook.server.fanout import ClientQueue, Hub
from hlbook.stages import Stage


def books() -> Books:
    """BTC 100/101, ETH 10/11, spot @1 0.5/0.52, xyz:XYZ100 20/22, SOL with bids only."""
    result = Books(9)
    diffs = [
        new(1, px="100.0", sz="1.0"),
        new(2, side="A", px="101.0", sz="1.0"),
        new(3, coin="ETH", px="10.0", sz="1.0"),
        new(4, coin="ETH", side="A", px="11.0", sz="1.0"),
        new(5, coin="@1", px="0.5", sz="1.0"),
        new(6, coin="@1", side="A", px="0.52", sz="1.0"),
        new(7, coin="xyz:XYZ100", px="20.0", sz="1.0"),
        new(8, coin="xyz:XYZ100", side="A", px="22.0", sz="1.0"),
        new(9, coin="SOL", px="5.0", sz="1.0"),
    ]
    result.apply(make_block(10, diffs=diffs))
    return result


def subscribe(hub: Hub, client: ClientQueue, raw: dict[str, Any], book: Books) -> Any:
    channel, key, echo = hub.registry.parse(raw)
    first = hub.subscribe(client, channel, key, book, echo)
    assert first is not None
    return json.loads(first.payload)


def drain(client: ClientQueue) -> list[Any]:
    out = []
    while (message := client.pop()) is not None:
        out.append(json.loads(message.payload))
    return out


def test_mids_are_exact_and_per_dex() -> None:
    state = books()
    assert mids(state, "") == {"BTC": "100.5", "ETH": "10.5", "@1": "0.51"}
    assert mids(state, "xyz") == {"xyz:XYZ100": "21.0"}
    assert dex_of("xyz:XYZ100") == "xyz"
    assert dex_of("PURR/USDC") == ""


def test_first_message_then_only_the_coins_that_changed() -> None:
    state, hub = books(), Hub()
    main, hip3 = ClientQueue(), ClientQueue()
    first = subscribe(hub, main, {"type": "allMids"}, state)
    assert first == {"channel": "allMids", "data": {"mids": mids(state, "")}}
    assert subscribe(hub, hip3, {"type": "allMids", "dex": "xyz"}, state)["data"] == {
        "dex": "xyz",
        "mids": {"xyz:XYZ100": "21.0"},
    }
    # ETH's bid moves (mid changes); BTC's deeper level changes (mid does not).
    block = make_block(
        11, diffs=[update(3, "1.0", "0.5", coin="ETH", px="10.0"), new(10, px="99.0", sz="1.0")]
    )
    applied = state.apply(block)
    for stage in Stage:
        hub.publish(stage, applied.block, state, applied.touched)
    assert drain(main) == []  # sizes do not move a mid
    applied = state.apply(
        make_block(12, diffs=[new(11, coin="ETH", side="A", px="10.8", sz="1.0")])
    )
    for stage in Stage:
        hub.publish(stage, applied.block, state, applied.touched)
    assert drain(main) == [{"channel": "allMids", "data": {"mids": {"ETH": "10.4"}}}]
    assert drain(hip3) == []


def test_a_hip3_dex_names_itself_in_every_message_and_the_main_dex_does_not() -> None:
    # The public API's HIP-3 pushes carry "dex" (the SDKs route by it: @nktkas/hyperliquid
    # drops an event whose dex is not the subscribed one, ccxt.pro resolves tickers:<dex>).
    state, hub = books(), Hub()
    main, hip3, empty = ClientQueue(), ClientQueue(), ClientQueue()
    assert "dex" not in subscribe(hub, main, {"type": "allMids", "dex": ""}, state)["data"]
    assert subscribe(hub, empty, {"type": "allMids", "dex": "abc"}, state)["data"] == {
        "dex": "abc",
        "mids": {},
    }
    subscribe(hub, hip3, {"type": "allMids", "dex": "xyz"}, state)
    applied = state.apply(
        make_block(
            11,
            diffs=[
                new(12, coin="xyz:XYZ100", side="A", px="21.0", sz="1.0"),
                new(13, coin="ETH", side="A", px="10.8", sz="1.0"),
            ],
        )
    )
    for stage in Stage:
        hub.publish(stage, applied.block, state, applied.touched)
    assert drain(hip3) == [
        {"channel": "allMids", "data": {"dex": "xyz", "mids": {"xyz:XYZ100": "20.5"}}}
    ]
    assert drain(main) == [{"channel": "allMids", "data": {"mids": {"ETH": "10.4"}}}]
    assert drain(empty) == []


@pytest.mark.parametrize("raw", [{"type": "allMids", "dex": 5}, {"type": "allMids", "dex": "a:b"}])
def test_a_bad_dex_is_an_invalid_subscription(raw: dict[str, Any]) -> None:
    with pytest.raises(InvalidSubscription):
        Hub().registry.parse(raw)


async def test_the_info_type_answers_the_same_mids() -> None:
    state = books()
    handler = AllMidsInfo(lambda: state)
    assert json.loads(await handler.answer({"type": "allMids"}, b"")) == mids(state, "")
    assert json.loads(await handler.answer({"type": "allMids", "dex": "xyz"}, b"")) == {
        "xyz:XYZ100": "21.0"
    }
    with pytest.raises(InfoError) as error:
        await handler.answer({"type": "allMids", "dex": ["x"]}, b"")
    assert error.value.status == 422
    await trio.lowlevel.checkpoint()
