"""The async info handlers: official shapes, validation, threads, and consistency with pushes."""

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing
from history_support import ALICE, BOB, T0, finished, make_block, record, trade_fills

from hlbook.history import (
    Answer,
    HistoryQueries,
    HistoryRecorder,
    HistoryRequestError,
    HistoryStore,
    order_status_wire,
    parse_order_status,
)
from hlbook.node.formats import Order

CANDLE_KEYS = {"t", "T", "s", "i", "o", "c", "h", "l", "v", "n"}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[HistoryStore]:
    with HistoryStore(tmp_path / "history.sqlite") as opened:
        recorder = HistoryRecorder(opened)
        record(
            recorder,
            [
                make_block(
                    100 + i,
                    T0 + 70 * i,
                    fills=trade_fills(i + 1, T0 + 70 * i, px=f"{100 + i}.0"),
                    statuses=[finished(500 + i, "filled", time=T0 + 70 * i)],
                )
                for i in range(10)
            ],
        )
        assert opened.flush(10)
        yield opened


async def test_user_fills(store: HistoryStore) -> None:
    queries = HistoryQueries(store)
    shouted = "0x" + ALICE[2:].upper()  # addresses are accepted in any case
    answer = await queries.handlers()["userFills"]({"type": "userFills", "user": shouted})
    assert isinstance(answer, Answer)
    assert [f["tid"] for f in answer.data] == list(range(10, 0, -1))
    assert answer.data[0]["side"] == "B"
    assert answer.height == 109
    assert answer.gaps == ()


async def test_user_fills_by_time(store: HistoryStore) -> None:
    queries = HistoryQueries(store)
    body = {"type": "userFillsByTime", "user": BOB, "startTime": T0 + 70, "endTime": T0 + 210}
    answer = await queries.user_fills_by_time(body)
    assert [f["time"] for f in answer.data] == [T0 + 70, T0 + 140, T0 + 210]
    answer = await queries.user_fills_by_time({**body, "reversed": True, "endTime": None})
    assert [f["tid"] for f in answer.data] == list(range(10, 1, -1))
    empty = await queries.user_fills_by_time({**body, "startTime": T0 + 300, "endTime": T0})
    assert empty.data == []


async def test_candle_snapshot(store: HistoryStore) -> None:
    queries = HistoryQueries(store)
    answer = await queries.candle_snapshot(
        {"type": "candleSnapshot", "req": {"coin": "BTC", "interval": "1h", "startTime": T0}}
    )
    (candle,) = answer.data
    assert set(candle) == CANDLE_KEYS
    assert (candle["o"], candle["c"], candle["h"], candle["l"]) == (
        "100.0",
        "109.0",
        "109.0",
        "100.0",
    )
    assert (candle["v"], candle["n"], candle["s"], candle["i"]) == ("10.0", 10, "BTC", "1h")
    assert candle["T"] - candle["t"] == 3_600_000 - 1


async def test_order_status(store: HistoryStore) -> None:
    queries = HistoryQueries(store)
    answer = await queries.order_status({"type": "orderStatus", "user": ALICE, "oid": 503})
    assert answer.data["status"] == "order"
    assert answer.data["order"]["status"] == "filled"
    assert answer.data["order"]["statusTimestamp"] == T0 + 210
    unknown = await queries.order_status({"type": "orderStatus", "user": BOB, "oid": 503})
    assert unknown.data == {"status": "unknownOid"}
    # The lead's resting-order path renders the same shape from a book order.
    order = Order(coin="BTC", side="B", limitPx="1.0", sz="2.0", oid=7, timestamp=T0, origSz="2.0")
    resting = order_status_wire(order, "open", T0)
    assert set(resting["order"]["order"]) == set(answer.data["order"]["order"])
    request = parse_order_status({"user": ALICE, "oid": 509})
    assert (await queries.finished_order(request)).data["order"]["order"]["oid"] == 509


async def test_bad_requests_raise_before_any_read(store: HistoryStore) -> None:
    queries = HistoryQueries(store)
    with pytest.raises(HistoryRequestError, match=r"userFills\.user"):
        await queries.user_fills({"type": "userFills", "user": "0xnope"})
    with pytest.raises(HistoryRequestError, match=r"candleSnapshot\.req\.interval"):
        await queries.candle_snapshot({"req": {"coin": "BTC", "interval": "7m", "startTime": 0}})


async def test_the_snapshot_is_taken_when_the_handler_starts(store: HistoryStore) -> None:
    # A channel registers its subscriber and starts the snapshot query in one step:
    # blocks published after that are pushed, not in the snapshot (and vice versa).
    queries = HistoryQueries(store)
    recorder = HistoryRecorder(store)
    store.pause_writes()
    record(recorder, [make_block(110, T0 + 700, fills=trade_fills(11, T0 + 700))])
    results: list[Answer[list[dict[str, object]]]] = []

    async def snapshot() -> None:
        results.append(await queries.recent_fills(ALICE))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(snapshot)
        await trio.testing.wait_all_tasks_blocked()
        # Published after the snapshot started: must not be in it.
        record(recorder, [make_block(111, T0 + 770, fills=trade_fills(12, T0 + 770))])
    store.resume_writes()
    (answer,) = results
    assert [f["tid"] for f in answer.data][:2] == [11, 10]
    assert answer.height == 110


async def test_queries_run_in_threads_not_on_the_trio_thread(store: HistoryStore) -> None:
    threads: list[str] = []
    original = store.fills

    def spy(*args: object, **kwargs: object) -> object:
        threads.append(threading.current_thread().name)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    store.fills = spy  # type: ignore[method-assign,assignment]
    await HistoryQueries(store).user_fills({"user": ALICE})
    assert threads
    assert threads[0] != threading.current_thread().name
