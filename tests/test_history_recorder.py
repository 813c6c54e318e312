"""The recorder on real mainnet blocks, and its gaps, duplicates and failures."""

from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from fixtures import MainnetSlice
from history_support import ALICE, T0, finished, make_block, record, trade_fills
from test_history_candles import brute_force

from hlbook.book.trades import Trade
from hlbook.history import FILLS, INTERVALS, STATUSES, HistoryRecorder, HistoryStore
from hlbook.model import Block
from hlbook.node.formats import FillLine, StatusLine, Stream, decode_line, time_ms
from hlbook.stages import Stage


def mainnet_blocks(mainnet: MainnetSlice) -> list[Block]:
    out = []
    for status_raw, fill_raw in zip(
        mainnet.lines[Stream.STATUSES], mainnet.lines[Stream.FILLS], strict=True
    ):
        statuses = decode_line(Stream.STATUSES, status_raw)
        fills = decode_line(Stream.FILLS, fill_raw)
        assert isinstance(statuses, StatusLine)
        assert isinstance(fills, FillLine)
        assert statuses.block_number == fills.block_number
        out.append(
            Block(
                statuses.block_number,
                time_ms(statuses.block_time),
                statuses.events,
                [],
                fills.events,
            )
        )
    return out


@pytest.fixture
def recorded(
    mainnet: MainnetSlice, tmp_path: Path
) -> Iterator[tuple[HistoryStore, HistoryRecorder, list[Block]]]:
    store = HistoryStore(tmp_path / "history.sqlite")
    recorder = HistoryRecorder(store)
    blocks = mainnet_blocks(mainnet)
    record(recorder, blocks)
    assert store.flush(10)
    yield store, recorder, blocks
    store.close()


def test_user_fills_equal_the_real_fills_of_each_user(
    mainnet: MainnetSlice, recorded: tuple[HistoryStore, HistoryRecorder, list[Block]]
) -> None:
    store, _, _ = recorded
    expected: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for raw in mainnet.lines[Stream.FILLS]:
        for user, fill in orjson.loads(raw)["events"]:
            expected[user].append(fill)
    assert len(expected) > 5
    for user, fills in expected.items():
        answer = store.fills(user)
        assert answer.fills == list(reversed(fills))  # newest first, exactly as written
        assert answer.height == mainnet.heights[-1]
        assert answer.gaps == ()


def test_finished_statuses_of_the_slice_answer_order_status(
    mainnet: MainnetSlice, recorded: tuple[HistoryStore, HistoryRecorder, list[Block]]
) -> None:
    store, _, _ = recorded
    last: dict[int, tuple[str, dict[str, Any], int]] = {}
    by_cloid: dict[tuple[str, str], int] = {}
    rejected: list[tuple[str, int]] = []
    for raw in mainnet.lines[Stream.STATUSES]:
        for event in orjson.loads(raw)["events"]:
            oid = event["order"]["oid"]
            if event["status"].endswith("Rejected"):
                rejected.append((event["user"], oid))
            elif event["status"] != "open":
                last[oid] = (event["user"], event, time_ms(event["time"]))
                if event["order"]["cloid"] is not None:
                    # Bots reuse cloids: the newest finished order with it answers.
                    by_cloid[(event["user"], event["order"]["cloid"])] = oid
    assert len(last) > 600
    for oid, (user, event, when) in last.items():
        answer, _ = store.finished_order(user, oid=oid)
        assert answer is not None
        assert answer["order"]["status"] == event["status"]
        assert answer["order"]["statusTimestamp"] == when
        assert answer["order"]["order"] == {
            key: value for key, value in event["order"].items() if key != "user"
        }
    for (user, cloid), oid in by_cloid.items():
        assert store.finished_order(user, cloid=cloid)[0] == store.finished_order(user, oid=oid)[0]
    for user, oid in rejected[:200]:
        if oid not in last:
            assert store.finished_order(user, oid=oid)[0] is None


def test_candles_of_the_slice_equal_a_recomputation_from_the_fills(
    mainnet: MainnetSlice, recorded: tuple[HistoryStore, HistoryRecorder, list[Block]]
) -> None:
    store, recorder, _ = recorded
    # Independently: each tid's taker fill is the trade.
    trades: list[Trade] = []
    seen: set[int] = set()
    for raw in mainnet.lines[Stream.FILLS]:
        for _, fill in orjson.loads(raw)["events"]:
            if fill["crossed"] and fill["tid"] not in seen:
                seen.add(fill["tid"])
                px = format(Decimal(fill["px"]).normalize(), "f")
                trades.append(
                    Trade(
                        coin=fill["coin"],
                        side=fill["side"],
                        px=px if "." in px else px + ".0",
                        sz=fill["sz"],
                        hash=fill["hash"],
                        time=fill["time"],
                        tid=fill["tid"],
                        users=("", ""),
                    )
                )
    assert len(trades) == 11
    for interval in INTERVALS:
        expected = sorted(brute_force(trades, interval).values(), key=lambda c: c.open_time)
        got, _, _ = store.candles("BTC", interval, 0)
        assert got == expected, interval
        assert recorder.current_candle("BTC", interval) == expected[-1]
    assert len(store.trades("BTC")) == 11


