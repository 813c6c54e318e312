"""The sans-I/O supervisor: every decision of the data path, with explicit times.

A real :class:`BlockJoiner` (``parts=True``) or :class:`OrderedBlocks` is the
source, fed with decoded node lines; a recording sink stands for the fan-out.
Snapshot fetches, validation work and restarts are actions the tests carry
out by hand, the way the Trio shell does.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from fixtures import BASE_MS, OTHER, USER, fill, line, new, remove, status, update

from hlbook.book.books import Books
from hlbook.book.compare import Comparison
from hlbook.book.l4 import CoinBook
from hlbook.book.validate import compare_moved
from hlbook.errors import DivergenceError
from hlbook.model import Block
from hlbook.node.formats import (
    AnyLine,
    Layout,
    Order,
    SnapshotSide,
    Stream,
    decode_line,
    decode_snapshot,
    encode_snapshot,
)
from hlbook.node.join import BlockJoiner
from hlbook.source import OrderedBlocks
from hlbook.stages import Stage
from hlbook.supervisor import (
    Action,
    AdvanceCheck,
    CompareCheck,
    FetchCheck,
    RestartIngestion,
    Settings,
    Status,
    Supervisor,
    WantSnapshot,
)

S, D, F = Stream.STATUSES, Stream.DIFFS, Stream.FILLS
H = 100  # the first snapshot's height


class Recorder:
    """A :class:`~hlbook.stages.BlockSink` that writes down what it is told."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.resync_times: list[int] = []

    def publish(
        self, stage: Stage, block: Block, books: Books, touched: Mapping[str, CoinBook]
    ) -> None:
        self.calls.append(
            (stage, block.height, books.height, books.details_height, block.time, set(touched))
        )

    def resync(self, books: Books, coins: Any = None) -> None:
        self.calls.append(("resync", books.height, None if coins is None else sorted(coins)))
        self.resync_times.append(books.time)

    def notify(self, text: str) -> None:
        self.calls.append(("notify", text))

    def stages(self) -> list[tuple[str, int]]:
        """``(stage, height)`` of every publish, in order, and the resyncs."""
        out: list[tuple[str, int]] = []
        for call in self.calls:
            if isinstance(call[0], Stage):
                out.append((call[0].value, call[1]))
            elif call[0] == "resync":
                out.append(("resync", call[1]))
        return out

    def take(self) -> list[tuple[str, int]]:
        found = self.stages()
        self.calls.clear()
        return found


def whole(height: int) -> list[tuple[str, int]]:
    """The four stages of one block, in the order a whole block publishes them."""
    return [(stage, height) for stage in ("diffs", "statuses", "fills", "block")]


def ln(stream: Stream, height: int, events: list[Any] | None = None) -> AnyLine:
    return decode_line(stream, line(height, events or []))


def snapshot_books(height: int = H, orders: list[tuple[int, str]] = ()) -> Books:  # type: ignore[assignment]
    """Books at ``height`` with resting BTC bids ``(oid, px)`` of size 1 by ``USER``."""
    bids: SnapshotSide = [
        (USER, Order(coin="BTC", side="B", limitPx=px, sz="1.0", oid=oid, timestamp=1, tif="Gtc"))
        for oid, px in orders
    ]
    data = encode_snapshot(height, [("BTC", bids, []), ("ETH", [], [])])
    found, coins = decode_snapshot(data)
    return Books.from_snapshot(found, coins)


class Harness:
    """A supervisor driving a joiner, and the sink it publishes to."""

    def __init__(
        self,
        layout: Layout = Layout.BY_BLOCK,
        streams: tuple[Stream, ...] = (S, D, F),
        *,
        unknown_time: bool = False,
        **settings: Any,
    ) -> None:
        self.sink = Recorder()
        self.sup = Supervisor(self.sink, Settings(**{"validate_every": 0, **settings}))
        self.layout = layout
        self.joiner = BlockJoiner(layout, streams, parts=True, quiet_after=0.3)
        for stream in streams:
            # Every reader began right after block H (whose time it read).
            self.joiner.start_after(stream, H, None if unknown_time else BASE_MS + 70 * H)
        self.actions: list[Action] = self.sup.attach(
            self.joiner,
            0.0,
            contiguous=layout is Layout.BY_BLOCK,
            layout=layout,
        )

    def status(self) -> Status:
        """The supervisor's status (a call: mypy must not narrow it between steps)."""
        return self.sup.status

    def feed(
        self, stream: Stream, height: int, events: list[Any] | None = None, now: float = 0.0
    ) -> None:
        out = self.joiner.feed(stream, ln(stream, height, events), now)
        self.actions += self.sup.receive(out, now)
        self.actions += self.sup.tick(now)

    def block(
        self,
        height: int,
        statuses: Sequence[Any] = (),
        diffs: Sequence[Any] = (),
        fills: Sequence[Any] = (),
        now: float = 0.0,
    ) -> None:
        for stream, events in ((D, diffs), (S, statuses), (F, fills)):
            if stream in self.joiner.streams:
                self.feed(stream, height, list(events), now)

    def want(self) -> WantSnapshot:
        wants = [a for a in self.actions if isinstance(a, WantSnapshot)]
        assert wants, self.actions
        self.actions = [a for a in self.actions if not isinstance(a, WantSnapshot)]
        return wants[-1]

    def load(self, books: Books, now: float = 0.0) -> None:
        want = self.want()
        self.actions += self.sup.snapshot_loaded(books, "test", want.generation, now)


