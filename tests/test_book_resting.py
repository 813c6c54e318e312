"""The narrow resting-order record: full orders rebuilt from it are the node's, byte for byte."""

import msgspec
import pytest
from fixtures import MainnetSlice

from hlbook.book.books import Books
from hlbook.book.resting import Resting, full_order, pack_cloid, shape_of, unpack_cloid
from hlbook.errors import DuplicateOrderError, SnapshotError
from hlbook.node.formats import Order, decode_snapshot, encode, encode_snapshot


def test_the_real_snapshot_is_served_back_byte_for_byte(mainnet: MainnetSlice) -> None:
    books = Books.load(mainnet.snapshot)
    height, coins = decode_snapshot(mainnet.snapshot)
    expected = []
    children = cloids = 0
    for coin, bids, asks in coins:
        for side in (bids, asks):
            for user, order in side:
                order.user = user
                children += bool(order.children)
                cloids += order.cloid is not None
        expected.append((coin, bids, asks))
    assert children > 1000  # the real thing: TP/SL children
    assert cloids > 10_000
    assert encode_snapshot(books.height, books.snapshot()) == encode_snapshot(height, expected)
    # and one by one, as openOrders and orderStatus see them
    for _coin, bids, asks in expected:
        for _user, order in bids[:50] + asks[:50]:
            again = books.order(order.oid)
            assert again is not None
            assert encode(again) == encode(order)


@pytest.mark.parametrize(
    ("cloid", "packed"),
    [
        ("0x" + "0" * 32, True),
        ("0x2525913403060000019df924b2677a12", True),
        ("0x" + "f" * 32, True),
        ("0x2525913403060000019DF924B2677A12", False),  # upper case: kept as written
        ("0X2525913403060000019df924b2677a12", False),
        ("0x2525913403060000019df924b2677a1", False),  # 31 digits
        ("0x2525913403060000019df924b2677a123", False),
        ("0x25259134_3060000019df924b2677a12", False),  # int() would read the underscore
        (" 0x525913403060000019df924b2677a12", False),  # and strip the space
        ("0x252591340306000001９df924b2677a12", False),  # a fullwidth digit
        ("0xg525913403060000019df924b2677a12", False),
        ("not a cloid", False),
        (None, False),
    ],
)
def test_cloids_are_packed_only_when_they_unpack_to_themselves(
    cloid: str | None, packed: bool
) -> None:
    stored = pack_cloid(cloid)
    assert isinstance(stored, int) == packed
    assert unpack_cloid(stored) == cloid


def test_shapes_are_shared_and_children_kept_apart() -> None:
    plain = Order(coin="BTC", side="B", limitPx="1.0", sz="1.0", oid=1, timestamp=5, tif="Alo")
    other = msgspec.structs.replace(plain, oid=2, limitPx="2.0", sz="3.0", timestamp=6)
    assert shape_of(plain, "B") is shape_of(other, "B")
    assert shape_of(plain, "B") is not shape_of(plain, "A")
    child = {"coin": "BTC", "oid": 9, "triggerPx": "1.5", "children": [], "isTrigger": True}
    parent = msgspec.structs.replace(plain, children=(child, dict(child, oid=10)))
    shape = shape_of(parent, "B")
    assert shape is not shape_of(parent, "B")  # never shared
    record = Resting("0xab", "BTC", "1.0", "1.0", 5, "2.0", pack_cloid(None), shape)
    rebuilt = full_order(1, record)
    assert rebuilt.children == parent.children
    assert encode(rebuilt) == encode(msgspec.structs.replace(parent, user="0xab", origSz="2.0"))


def test_a_snapshot_order_on_the_wrong_side_is_refused() -> None:
    books = Books()
    wrong = Order(coin="BTC", side="A", limitPx="1.0", sz="1.0", oid=1, timestamp=5)
    with pytest.raises(SnapshotError, match="side"):
        books.set_coin("BTC", [("0xab", wrong)], [])
    assert "BTC" not in books
    spelled = msgspec.structs.replace(wrong, side="Bid")
    books.set_coin("BTC", [("0xab", spelled)], [])
    order = books.order(1)
    assert order is not None
    assert order.side == "B"


@pytest.mark.parametrize("fault", ["twice", "elsewhere", "bad size", "bad side"])
def test_a_failed_load_of_a_new_coin_leaves_no_record(fault: str) -> None:
    def order(oid: int, coin: str = "ETH", side: str = "B", sz: str = "1.0") -> Order:
        return Order(coin=coin, side=side, limitPx="1.0", sz=sz, oid=oid, timestamp=5)

    books = Books()
    books.set_coin("BTC", [("0xab", order(1, "BTC"))], [])
    bad = {
        "twice": order(2),
        "elsewhere": order(1),
        "bad size": order(4, sz="1e3"),
        "bad side": order(4, side="X"),
    }[fault]
    with pytest.raises((SnapshotError, DuplicateOrderError)):
        books.set_coin("ETH", [("0xab", order(2)), ("0xab", order(3))], [("0xcd", bad)])
    assert "ETH" not in books
    assert len(books) == 1
    assert books.order(2) is None
    assert books.order(3) is None
    assert books.order(1) is not None
