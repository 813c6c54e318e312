"""Diffs first, details later: ``apply_diffs`` + ``attach_details`` against ``apply``.

The same random blocks (from the model test's generator: new with and
without ``insertBefore``, updates, removes, re-used oids, statuses for some
new orders and not others, diffs without a side) are applied whole to one
:class:`Books` and in two steps to another, with the diffs running a random
number of blocks ahead of the statuses. Whenever both have attached the
same statuses they must be identical, order by order and field by field.
"""

from typing import Any

import pytest
from fixtures import OTHER, USER, block, book_state, new, remove, status, update
from hypothesis import given
from hypothesis import strategies as st
from msgspec import UNSET
from test_book_model import Draw, Naive

from hlbook.book.books import Books
from hlbook.errors import BlockOrderError, OrderMismatchError
from hlbook.model import Block

H = 1000


def needs_statuses(item: Block) -> bool:
    return any(d.side is UNSET and not isinstance(d.raw_book_diff, str) for d in item.diffs)


@given(st.data())
def test_two_steps_give_the_books_of_whole_blocks(data: st.DataObject) -> None:
    whole, split, model, next_oid = Books(0), Books(0), Naive(), [0]
    blocks: list[Block] = []
    height = 0
    for _ in range(data.draw(st.integers(1, 10), label="blocks")):
        draw = Draw(data, model, next_oid)
        for _ in range(data.draw(st.integers(0, 8), label="diffs")):
            draw.valid()
        height += data.draw(st.integers(1, 2))
        blocks.append(block(height, statuses=draw.statuses, diffs=draw.diffs))
        model = draw.work
    attached = 0  # blocks of ``split`` whose statuses are attached
    for index, item in enumerate(blocks):
        whole.apply(item)
        # A block whose diffs lack a side waits for its statuses (the data path does so).
        final = needs_statuses(item)
        if final:
            while attached < index:
                split.attach_details(blocks[attached])
                attached += 1
        split.apply_diffs(item, statuses_final=final)
        assert split.height == whole.height
        # Levels are right as soon as the diffs are applied.
        assert _levels(split) == _levels(whole)
        lag = data.draw(st.integers(0, 3), label="statuses behind")
        while attached < len(blocks[: index + 1]) - lag:
            split.attach_details(blocks[attached])
            attached += 1
        assert split.details_height == (blocks[attached - 1].height if attached else 0)
        if attached == index + 1:
            assert book_state(split) == book_state(whole)
            assert split.undetailed_coins() == set()
            assert split.undetailed_users() == set()
    while attached < len(blocks):
        split.attach_details(blocks[attached])
        attached += 1
    assert book_state(split) == book_state(whole)
    assert split.details_height == split.height == whole.height


def _levels(books: Books) -> dict[str, Any]:
    return {
        coin: [
            [(lv.px, lv.total, tuple(lv.oids)) for lv in book.levels(side)] for side in ("B", "A")
        ]
        for coin in books.coins()
        if (book := books.book(coin)) is not None
    }


def test_details_arrive_later_with_the_current_size() -> None:
    books = Books(H)
    books.apply_diffs(block(H + 1, diffs=[new(1, sz="2.0")]))
    order = books.order(1)
    assert order is not None
    # As the diff made it: its user, side, px and size; defaults for the rest.
    assert (order.user, order.side, order.limitPx, order.sz, order.tif) == (
        USER,
        "B",
        "100.0",
        "2.0",
        None,
    )
    assert not books.details_ready("BTC")
    assert not books.user_ready(USER)
    assert books.details_height == H
    # The next block's diffs come before this block's statuses: a partial fill.
    books.apply_diffs(block(H + 2, diffs=[update(1, "2.0", "1.5")]))
    books.attach_details(
        block(H + 1, statuses=[status(1, user=OTHER, sz="2.0", tif="Gtc", cloid="0x1")])
    )
    order = books.order(1)
    assert order is not None
    assert (order.user, order.sz, order.tif, order.cloid) == (OTHER, "1.5", "Gtc", "0x1")
    assert books.user_ready(USER)
    # BTC changed at H+2, whose statuses are not attached yet.
    assert not books.details_ready("BTC")
    assert books.undetailed_coins() == {"BTC"}
    books.attach_details(block(H + 2))
    assert books.details_ready("BTC")
    assert books.details_height == H + 2


def test_an_order_removed_before_its_details_came_is_left_alone() -> None:
    books = Books(H)
    books.apply_diffs(block(H + 1, diffs=[new(1), new(2, px="101.0")]))
    books.apply_diffs(block(H + 2, diffs=[remove(1)]))
    applied = books.attach_details(block(H + 1, statuses=[status(1), status(2, px="101.0")]))
    assert books.order(1) is None
    order = books.order(2)
    assert order is not None
    assert order.tif == "Alo"
    assert set(applied.touched) == {"BTC"}
    assert books.user_ready(USER)


def test_triggered_details_arrive_later() -> None:
    books = Books(H)
    books.apply_diffs(block(H + 1, diffs=[new(7, px="99.0")]))
    trigger = status(
        7, "triggered", px="98.0", isTrigger=True, triggerCondition="tp", tif=None, time_ms=5
    )
    books.attach_details(block(H + 1, statuses=[trigger]))
    order = books.order(7)
    assert order is not None
    assert (order.limitPx, order.isTrigger, order.triggerCondition, order.tif) == (
        "99.0",
        False,
        "Triggered",
        "Gtc",
    )
    assert order.timestamp == 5


def test_out_of_order_details_are_refused() -> None:
    books = Books(H)
    books.apply_diffs(block(H + 1, diffs=[new(1)]))
    with pytest.raises(BlockOrderError, match="statuses before their diffs"):
        books.attach_details(block(H + 2))
    books.attach_details(block(H + 1))
    with pytest.raises(BlockOrderError, match="already attached"):
        books.attach_details(block(H + 1))


def test_a_sideless_diff_needs_its_statuses_final() -> None:
    books = Books(H)
    sideless = block(H + 1, statuses=[status(1)], diffs=[new(1, side=None)])
    with pytest.raises(OrderMismatchError, match="no side"):
        books.apply_diffs(sideless)
    books.apply_diffs(sideless, statuses_final=True)
    order = books.order(1)
    assert order is not None
    assert (order.side, order.tif) == ("B", "Alo")
    assert books.user_ready(USER)


def test_catch_up_request_is_a_flag() -> None:
    books = Books(H)
    assert not books.catch_up_wanted
    books.request_catch_up()
    assert books.catch_up_wanted