def test_bootstrap_applies_held_blocks_and_goes_live() -> None:
    h = Harness()
    want = h.want()
    assert (want.reason, want.delay, want.generation) == ("starting up", 0.0, 1)
    assert h.status() is Status.BOOTSTRAPPING
    h.block(H + 1, diffs=[new(1)], statuses=[status(1)])
    h.block(H + 2)
    assert h.sink.calls == []  # held until the books exist
    h.actions.append(want)
    h.load(snapshot_books())
    assert h.status() is Status.LIVE
    assert h.sink.take() == [
        ("resync", H),
        ("diffs", H + 1),
        ("statuses", H + 1),
        ("fills", H + 1),
        ("block", H + 1),
        ("diffs", H + 2),
        ("statuses", H + 2),
        ("fills", H + 2),
        ("block", H + 2),
    ]
    books = h.sup.books
    assert books is not None
    assert (books.height, books.details_height) == (H + 2, H + 2)
    assert h.sup.stats.bootstraps == 1
    assert h.sup.stats.blocks_applied == 2


def test_diffs_are_published_before_their_statuses_are_written() -> None:
    h = Harness()
    h.load(snapshot_books())
    h.sink.take()
    h.feed(D, H + 1, [new(1, sz="2.0")])
    h.feed(D, H + 2, [update(1, "2.0", "1.5")])  # the diff stream runs a block ahead
    # l2Book, bbo: both blocks' diffs are out; the order rests with the diff's fields.
    assert h.sink.calls == [
        (Stage.DIFFS, H + 1, H + 1, H, BASE_MS + 70 * (H + 1), {"BTC"}),
        (Stage.DIFFS, H + 2, H + 2, H, BASE_MS + 70 * (H + 2), {"BTC"}),
    ]
    books = h.sup.books
    assert books is not None
    order = books.order(1)
    assert order is not None
    assert (order.sz, order.tif) == ("1.5", None)
    assert not books.details_ready("BTC")
    assert not books.user_ready(USER)
    h.sink.take()
    h.feed(S, H + 1, [status(1, user=OTHER, sz="2.0", tif="Gtc")])
    h.feed(F, H + 1, [fill(USER, 5, side="B", crossed=True)])
    assert h.sink.calls == [
        (Stage.STATUSES, H + 1, H + 2, H + 1, BASE_MS + 70 * (H + 1), {"BTC"}),
        (Stage.FILLS, H + 1, H + 2, H + 1, BASE_MS + 70 * (H + 1), set()),
        (Stage.BLOCK, H + 1, H + 2, H + 1, BASE_MS + 70 * (H + 1), {"BTC"}),
    ]
    order = books.order(1)
    assert order is not None
    assert (order.user, order.sz, order.tif) == (OTHER, "1.5", "Gtc")


def test_statuses_written_first_wait_for_their_diffs() -> None:
    h = Harness()
    h.load(snapshot_books())
    h.sink.take()
    h.feed(S, H + 1, [status(1, tif="Gtc")])
    h.feed(F, H + 1)
    h.feed(S, H + 2)
    assert h.sink.take() == [("fills", H + 1)]  # trades need only the fills
    h.feed(D, H + 1, [new(1)])
    assert h.sink.take() == [("diffs", H + 1), ("statuses", H + 1), ("block", H + 1)]
    books = h.sup.books
    assert books is not None
    order = books.order(1)
    assert order is not None
    assert order.tif == "Gtc"  # its statuses were complete: detailed at once


def test_a_diff_without_a_side_waits_for_its_status() -> None:
    h = Harness()
    h.load(snapshot_books())
    h.sink.take()
    h.feed(D, H + 1, [new(1, side=None)])
    assert h.sink.take() == []
    h.feed(S, H + 1, [status(1, side="A")])
    assert h.sink.take() == [("diffs", H + 1), ("statuses", H + 1)]
    books = h.sup.books
    assert books is not None
    order = books.order(1)
    assert order is not None
    assert order.side == "A"


