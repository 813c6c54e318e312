"""Trades from a block's fills: pairing by tid, taker side, users, grouping by coin."""

from typing import Any

from fixtures import MainnetSlice, fill, line
from hypothesis import given
from hypothesis import strategies as st

from hlbook.book.trades import Trade, trades_by_coin
from hlbook.node.formats import FillEvent, FillLine, Stream, decode_line

BUYER = "0x1624a8af8b91cc781586b4d7a33b8e693dc11015"
SELLER = "0x5eaac7c475b1fad85701f02c4e9e796a53f94bd5"


def fills(*events: list[Any]) -> list[FillEvent]:
    decoded = decode_line(Stream.FILLS, line(1, events))
    assert isinstance(decoded, FillLine)
    return decoded.events


def test_pair_by_tid_taker_is_the_crossed_fill() -> None:
    trades = trades_by_coin(
        fills(
            fill(BUYER, 7, side="B", crossed=True, px="81308.00", sz="0.000330", time=5),
            fill(SELLER, 7, side="A", crossed=False, px="81308.0", sz="0.00033", time=5),
        )
    )
    assert trades == {
        "BTC": [
            Trade(
                coin="BTC",
                side="B",
                px="81308.0",
                sz="0.00033",
                hash=f"0x{7:064x}",
                time=5,
                tid=7,
                users=(BUYER, SELLER),
            )
        ]
    }


def test_seller_taker_and_order_of_fills_does_not_matter() -> None:
    a = fill(BUYER, 8, side="B", crossed=False)
    b = fill(SELLER, 8, side="A", crossed=True)
    for events in ((a, b), (b, a)):
        (trade,) = trades_by_coin(fills(*events))["BTC"]
        assert trade.side == "A"
        assert trade.users == (BUYER, SELLER)


def test_one_list_per_coin_in_node_order() -> None:
    trades = trades_by_coin(
        fills(
            fill(BUYER, 1, side="B", crossed=True, coin="ETH"),
            fill(BUYER, 2, side="A", crossed=True, coin="BTC"),
            fill(SELLER, 1, side="A", crossed=False, coin="ETH"),
            fill(SELLER, 3, side="B", crossed=True, coin="ETH"),
            fill(SELLER, 2, side="B", crossed=False, coin="BTC"),
            fill(BUYER, 3, side="A", crossed=False, coin="ETH"),
            fill(BUYER, 4, side="B", crossed=True, coin="@107"),
            fill(SELLER, 4, side="A", crossed=False, coin="@107"),
        )
    )
    assert list(trades) == ["ETH", "BTC", "@107"]
    assert [t.tid for t in trades["ETH"]] == [1, 3]
    assert [t.side for t in trades["ETH"]] == ["B", "B"]
    assert trades["ETH"][1].users == (SELLER, BUYER)
    assert [(t.tid, t.side, t.users) for t in trades["BTC"]] == [(2, "A", (SELLER, BUYER))]


def test_unpaired_fill_still_makes_a_trade() -> None:
    # In streaming mode the counterpart may be on another line (or block).
    trades = trades_by_coin(fills(fill(SELLER, 9, side="A", crossed=True)))
    (trade,) = trades["BTC"]
    assert trade.users == ("", SELLER)
    assert trade.side == "A"
    trades = trades_by_coin(fills(fill(BUYER, 9, side="B", crossed=False)))
    (trade,) = trades["BTC"]
    assert trade.users == (BUYER, "")
    assert trade.side == "B"  # no taker known: the only fill's side


def test_no_fills() -> None:
    assert trades_by_coin([]) == {}


def test_mainnet_fills_pair_up(mainnet: MainnetSlice) -> None:
    count = 0
    for raw in mainnet.lines[Stream.FILLS]:
        decoded = decode_line(Stream.FILLS, raw)
        assert isinstance(decoded, FillLine)
        for coin, trades in trades_by_coin(decoded.events).items():
            for trade in trades:
                count += 1
                assert trade.coin == coin
                assert "" not in trade.users
                assert trade.users[0] != trade.users[1]
                taker = [f for _, f in decoded.events if f.tid == trade.tid and f.crossed]
                assert [f.side for f in taker] == [trade.side]
    assert count == 11  # 22 fills in the slice


@given(
    st.lists(
        st.tuples(st.integers(1, 5), st.sampled_from(["BTC", "ETH"]), st.sampled_from(["A", "B"])),
        unique_by=lambda t: t[0],
        max_size=5,
    ),
    st.randoms(use_true_random=False),
)
def test_shuffled_pairs(trades: list[tuple[int, str, str]], rnd: Any) -> None:
    events = []
    for tid, coin, taker_side in trades:
        maker_side = "A" if taker_side == "B" else "B"
        taker_user, maker_user = (BUYER, SELLER) if taker_side == "B" else (SELLER, BUYER)
        events.append(fill(taker_user, tid, side=taker_side, crossed=True, coin=coin))
        events.append(fill(maker_user, tid, side=maker_side, crossed=False, coin=coin))
    rnd.shuffle(events)
    result = trades_by_coin(fills(*events))
    flat = {t.tid: t for ts in result.values() for t in ts}
    assert set(flat) == {tid for tid, _, _ in trades}
    for tid, coin, taker_side in trades:
        assert flat[tid].coin == coin
        assert flat[tid].side == taker_side
        assert flat[tid].users == (BUYER, SELLER)
    for coin, coin_trades in result.items():
        assert all(t.coin == coin for t in coin_trades)
