"""L2 aggregation (nSigFigs, mantissa, nLevels) and bbo against a brute-force reference."""

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, localcontext

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hlbook.book.l2 import DEFAULT_LEVELS, MAX_LEVELS, aggregate, bbo, bucket_price, l2_levels
from hlbook.book.l4 import ASK, BID, CoinBook, Level
from hlbook.book.resting import Resting, Shape
from hlbook.numbers import canonical, parse

# (nSigFigs, mantissa) combinations the API allows
ALLOWED = [(2, 1), (3, 1), (4, 1), (5, 1), (5, 2), (5, 5)]


def text(value: Decimal) -> str:
    """Canonical node text of a Decimal, computed without hlbook."""
    out = format(value.normalize(), "f")
    return out if "." in out else out + ".0"


def brute_bucket(px: Decimal, side: str, n_sig_figs: int, mantissa: int) -> Decimal:
    """SPEC §3 literally: width = mantissa * 10**(floor(log10(px)) + 1 - nSigFigs)."""
    with localcontext() as ctx:
        ctx.prec = 200
        exponent = px.adjusted()  # floor(log10(px)) for px > 0
        width = mantissa * Decimal(10) ** (exponent + 1 - n_sig_figs)
        rounding = ROUND_FLOOR if side == BID else ROUND_CEILING
        return (px / width).to_integral_value(rounding=rounding) * width


def brute_l2(
    orders: list[tuple[Decimal, Decimal]],
    side: str,
    n_levels: int,
    n_sig_figs: int | None,
    mantissa: int | None,
) -> list[tuple[str, str, int]]:
    """Bucket every order independently, sum, sort best first, cut to ``n_levels``."""
    buckets: dict[Decimal, tuple[Decimal, int]] = {}
    for px, sz in orders:
        key = px if n_sig_figs is None else brute_bucket(px, side, n_sig_figs, mantissa or 1)
        total, count = buckets.get(key, (Decimal(0), 0))
        buckets[key] = (total + sz, count + 1)
    ordered = sorted(buckets, reverse=side == BID)[:n_levels]
    return [(text(key), text(buckets[key][0]), buckets[key][1]) for key in ordered]


def make_book(bids: list[tuple[Decimal, Decimal]], asks: list[tuple[Decimal, Decimal]]) -> CoinBook:
    """A CoinBook holding the given ``(px, sz)`` orders (queue order as listed)."""
    book = CoinBook("TEST")
    oid = 0
    for side, orders in ((BID, bids), (ASK, asks)):
        levels = book.side(side)
        for px, sz in orders:
            oid += 1
            px_str = canonical(format(px, "f"))
            key = parse(px_str)
            level = levels.get(key)
            if level is None:
                level = levels[key] = Level(key, px_str)
            size = format(sz, "f")
            book.index[oid] = Resting("0x1", "TEST", px_str, size, 0, size, None, Shape(side))
            level.append(oid, parse(format(sz, "f")))
    return book


def D(value: str | int) -> Decimal:
    return Decimal(value)


# -- SPEC §3 examples ----------------------------------------------------------


@pytest.mark.parametrize(
    ("n_sig_figs", "mantissa", "bid", "ask"),
    [
        (5, 1, "106210.0", "106220.0"),
        (5, 2, "106200.0", "106220.0"),
        (5, 5, "106200.0", "106250.0"),
        (4, 1, "106200.0", "106300.0"),
        (3, 1, "106000.0", "107000.0"),
        (2, 1, "100000.0", "110000.0"),
    ],
)
def test_spec_examples_btc(n_sig_figs: int, mantissa: int, bid: str, ask: str) -> None:
    px = parse("106217.0")
    assert bucket_price(px, BID, n_sig_figs, mantissa) == parse(bid)
    assert bucket_price(px, ASK, n_sig_figs, mantissa) == parse(ask)
    book = make_book([(D("106217"), D("1.5"))], [(D("106217"), D("0.25"))])
    assert l2_levels(book, BID, 20, n_sig_figs, mantissa) == [(bid, "1.5", 1)]
    assert l2_levels(book, ASK, 20, n_sig_figs, mantissa) == [(ask, "0.25", 1)]


def test_spec_example_small_price_width() -> None:
    # 0.012345 at 5 significant figures: the width is 0.000001.
    assert bucket_price(parse("0.012345"), BID, 5) == parse("0.012345")
    assert bucket_price(parse("0.012345"), ASK, 5) == parse("0.012345")
    assert bucket_price(parse("0.0123455"), BID, 5) == parse("0.012345")
    assert bucket_price(parse("0.0123455"), ASK, 5) == parse("0.012346")
    assert bucket_price(parse("0.0123451"), ASK, 5, 5) == parse("0.01235")
    assert bucket_price(parse("0.012345"), BID, 2) == parse("0.012")


def test_rounding_up_crosses_a_power_of_ten() -> None:
    assert bucket_price(parse("99999.0"), ASK, 2) == parse("100000.0")
    assert bucket_price(parse("99999.0"), BID, 2) == parse("99000.0")
    assert bucket_price(parse("0.00999"), ASK, 2) == parse("0.01")