def test_a_gap_holds_blocks_and_a_fresh_snapshot_heals_it() -> None:
    h = Harness()
    h.load(snapshot_books())
    h.block(H + 1)
    h.sink.take()
    h.feed(D, H + 2)
    h.feed(F, H + 2)
    h.block(H + 3)  # the status line of H+2 was never written
    want = h.want()
    assert want.generation == 2
    assert "order_statuses skipped it" in want.reason
    assert h.status() is Status.RESYNCING
    assert h.sup.stats.gaps == 1
    # H+3's diffs went out before its statuses showed the gap; the rest of it is held.
    assert h.sink.take() == [("diffs", H + 2), ("fills", H + 2), ("diffs", H + 3)]
    h.block(H + 4)
    assert h.sink.take() == []
    h.actions.append(want)
    h.load(snapshot_books(H + 2))
    assert h.sink.take() == [("resync", H + 2)] + [
        (stage, height)
        for height in (H + 3, H + 4)
        for stage in ("diffs", "statuses", "fills", "block")
    ]
    assert h.status() is Status.LIVE


def test_a_divergent_block_changes_nothing_and_resyncs() -> None:
    h = Harness()
    h.load(snapshot_books(orders=[(7, "100.0")]))
    h.sink.take()
    books = h.sup.books
    assert books is not None
    # One good diff and one that cannot apply: the good one must not be applied either.
    h.feed(D, H + 1, [new(8, px="99.0"), remove(9)])
    assert "remove of an order that is not resting" in h.want().reason
    assert h.sup.stats.divergences == 1
    assert books.height == H
    assert books.order(8) is None
    assert h.sink.take() == []


def test_a_malformed_line_resyncs_at_once() -> None:
    h = Harness()
    h.load(snapshot_books())
    h.block(H + 1)
    actions = h.sup.fault("malformed order_statuses line", 1.0, bad_line=True)
    actions += h.sup.receive(h.joiner.lost(S, None), 1.0)
    (want,) = actions
    assert isinstance(want, WantSnapshot)
    assert h.sup.stats.bad_lines == 1
    assert h.sup.stats.last_error == "malformed order_statuses line"
    assert h.status() is Status.RESYNCING


def test_a_snapshot_older_than_the_held_blocks_asks_again_with_backoff() -> None:
    h = Harness()
    h.load(snapshot_books())
    h.block(H + 1)
    h.block(H + 3)  # H+2 missing everywhere
    first = h.want()
    h.block(H + 4)
    h.actions.append(first)
    h.load(snapshot_books(H + 1))  # the gap is still ahead of it
    second = h.want()
    assert (second.reason, second.delay) == (f"snapshot at {H + 1} too old", 0.5)
    h.actions.append(second)
    h.load(snapshot_books(H + 1))
    assert h.want().delay == 1.0
    h.sink.take()
    h.actions.append(WantSnapshot("", 0, h.sup._generation))
    h.load(snapshot_books(H + 3))
    assert h.sink.take()[-4:] == [
        ("diffs", H + 4),
        ("statuses", H + 4),
        ("fills", H + 4),
        ("block", H + 4),
    ]


def test_a_failed_snapshot_is_retried_with_backoff_and_old_answers_are_ignored() -> None:
    h = Harness(retry_max=2.0)
    want = h.want()
    delays = []
    for _ in range(4):
        (retry,) = h.sup.snapshot_failed("cannot reach the node", want.generation, 0.0)
        assert isinstance(retry, WantSnapshot)
        assert retry.generation == want.generation
        delays.append(retry.delay)
    assert delays == [0.5, 1.0, 2.0, 2.0]
    assert h.sup.detail == "cannot reach the node (retrying in 2 s)"
    assert h.sup.snapshot_failed("old", want.generation - 1, 0.0) == []
    assert h.sup.snapshot_loaded(snapshot_books(), "old", want.generation - 1, 0.0) == []
    assert h.sup.books is None


def test_a_quiet_node_is_stale_then_live_again() -> None:
    h = Harness(stale_after=2.0)
    h.load(snapshot_books(), now=10.0)
    h.block(H + 1, now=10.5)
    assert h.sup.next_deadline() == pytest.approx(12.5)
    assert h.sup.tick(12.4) == []
    assert not h.sup.stale
    h.sup.tick(12.5)
    assert h.sup.stale
    assert h.status() is Status.STALE
    text = f"feed stale: no block from the node for 2 s (last height {H + 1})"
    assert h.sup.detail == text
    assert ("notify", text) in h.sink.calls
    assert h.sup.stats.stale_periods == 1
    h.sup.tick(20.0)
    assert h.sup.stats.stale_periods == 1  # said once
    h.block(H + 2, now=21.0)
    assert h.status() is Status.LIVE
    assert not h.sup.stale