def test_changed_candles_are_the_last_blocks(
    recorded: tuple[HistoryStore, HistoryRecorder, list[Block]],
) -> None:
    _store, recorder, blocks = recorded
    with_fills = [b for b in blocks if b.fills]
    assert recorder.changed_height == blocks[-1].height
    fresh = HistoryRecorder(HistoryStore(None))
    fresh.record_fills(with_fills[0])
    assert fresh.changed_height == with_fills[0].height
    assert {c.interval for c in fresh.changed_candles} == set(INTERVALS)
    fresh.store.close()


def test_restart_records_an_offline_gap_and_no_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"

    def block(height: int) -> Block:
        time = T0 + 70 * height
        return make_block(
            height, time, fills=trade_fills(height, time), statuses=[finished(height, time=time)]
        )

    with HistoryStore(path) as store:
        record(HistoryRecorder(store), [block(h) for h in range(100, 110)])
    with HistoryStore(path) as store:
        recorder = HistoryRecorder(store)
        record(recorder, [block(h) for h in range(105, 110)])  # already recorded: ignored
        record(recorder, [block(115), block(116)])  # 110-114 happened while hlbook was down
        assert store.flush(10)
        gaps = store.gaps()
        assert [(g.stream, g.reason, g.from_height, g.to_height) for g in gaps] == [
            (FILLS, "offline", 110, 114),
            (STATUSES, "offline", 110, 114),
        ]
        assert (gaps[0].from_time, gaps[0].to_time) == (T0 + 70 * 109, T0 + 70 * 115)
        assert len(store.fills(ALICE).fills) == 12
        # Steady state: heights that skip (the streaming layout's empty blocks) are no gap.
        record(recorder, [block(130)])
        assert store.flush(10)
        assert store.gaps() == gaps
    with HistoryStore(path) as store:
        assert store.gaps() == gaps  # persisted


def test_a_node_far_below_the_store_is_warned_of_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A restored node, or another chain, on a store that is ahead of it: history stood
    # still with no word (an operator walkthrough).
    path = tmp_path / "history.sqlite"
    with HistoryStore(path) as store:
        record(HistoryRecorder(store), [make_block(50_000, T0, fills=trade_fills(1, T0))])
    with caplog.at_level("WARNING", logger="hlbook.history"), HistoryStore(path) as store:
        recorder = HistoryRecorder(store)
        record(recorder, [make_block(49_999, T0, fills=trade_fills(2, T0))])  # an overlap
        assert not caplog.records
        for height in (40_000, 40_001, 40_002):
            record(recorder, [make_block(height, T0, fills=trade_fills(height, T0))])
        assert store.flush(10)
        assert len(store.fills(ALICE).fills) == 1  # nothing recorded twice or out of order
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2, warned  # once per stream
    assert "the node is at block 40000, the store already holds fills up to block 50000" in (
        warned[0] + warned[1]
    )


def test_a_re_bootstrap_that_skips_blocks_is_a_resync_gap() -> None:
    with HistoryStore(None) as store:
        recorder = HistoryRecorder(store)
        record(recorder, [make_block(10, T0, fills=trade_fills(1, T0))])
        recorder.resync(None, ["BTC"])  # type: ignore[arg-type]  # a repair: no gap
        record(recorder, [make_block(12, T0 + 140, fills=trade_fills(2, T0 + 140))])
        assert store.gaps() == ()
        recorder.resync(None)  # type: ignore[arg-type]  # a full re-bootstrap
        record(recorder, [make_block(20, T0 + 700, fills=trade_fills(3, T0 + 700))])
        (fills_gap, statuses_gap) = store.gaps()
        assert (fills_gap.reason, fills_gap.from_height, fills_gap.to_height) == ("resync", 13, 19)
        assert (fills_gap.from_time, fills_gap.to_time) == (T0 + 140, T0 + 700)
        assert statuses_gap.stream == STATUSES


def test_a_bad_block_is_logged_and_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    with HistoryStore(None) as store:
        recorder = HistoryRecorder(store)
        broken = make_block(1, T0, fills=trade_fills(1, T0))
        broken.fills = [("0xuser", None)]  # type: ignore[list-item]
        recorder.publish(Stage.FILLS, broken, None, {})  # type: ignore[arg-type]
        assert recorder.errors == 1
        assert "cannot record block 1" in caplog.text
        record(recorder, [make_block(2, T0 + 70, fills=trade_fills(2, T0 + 70))])
        assert store.flush(10)
        assert len(store.fills(ALICE).fills) == 1
