"""``orderStatus`` between a block's diffs and its statuses: never a false ``unknownOid``."""

import json

import trio
from fixtures import USER, block, new, remove, status

from hlbook.book.books import Books
from hlbook.history import HistoryRecorder, HistoryStore
from hlbook.history.queries import HistoryQueries
from hlbook.info.orders import OrdersInfo
from hlbook.stages import Stage


async def test_an_order_filled_in_a_block_whose_statuses_lag_is_found_once_they_come() -> None:
    books = Books(9)
    books.apply(block(10, statuses=[status(1, "open", px="100.0")], diffs=[new(1, px="100.0")]))
    store = HistoryStore(None)
    recorder = HistoryRecorder(store)
    # Block 11 fills order 1: its diff is applied, its status line not read yet.
    filled = block(11, statuses=[status(1, "filled", px="100.0")], diffs=[remove(1, px="100.0")])
    books.apply_diffs(filled)
    statuses_attached = trio.Event()

    async def wait_for_details(height: int) -> None:
        await statuses_attached.wait()

    info = OrdersInfo(lambda: books, wait_for_details, HistoryQueries(store))
    request = {"type": "orderStatus", "user": USER, "oid": 1}
    answers: list[dict[str, object]] = []

    async def ask() -> None:
        answers.append(json.loads(await info.answer(request, json.dumps(request).encode())))

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask)
            await trio.sleep(0.05)
            assert answers == []  # it waits for the statuses rather than say unknownOid
            applied = books.attach_details(filled)
            recorder.publish(Stage.STATUSES, filled, books, applied.touched)
            statuses_attached.set()
        [answer] = answers
        assert answer["status"] == "order"
        assert answer["order"]["status"] == "filled"  # type: ignore[index]
        assert answer["order"]["order"]["oid"] == 1  # type: ignore[index]
        # An oid nobody has is answered at once (the books are complete now).
        unknown = {"type": "orderStatus", "user": USER, "oid": 999}
        with trio.fail_after(1):
            body = await info.answer(unknown, json.dumps(unknown).encode())
        assert json.loads(body) == {"status": "unknownOid"}
    finally:
        store.close()