def test_statuses_that_stop_while_diffs_go_on_make_the_feed_stale_until_they_return() -> None:
    # The status file gone (replaced by a directory, say): l2Book stays right, but order
    # details, l4Book and the order channels wait. Health and subscribers must hear it.
    h = Harness(stale_after=2.0)
    h.load(snapshot_books(), now=10.0)
    h.feed(D, H + 1, [new(1, sz="2.0")], now=10.5)
    h.feed(D, H + 2, now=11.0)  # the diff stream goes on; statuses of H + 1 never come
    assert h.status() is Status.LIVE
    assert h.sup.next_deadline() == pytest.approx(12.5)  # when the lag started + 2 s
    h.feed(D, H + 3, now=12.0)
    assert h.status() is Status.LIVE
    h.sup.tick(12.6)
    assert h.status() is Status.STALE
    text = (
        f"feed stale: no statuses from the node for 2 s (order details at block {H},"
        f" levels at {H + 3}): l4Book, order channels and openOrders wait for them"
    )
    assert h.sup.detail == text
    assert [c for c in h.sink.calls if c[0] == "notify"] == [("notify", text)]
    h.feed(D, H + 4, now=13.0)  # more diffs do not make it live: details still wait
    h.sup.tick(14.0)
    assert h.status() is Status.STALE
    assert [c for c in h.sink.calls if c[0] == "notify"] == [("notify", text)]  # said once
    h.feed(S, H + 1, [status(1, sz="2.0")], now=14.5)
    assert h.status() is Status.LIVE
    assert h.sup.detail == ""
    books = h.sup.books
    assert books is not None
    assert books.details_height == H + 1


def test_a_resync_that_cannot_finish_is_stale_too() -> None:
    h = Harness(stale_after=2.0)
    h.load(snapshot_books(), now=0.0)
    h.actions += h.sup.fault("reading fills failed: boom", 0.5)
    h.sup.tick(2.0)
    assert h.sink.calls[-1] == (
        "notify",
        "feed stale: no block applied for 2 s while resyncing (reading fills failed: boom); "
        f"books held at height {H}",
    )
    assert h.status() is Status.RESYNCING


def test_streaming_quiet_streams_complete_blocks_by_time() -> None:
    h = Harness(Layout.STREAMING)
    h.load(snapshot_books())
    h.sink.take()
    h.feed(D, H + 1, [new(1)], now=1.0)
    h.feed(S, H + 1, [status(1)], now=1.0)
    for stream in (S, D, F):
        h.actions += h.sup.receive(h.joiner.caught_up(stream, 1.0), 1.0)
    assert h.sup.next_deadline() == pytest.approx(1.3)
    assert h.sup.tick(1.29) == []
    assert h.sink.take() == []
    h.sup.tick(1.3)
    assert h.sink.take() == [
        ("diffs", H + 1),
        ("statuses", H + 1),
        ("fills", H + 1),
        ("block", H + 1),
    ]


def test_streaming_a_late_diff_line_resyncs() -> None:
    h = Harness(Layout.STREAMING)
    h.load(snapshot_books())
    h.feed(D, H + 1, [new(1)])
    h.feed(D, H + 2)
    assert h.sup.books is not None
    assert h.sup.books.height == H + 1
    h.feed(D, H + 1, [new(2, px="99.0")])  # the diffs of H+1 were not complete after all
    assert "diffs arrived after the block was considered complete" in h.want().reason


def test_validation_that_matches() -> None:
    h = Harness(validate_every=5.0)
    h.load(snapshot_books(orders=[(7, "100.0")]), now=0.0)
    h.block(H + 1, diffs=[new(8, px="99.0")], statuses=[status(8, px="99.0")], now=1.0)
    assert h.sup.next_deadline() == pytest.approx(5.0)
    (fetch,) = h.sup.tick(5.0)
    assert isinstance(fetch, FetchCheck)
    node = snapshot_books(H + 1, [(7, "100.0"), (8, "99.0")])
    # The books move on while the node writes the snapshot.
    h.block(H + 2, diffs=[remove(8, px="99.0")], now=5.5)
    comparison = run_check(h, node, now=6.0)
    assert comparison.matches
    assert h.sup.stats.validations == 1
    assert h.sup.stats.validation_mismatches == 0
    assert h.sup.next_deadline() == pytest.approx(11.0)