def test_widths_below_the_scale_keep_the_price() -> None:
    # 12 decimal places is the finest price there is: nothing to round.
    tiny = parse("0.000000001234")
    assert bucket_price(tiny, BID, 5) == tiny
    assert bucket_price(tiny, ASK, 5) == tiny


def test_aggregation_merges_sizes_and_counts() -> None:
    bids = [
        (D("106217"), D("1")),
        (D("106217"), D("2")),
        (D("106215"), D("0.5")),
        (D("106209"), D("4")),
    ]
    asks = [(D("106221"), D("1")), (D("106229"), D("1")), (D("106230"), D("0.00033"))]
    book = make_book(bids, asks)
    assert l2_levels(book, BID, 20, 5) == [("106210.0", "3.5", 3), ("106200.0", "4.0", 1)]
    assert l2_levels(book, ASK, 20, 5) == [("106230.0", "2.00033", 3)]
    assert l2_levels(book, BID) == [
        ("106217.0", "3.0", 2),
        ("106215.0", "0.5", 1),
        ("106209.0", "4.0", 1),
    ]


def test_n_levels_truncation() -> None:
    bids = [(D(100 - i), D("1")) for i in range(30)]
    asks = [(D(200 + 10 * i), D("2")) for i in range(150)]
    book = make_book(bids, asks)
    assert len(l2_levels(book, BID)) == DEFAULT_LEVELS
    assert [lv[0] for lv in l2_levels(book, BID, 3)] == ["100.0", "99.0", "98.0"]
    assert len(l2_levels(book, ASK, MAX_LEVELS)) == MAX_LEVELS
    assert len(l2_levels(book, BID, 1, 2)) == 1
    assert l2_levels(book, BID, 1, 2) == [("100.0", "1.0", 1)]
    assert l2_levels(book, BID, 2, 2) == [("100.0", "1.0", 1), ("99.0", "1.0", 1)]
    assert l2_levels(book, BID, 2, 1) == [("100.0", "1.0", 1), ("90.0", "10.0", 10)]
    # aggregate() stops at n_levels buckets
    assert len(aggregate(book.levels(ASK), ASK, 4, 2)) == 4
    assert len(l2_levels(book, BID, 100)) == 30


def test_bbo() -> None:
    assert bbo(CoinBook("X")) == (None, None)
    book = make_book([(D("99.5"), D("1")), (D("99"), D("2"))], [])
    assert bbo(book) == (("99.5", "1.0", 1), None)
    book = make_book([(D("99.5"), D("1")), (D("99.5"), D("0.5"))], [(D("100"), D("3"))])
    assert bbo(book) == (("99.5", "1.5", 2), ("100.0", "3.0", 1))


def test_empty_side() -> None:
    book = CoinBook("X")
    for n_sig_figs, mantissa in [(None, None), *ALLOWED]:
        assert l2_levels(book, BID, 20, n_sig_figs, mantissa) == []


# -- property: aggregation equals brute-force bucketing ------------------------

prices = st.one_of(
    st.builds(
        lambda m, k: Decimal(m).scaleb(-k),
        st.integers(min_value=1, max_value=9_999_999),
        st.integers(min_value=0, max_value=10),
    ),
    st.sampled_from([D("106217"), D("0.012345"), D("99999"), D("100000"), D("0.00999"), D("1")]),
    # clusters around one price, like a real book
    st.integers(min_value=106000, max_value=106400).map(Decimal),
    st.integers(min_value=12300, max_value=12400).map(lambda i: Decimal(i).scaleb(-6)),
)
sizes = st.builds(
    lambda m, k: Decimal(m).scaleb(-k),
    st.integers(min_value=1, max_value=10**9),
    st.integers(min_value=0, max_value=8),
)
orders = st.lists(st.tuples(prices, sizes), max_size=60)


@given(
    orders,
    orders,
    st.sampled_from([(None, None), *ALLOWED, (3, 2), (4, 5)]),
    st.integers(min_value=1, max_value=MAX_LEVELS),
)
def test_l2_equals_brute_force(
    bids: list[tuple[Decimal, Decimal]],
    asks: list[tuple[Decimal, Decimal]],
    params: tuple[int | None, int | None],
    n_levels: int,
) -> None:
    n_sig_figs, mantissa = params
    book = make_book(bids, asks)
    for side, side_orders in ((BID, bids), (ASK, asks)):
        expected = brute_l2(side_orders, side, n_levels, n_sig_figs, mantissa)
        assert l2_levels(book, side, n_levels, n_sig_figs, mantissa) == expected


@given(prices, st.sampled_from(ALLOWED))
def test_bucket_equals_brute_force(px: Decimal, params: tuple[int, int]) -> None:
    n_sig_figs, mantissa = params
    scaled = parse(text(px))
    for side in (BID, ASK):
        got = bucket_price(scaled, side, n_sig_figs, mantissa)
        want = brute_bucket(px, side, n_sig_figs, mantissa)
        # Below 10**-12 the width cannot be held; the price is then its own bucket.
        if want.as_tuple().exponent < -12 and want == px:  # type: ignore[operator]
            assert got == scaled
        else:
            assert got == parse(text(want))
        if side == BID:
            assert got <= scaled
        else:
            assert got >= scaled