def run_check(h: Harness, node: Books, now: float) -> Comparison:
    """Carry out the validation actions as the shell does; return the comparison."""
    decoded = decode_snapshot(encode_snapshot(node.height, node.snapshot()))
    (advance,) = h.sup.check_snapshot(decoded[0], decoded[1], now)
    assert isinstance(advance, AdvanceCheck)
    advance.moved.advance(advance.blocks)
    (compare,) = h.sup.check_advanced(advance.moved, None, now)
    assert isinstance(compare, CompareCheck)
    assert h.sup.books is not None
    result = compare_moved(h.sup.books, compare.moved)
    h.actions += h.sup.check_compared(compare.moved, result, now)
    return result


def test_validation_waits_for_the_books_to_reach_the_snapshot() -> None:
    h = Harness(validate_every=5.0, check_wait=3.0)
    h.load(snapshot_books(), now=0.0)
    h.sup.tick(5.0)
    node = snapshot_books(H + 1)
    assert (
        h.sup.check_snapshot(
            H + 1, decode_snapshot(encode_snapshot(H + 1, node.snapshot()))[1], 5.0
        )
        == []
    )
    assert h.sup.next_deadline() == pytest.approx(8.0)
    h.block(H + 1, now=6.0)
    advance = [a for a in h.actions if isinstance(a, AdvanceCheck)]
    assert len(advance) == 1
    assert advance[0].moved.height == H + 1


def test_validation_gives_up_when_the_books_do_not_reach_it() -> None:
    h = Harness(validate_every=5.0, check_wait=3.0, stale_after=100.0)
    h.load(snapshot_books(), now=0.0)
    h.sup.tick(5.0)
    node = snapshot_books(H + 9)
    h.sup.check_snapshot(H + 9, decode_snapshot(encode_snapshot(H + 9, node.snapshot()))[1], 5.0)
    assert h.sup.tick(8.0) == []
    assert h.sup.stats.validations == 0
    assert h.sup.next_deadline() == pytest.approx(13.0)  # the next check


def test_a_mismatch_in_an_untouched_coin_is_repaired_from_the_snapshot() -> None:
    h = Harness(validate_every=5.0)
    h.load(snapshot_books(orders=[(7, "100.0")]), now=0.0)
    h.sup.tick(5.0)
    node = snapshot_books(H, [(7, "100.0"), (9, "98.0")])  # hlbook lacks order 9 of BTC
    h.block(H + 1, diffs=[new(3, coin="ETH", px="5.0")], now=5.5)  # only ETH moved on
    h.sink.take()
    result = run_check(h, node, now=6.0)
    assert not result.matches
    assert h.sup.stats.validation_mismatches == 1
    assert h.sup.stats.coins_repaired == 1
    assert h.sink.take() == [("resync", H + 1)]
    books = h.sup.books
    assert books is not None
    assert books.order(9) is not None
    assert h.status() is Status.LIVE


def test_a_mismatch_in_a_coin_that_moved_on_resyncs() -> None:
    h = Harness(validate_every=5.0)
    h.load(snapshot_books(orders=[(7, "100.0")]), now=0.0)
    h.sup.tick(5.0)
    node = snapshot_books(H, [(7, "100.0"), (9, "98.0")])
    h.block(H + 1, diffs=[new(3, px="5.0")], now=5.5)  # BTC moved on
    run_check(h, node, now=6.0)
    assert "validation found differences in ['BTC']" in h.want().reason
    assert h.status() is Status.RESYNCING


def test_a_node_snapshot_that_does_not_fit_its_own_blocks_is_counted_not_trusted() -> None:
    h = Harness(validate_every=5.0)
    h.load(snapshot_books(orders=[(7, "100.0")]), now=0.0)
    h.sup.tick(5.0)
    h.block(H + 1, diffs=[remove(7)], now=5.5)
    node = snapshot_books(H)  # lacks order 7, which block H+1 removes
    decoded = decode_snapshot(encode_snapshot(H, node.snapshot()))
    (advance,) = h.sup.check_snapshot(decoded[0], decoded[1], 6.0)
    assert isinstance(advance, AdvanceCheck)
    with pytest.raises(DivergenceError) as caught:
        advance.moved.advance(advance.blocks)
    assert h.sup.check_advanced(advance.moved, caught.value, 6.0) == []
    assert h.sup.stats.validation_mismatches == 1
    assert h.status() is Status.LIVE  # hlbook's books applied those blocks cleanly


def test_a_layout_switch_restarts_ingestion_only_while_stale() -> None:
    h = Harness(stale_after=1.0)
    h.load(snapshot_books(), now=0.0)
    assert not h.sup.wants_layout_check
    assert h.sup.node_shape(0.5, fills_appeared=False, layout=Layout.STREAMING, where="d") == []
    h.sup.tick(1.0)
    assert h.sup.wants_layout_check
    assert h.sup.node_shape(1.5, fills_appeared=False, layout=Layout.BY_BLOCK, where="d") == []
    (restart,) = h.sup.node_shape(1.5, fills_appeared=False, layout=Layout.STREAMING, where="d")
    assert restart == RestartIngestion("the node now writes the streaming layout")
    # The shell starts a new source: the books stay (and serve) until a new snapshot.
    joiner = BlockJoiner(Layout.STREAMING, parts=True)
    (want,) = h.sup.attach(joiner, 2.0, contiguous=False, layout=Layout.STREAMING)
    assert isinstance(want, WantSnapshot)
    assert want.reason == "ingestion restarted"
    assert h.status() is Status.RESYNCING
    assert h.sup.books is not None


def test_a_fills_directory_that_appears_restarts_ingestion() -> None:
    h = Harness(streams=(S, D))
    h.load(snapshot_books())
    h.block(H + 1)
    assert h.sink.take()[-1] == ("block", H + 1)  # no fills stream: blocks complete without
    (restart,) = h.sup.node_shape(1.0, fills_appeared=True, layout=None, where="/data")
    assert restart == RestartIngestion("a fills directory appeared under /data")


def test_catch_up_holds_diffs_until_statuses_catch_up() -> None:
    h = Harness()
    h.load(snapshot_books())
    h.feed(D, H + 1, [new(1)], now=1.0)
    books = h.sup.books
    assert books is not None
    assert not books.details_ready("BTC")
    h.sink.take()
    books.request_catch_up()  # e.g. an l4Book subscriber waits for a snapshot of BTC
    h.feed(D, H + 2, [new(2)], now=1.1)
    assert h.sink.take() == []  # held
    assert h.sup.stats.catch_ups == 1
    h.feed(S, H + 1, [status(1)], now=1.2)
    # Details caught up (the l4Book snapshot can be served at STATUSES), then diffs go on.
    assert h.sink.take() == [("statuses", H + 1), ("diffs", H + 2)]
    assert not books.catch_up_wanted


def test_catch_up_is_bounded_in_time() -> None:
    h = Harness(details_wait=0.5)
    h.load(snapshot_books())
    h.feed(D, H + 1, [new(1)], now=1.0)
    books = h.sup.books
    assert books is not None
    books.request_catch_up()
    h.feed(D, H + 2, now=1.1)
    h.sink.take()
    assert h.sup.next_deadline() == pytest.approx(1.6)
    h.sup.tick(1.59)
    assert h.sink.take() == []
    h.sup.tick(1.6)
    assert h.sink.take() == [("diffs", H + 2)]  # the statuses never came: go on
    assert not books.catch_up_wanted


def test_time_after_a_snapshot_is_its_blocks_or_the_nearest_known() -> None:
    # The reader saw the line of block H: the snapshot's own time.
    h = Harness()
    h.load(snapshot_books())
    assert h.sink.resync_times == [BASE_MS + 70 * H]
    # Replaying files that start after the snapshot: the first block read after it.
    h = Harness(unknown_time=True)
    h.block(H + 1)
    h.load(snapshot_books())
    assert h.sink.calls[0] == ("resync", H, None)
    assert h.sink.resync_times == [BASE_MS + 70 * (H + 1)]
    times = [call[4] for call in h.sink.calls if isinstance(call[0], Stage)]
    assert times == [BASE_MS + 70 * (H + 1)] * 4


def test_time_with_no_block_read_is_the_newest_order_in_the_snapshot() -> None:
    h = Harness(unknown_time=True)
    books = snapshot_books(orders=[(7, "100.0"), (8, "99.0")])
    newest = BASE_MS + 70 * H - 5
    for oid, stamp in ((7, newest - 100), (8, newest)):
        order = books.order(oid)
        assert order is not None
        order.timestamp = stamp
    books.newest_timestamp = newest  # as Books.load finds it
    h.load(books)
    assert h.sink.resync_times == [newest]
    h.sink.take()
    h.block(H + 1)
    times = [call[4] for call in h.sink.calls if isinstance(call[0], Stage)]
    assert times == [BASE_MS + 70 * (H + 1)] * 4  # later: the blocks' own times


def test_loading_finds_the_newest_order_timestamp() -> None:
    bids: SnapshotSide = [
        (USER, Order(coin="BTC", side="B", limitPx="1.0", sz="1.0", oid=oid, timestamp=stamp))
        for oid, stamp in ((1, 30), (2, 50), (3, 40))
    ]
    data = encode_snapshot(H, [("BTC", bids, [])])
    assert Books.load(data).newest_timestamp == 50
    assert Books.from_snapshot(*decode_snapshot(data)).newest_timestamp == 50


def test_time_never_goes_back_across_a_rebootstrap() -> None:
    h = Harness()
    h.block(H + 1)
    h.load(snapshot_books(H + 1))
    before = h.sup.books
    assert before is not None
    first = before.time
    # The node restarts from an older state (a new ingestion reads it).
    h.joiner = BlockJoiner(Layout.BY_BLOCK, parts=True)
    for stream in Stream:
        h.joiner.start_after(stream, H - 5)
    h.actions += h.sup.attach(h.joiner, 1.0)
    h.load(snapshot_books(H - 5))
    after = h.sup.books
    assert after is not None
    assert after.time == first
    h.sink.take()
    h.block(H - 4)  # the node's older blocks: published with the time already shown
    times = [call[4] for call in h.sink.calls if isinstance(call[0], Stage)]
    assert times == [first] * 4


def test_an_ordered_block_stream_is_a_source_too() -> None:
    sink = Recorder()
    sup = Supervisor(sink, Settings(validate_every=0))
    source = OrderedBlocks()
    (want,) = sup.attach(source, 0.0)
    assert isinstance(want, WantSnapshot)
    blocks = [_block(h) for h in range(H + 1, H + 4)]
    actions = sup.receive(source.block(blocks[0]), 0.0)
    actions += sup.snapshot_loaded(snapshot_books(), "relay", want.generation, 0.0)
    for item in blocks[1:]:
        actions += sup.receive(source.block(item), 0.0)
    assert sink.take() == [("resync", H)] + [
        (stage, height)
        for height in (H + 1, H + 2, H + 3)
        for stage in ("diffs", "statuses", "fills", "block")
    ]
    # The stream skips a height: a gap, healed by a snapshot past it.
    actions = sup.receive(source.block(_block(H + 5)), 0.0)
    (want,) = actions
    assert isinstance(want, WantSnapshot)
    assert "skipped" in want.reason
    actions = sup.snapshot_loaded(snapshot_books(H + 4), "relay", want.generation, 0.0)
    assert sink.take() == [
        ("resync", H + 4),
        ("diffs", H + 5),
        ("statuses", H + 5),
        ("fills", H + 5),
        ("block", H + 5),
    ]


def _relay_chain() -> list[Block]:
    from fixtures import block

    return [
        block(
            H + 1,
            [status(1, tif="Gtc", limitPx="99.0"), status(2)],
            [new(1, px="99.0"), new(2, px="100.0")],
        ),
        block(H + 2, [status(1, "open", sz="0.5")], [update(1, "1.0", "0.5", px="99.0")]),
        block(
            H + 3,
            [status(2, "canceled"), status(3, side="A", limitPx="101.0", cloid="0x" + "ab" * 16)],
            [remove(2), new(3, side="A", px="101.0")],
        ),
        block(
            H + 4,
            [status(1, "filled")],
            [remove(1, px="99.0")],
            [fill(USER, 7, side="B", crossed=False, px="99.0", sz="0.5")],
        ),
    ]


class _Keeper(Recorder):
    """A :class:`Recorder` that also keeps the blocks published at :attr:`Stage.BLOCK`."""

    def __init__(self) -> None:
        super().__init__()
        self.whole: list[Block] = []

    def publish(
        self, stage: Stage, block: Block, books: Books, touched: Mapping[str, CoinBook]
    ) -> None:
        if stage is Stage.BLOCK:
            self.whole.append(block)
        super().publish(stage, block, books, touched)


def _early(item: Block) -> Block:
    """A block's diffs alone, as a primary sends them ahead of the block."""
    return Block(item.height, item.time, [], list(item.diffs), [])


def _books_bytes(books: Books | None) -> bytes:
    from hlbook.shell.publish import capture_books, encode_captured

    assert books is not None
    return encode_captured(books.height, capture_books(books))


def test_early_diffs_publish_l2_at_once_and_the_block_completes_them() -> None:
    """A relay stream: each block's diffs ahead of it, some out of turn, one lost."""
    chain = _relay_chain()
    reference = Supervisor(Recorder(), Settings(validate_every=0))
    ref_source = OrderedBlocks()
    (want,) = reference.attach(ref_source, 0.0, contiguous=False)
    assert isinstance(want, WantSnapshot)
    reference.snapshot_loaded(snapshot_books(), "relay", want.generation, 0.0)
    for item in chain:
        reference.receive(ref_source.block(item), 0.0)

    sink = _Keeper()
    sup = Supervisor(sink, Settings(validate_every=0))
    source = OrderedBlocks()
    (want,) = sup.attach(source, 0.0, contiguous=False)
    assert isinstance(want, WantSnapshot)
    # While bootstrapping early diffs are ignored: their blocks are held.
    assert source.diffs(_early(chain[0]), prev=H) == []
    sup.snapshot_loaded(snapshot_books(), "relay", want.generation, 0.0)
    sink.take()

    one, two, three, four = chain
    steps: list[tuple[str, Sequence[Any]]] = [
        ("diffs", source.diffs(_early(one), prev=H)),
        ("diffs", source.diffs(_early(two), prev=H + 1)),
        ("block", source.block(one, prev=H)),
        ("diffs", source.diffs(_early(four), prev=H + 3)),  # before its turn: kept
        # the early diffs of H + 3 are lost
        ("block", source.block(two, prev=H + 1)),
        ("block", source.block(three, prev=H + 2)),  # hands out H + 4's kept diffs after it
        ("block", source.block(four, prev=H + 3)),
        ("diffs", source.diffs(_early(four), prev=H + 3)),  # redelivered: nothing
    ]
    published: list[list[tuple[str, int]]] = []
    calls: list[tuple[Any, ...]] = []
    for _kind, outputs in steps:
        sup.receive(outputs, 0.0)
        calls += sink.calls
        published.append(sink.take())
    assert published == [
        [("diffs", H + 1)],
        [("diffs", H + 2)],
        [("statuses", H + 1), ("fills", H + 1), ("block", H + 1)],
        [],
        [("statuses", H + 2), ("fills", H + 2), ("block", H + 2)],
        [
            ("diffs", H + 3),
            ("statuses", H + 3),
            ("fills", H + 3),
            ("block", H + 3),
            ("diffs", H + 4),
        ],
        [("statuses", H + 4), ("fills", H + 4), ("block", H + 4)],
        [],
    ]
    # l2Book went out before the statuses of its block were known...
    first = next(call for call in calls if call[0] is Stage.DIFFS)
    assert (first[1], first[2], first[3]) == (H + 1, H + 1, H)
    # ...and the blocks that completed them carried everything: the same books.
    assert _books_bytes(sup.books) == _books_bytes(reference.books)
    assert sup.books is not None
    assert sup.books.details_height == H + 4
    assert [call[1] for call in calls if call[0] is Stage.BLOCK] == [H + 1, H + 2, H + 3, H + 4]
    for got, original in zip(sink.whole, chain, strict=True):
        assert (got.statuses, got.diffs, got.fills) == (
            original.statuses,
            original.diffs,
            original.fills,
        )


def _block(height: int) -> Block:
    from fixtures import block

    return block(height)


def test_a_backlog_is_worked_through_in_bounded_steps() -> None:
    h = Harness()
    h.sup.step_limit = 2
    for height in range(H + 1, H + 6):
        h.block(height)
    h.load(snapshot_books())
    # Each call works through at most two outputs (the shell checkpoints in between).
    assert h.sup.backlog > 0
    steps = 0
    while h.sup.backlog:
        h.actions += h.sup.work(0.0)
        steps += 1
    assert steps >= 3
    assert h.sink.stages() == [("resync", H)] + [s for x in range(H + 1, H + 6) for s in whole(x)]


def test_a_failure_in_a_backlog_hands_the_rest_back_to_the_source() -> None:
    h = Harness()
    h.sup.step_limit = 1
    h.block(H + 1, diffs=[remove(9)])  # diverges
    h.block(H + 2)
    h.block(H + 3)
    h.load(snapshot_books())
    while h.sup.backlog:
        h.actions += h.sup.work(0.0)
    want = h.want()
    assert "not resting" in want.reason
    h.sink.take()
    h.actions.append(want)
    h.load(snapshot_books(H + 1))  # past the bad block: the rest was kept
    while h.sup.backlog:
        h.actions += h.sup.work(0.0)
    assert h.sink.stages() == [("resync", H + 1), *whole(H + 2), *whole(H + 3)]


def test_pausing_after_diffs_leaves_the_rest_of_the_block_for_the_next_call() -> None:
    h = Harness()
    h.load(snapshot_books())
    h.sup.pause_after_diffs = True
    h.sink.take()
    h.feed(S, H + 1, [status(1)])
    h.feed(F, H + 1)
    assert h.sink.take() == [("fills", H + 1)]
    h.feed(D, H + 1, [new(1)])
    # The block's diffs, then — once the shell has written them out — the rest; neither
    # new output nor ticks resume it before work() is called.
    assert h.sink.take() == [("diffs", H + 1)]
    assert h.sup.backlog == 1
    h.feed(S, H + 2, [status(2)])
    h.feed(F, H + 2)
    assert h.sink.take() == []
    h.sup.work(0.0)
    assert h.sink.take() == [("statuses", H + 1), ("block", H + 1), ("fills", H + 2)]
    assert h.sup.backlog == 0
