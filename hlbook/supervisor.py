"""Every decision of the data path, sans I/O: events in, actions out, no Trio.

The :class:`Supervisor` owns the books. It is told what happened — a source
produced output, lost data, a snapshot was loaded or failed, a validation
snapshot arrived, time passed (``tick(now)``) — and answers with the
:data:`Action` items the shell must carry out (fetch a snapshot after a delay,
fetch/advance/compare a validation snapshot, restart ingestion). Applying
blocks and publishing them is its own work: it calls its
:class:`~hlbook.stages.BlockSink` (synchronous, never blocking) right after
each step, while the books are exactly as that step left them. Every input
carries ``now`` (the shell's monotonic clock); nothing here reads a clock.
Its :attr:`~Supervisor.status` is a :class:`Status` with a human
:attr:`~Supervisor.detail` beside it.

Sources of blocks
-----------------
The supervisor drives one :class:`~hlbook.source.BlockSource` at a time
(:meth:`Supervisor.attach`) and does not care which. A source hands out, in
order, :class:`~hlbook.source.Part` (one stream of a block complete),
:class:`~hlbook.model.Block` (the whole block complete) and
:class:`~hlbook.source.Gap` (blocks lost) items, which the shell passes to
:meth:`Supervisor.receive`; the supervisor calls the source's ``hold``,
``release``, ``poll`` and ``next_deadline``, and reads ``holding`` and
``release_time``. The node's files are one source
(:class:`~hlbook.node.join.BlockJoiner` with ``parts=True``, fed by the shell's
file tailers); a stream of whole blocks from another hlbook (NATS JetStream)
is the next: an :class:`~hlbook.source.OrderedBlocks` fed with each block as
it arrives (a skipped height is its ``Gap``), bootstrapped from a snapshot
object in the node's ``fileSnapshot`` format. Where snapshots come from is the
shell's business: the supervisor only says :class:`WantSnapshot` and is told
:meth:`~Supervisor.snapshot_loaded` or :meth:`~Supervisor.snapshot_failed`.
A source that loses data without producing a ``Gap`` itself (an unreadable
line, a read error) says :meth:`~Supervisor.fault`.

Each stage as soon as it is complete
------------------------------------
For block ``H`` the sink hears (:class:`~hlbook.stages.Stage`):

* ``DIFFS`` once ``H``'s diffs are complete and ``H - 1``'s applied: the diffs
  are applied (all or nothing), new orders carrying what their diff says;
* ``FILLS`` once ``H``'s fills are complete (in height order);
* ``STATUSES`` once ``H``'s statuses are complete and ``H``'s diffs applied:
  their details are attached (:meth:`~hlbook.book.books.Books.attach_details`);
* ``BLOCK`` once every stream of ``H`` is done, in height order.

``books.height`` is how far diffs are applied and ``books.details_height``
how far details are; see :meth:`~hlbook.book.books.Books.details_ready`.
The shell may bound the work of one call (:attr:`Supervisor.step_limit`,
:attr:`Supervisor.pause_after_diffs`) and call :meth:`Supervisor.work` while
:attr:`Supervisor.backlog` is not empty, with a checkpoint in between. A
block whose diffs lack a side waits for its statuses. While
``books.catch_up_wanted`` is set (a view that needs details is waiting) the
next diffs wait, at most ``details_wait`` seconds, for the statuses to catch
up. A gap, a divergent diff, an unreadable line or a snapshot older than the
held blocks makes the supervisor hold the source and want a snapshot; it
never gives up.

Time
----
Published block times never go backwards within a stage. After a snapshot,
``books.time`` is its own block's time when the source saw that block, else
the time of the nearest block the source saw (the first after it, or the
last before it, e.g. the line before the tailer's starting point), and never
earlier than the newest order timestamp in the snapshot (no order rests
from a block after the snapshot's) — so never after the blocks that follow.
A re-bootstrap never goes back before a time already published; a block
whose time is earlier than the books' time after a snapshot is published
with that time (only a node whose clock or height went back can cause it).
"""

import bisect
import enum
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable

import attrs
from msgspec import UNSET

from hlbook.book.books import Books
from hlbook.book.compare import Comparison
from hlbook.book.l4 import CoinBook
from hlbook.book.validate import MovedSnapshot
from hlbook.config import Config
from hlbook.errors import DivergenceError
from hlbook.model import Block
from hlbook.node.formats import Layout, SnapshotSide, Stream
from hlbook.source import BlockSource, Gap, Output, Part
from hlbook.stages import BlockSink, Stage

__all__ = [
    "Action",
    "AdvanceCheck",
    "CompareCheck",
    "FetchCheck",
    "RestartIngestion",
    "Settings",
    "Status",
    "Supervisor",
    "SupervisorStats",
    "WantSnapshot",
]

log = logging.getLogger("hlbook.supervisor")


class Status(enum.Enum):
    """Where the data path is; the value is what health reports."""

    STARTING = "starting"
    WAITING_FOR_NODE = "waiting_for_node"
    BOOTSTRAPPING = "bootstrapping"
    """No books yet: waiting for the first snapshot."""
    LIVE = "live"
    STALE = "stale"
    """Live books, but no block for ``stale_after`` seconds."""
    RESYNCING = "resyncing"
    """The books need a fresh snapshot; blocks are held meanwhile."""


# -- actions ----------------------------------------------------------------------------------


@attrs.frozen
class WantSnapshot:
    """Fetch and load a snapshot after ``delay`` seconds; report
    :meth:`Supervisor.snapshot_loaded` or :meth:`Supervisor.snapshot_failed`
    with ``generation``. A newer request replaces an older one."""

    reason: str
    delay: float
    generation: int


@attrs.frozen
class FetchCheck:
    """Fetch a validation snapshot and decode it; report
    :meth:`Supervisor.check_snapshot` or :meth:`Supervisor.check_failed`."""


@attrs.frozen(eq=False)
class AdvanceCheck:
    """Run ``moved.advance(blocks)`` off the book task (the books may move on);
    report :meth:`Supervisor.check_advanced`."""

    moved: MovedSnapshot
    blocks: list[Block]


@attrs.frozen(eq=False)
class CompareCheck:
    """Run ``compare_moved(books, moved)``; feed the supervisor nothing else until
    :meth:`Supervisor.check_compared` (the books must not move meanwhile)."""

    moved: MovedSnapshot


@attrs.frozen
class RestartIngestion:
    """The source's shape changed: start a new source and :meth:`Supervisor.attach` it."""

    reason: str


Action = WantSnapshot | FetchCheck | AdvanceCheck | CompareCheck | RestartIngestion


# -- settings and counters -------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Settings:
    """The supervisor's knobs (see :class:`~hlbook.config.Config`)."""

    stale_after: float = 10.0
    validate_every: float = 60.0
    """0 disables validation."""
    retry_max: float = 30.0
    check_wait: float = 10.0
    """How long a validation snapshot may wait for the books to reach its height."""
    details_wait: float = 1.0
    """Longest hold of diffs for a catch-up request (see the module docstring)."""
    layout_auto: bool = True
    """The node's layout is detected (``--ingest auto``): follow it when it changes."""
    source_name: str = "the node"
    """What the blocks come from, in log lines and notices (a relay: the NATS stream)."""

    @classmethod
    def from_config(cls, config: Config) -> "Settings":
        """The settings a server with ``config`` runs with."""
        return cls(
            stale_after=config.stale_after,
            validate_every=config.validate_every,
            retry_max=config.retry_max,
            check_wait=max(config.stale_after, 5.0),
            layout_auto=config.layout is None,
        )


@attrs.define
class SupervisorStats:
    """Counters for health and logs."""

    blocks_applied: int = 0
    bootstraps: int = 0
    divergences: int = 0
    gaps: int = 0
    bad_lines: int = 0
    validations: int = 0
    validation_mismatches: int = 0
    coins_repaired: int = 0
    snapshots_unfit: int = 0
    """Node snapshots that did not fit the node's own later blocks (hlbook's books kept)."""
    stale_periods: int = 0
    catch_ups: int = 0
    """Times diffs were held for details to catch up (``books.catch_up_wanted``)."""
    diffs_first: int = 0
    """Blocks whose diffs were applied and published before their statuses were complete."""
    late_events: int = 0
    """Events of status and fill lines read after their block was complete, dropped
    (streaming: the node paused between its streams for longer than quiet_after; kept
    by the shell)."""
    last_error: str | None = None
    book_seconds: float = 0.0
    """Time the book task spent joining, applying and publishing (kept by the shell)."""
    decode_seconds: float = 0.0
    """Time the ingestion tasks spent decoding lines (kept by the shell)."""


# -- internals ---------------------------------------------------------------------------------


class _Progress:
    """What is done of one block (from its first part to its BLOCK stage)."""

    __slots__ = ("announced", "block", "sideless", "todo", "touched", "whole")

    def __init__(self, block: Block) -> None:
        self.block = block
        self.announced: set[Stream] = set()
        self.todo: set[Stage] = set()  # stages queued, not carried out yet
        self.whole = False
        self.touched: dict[str, CoinBook] = {}
        self.sideless: bool | None = None  # a new diff without a side (needs statuses)

    @property
    def height(self) -> int:
        return self.block.height

    def needs_statuses(self) -> bool:
        if self.sideless is None:
            self.sideless = any(
                diff.side is UNSET and not isinstance(diff.raw_book_diff, str)
                for diff in self.block.diffs
            )
        return self.sideless


class _BlockLog:
    """Blocks applied since a validation began (bounded)."""

    __slots__ = ("blocks", "overflowed", "start")

    LIMIT = 5000

    def __init__(self, start: int) -> None:
        self.start = start
        self.blocks: list[Block] = []
        self.overflowed = False

    def add(self, block: Block) -> None:
        if len(self.blocks) >= self.LIMIT:
            self.overflowed = True
            self.blocks.clear()
        elif not self.overflowed:
            self.blocks.append(block)

    def after(self, height: int) -> list[Block]:
        return [block for block in self.blocks if block.height > height]


class _Phase(enum.Enum):
    FETCHING = "fetching"
    WAITING = "waiting"  # for the books to reach the snapshot's height
    ADVANCING = "advancing"
    COMPARING = "comparing"


@attrs.define
class _Check:
    phase: _Phase = _Phase.FETCHING
    height: int = -1
    coins: dict[str, tuple[SnapshotSide, SnapshotSide]] = attrs.field(factory=dict)
    deadline: float = math.inf
    moved: MovedSnapshot | None = None


# -- the supervisor ------------------------------------------------------------------------------


class Supervisor:
    """The data path's state and decisions (see the module docstring)."""

    def __init__(self, sink: BlockSink, settings: Settings | None = None) -> None:
        self.sink = sink
        self.settings = settings or Settings()
        self.books: Books | None = None
        self.status = Status.STARTING
        self.detail = ""
        """What the status means right now, in words (empty when live)."""
        self.stats = SupervisorStats()
        self.layout: Layout | None = None
        """The node layout the current source reads (``None`` for other sources)."""
        self.last_block_at: float | None = None
        """``now`` when the last block was applied (or the books loaded)."""
        self.step_limit: int | None = None
        """At most this many source outputs per call (the shell checkpoints between);
        ``None``: all at once."""
        self.pause_after_diffs = False
        """Return to the caller right after each ``DIFFS`` publication (the rest is
        :attr:`backlog`): the shell can write those messages to clients before the
        statuses' work."""
        self.stage_timer: Callable[[Stage, float], None] | None = None
        """Told the seconds each stage of each block took here, its apply and its sinks'
        publishing (for ``hlbook_book_task_seconds``). Measured with ``perf_counter``
        for observation only: no decision depends on it."""
        self._more = False  # work left by pause_after_diffs
        # Since when details (statuses) have made no progress while behind the diffs, and
        # whether that has lasted stale_after (see _check_details).
        self._details_since: float | None = None
        self._details_stale = False
        self._source: BlockSource | None = None
        self._backlog: deque[Output] = deque()
        self._contiguous = True
        self._generation = 0
        self._too_old = 0  # snapshots in a row older than the held blocks
        self._retry = 0.5  # the next retry delay of the current generation
        self._stale = False
        self._time_floor = 0
        self._progress: dict[int, _Progress] = {}
        self._order: list[int] = []  # heights in _progress, ascending
        self._diffs: deque[_Progress] = deque()
        self._statuses: deque[_Progress] = deque()
        self._fills: deque[_Progress] = deque()
        self._queued: dict[Stream, int] = dict.fromkeys(Stream, -1)
        self._barrier_since: float | None = None
        self._log: _BlockLog | None = None
        self._check: _Check | None = None
        self._next_check_at = (
            self.settings.validate_every if self.settings.validate_every > 0 else math.inf
        )

    # -- reading --------------------------------------------------------------------------------

    @property
    def stale(self) -> bool:
        """True while no block has been applied for ``stale_after`` seconds."""
        return self._stale

    @property
    def source(self) -> BlockSource | None:
        """The source being driven."""
        return self._source

    @property
    def wants_layout_check(self) -> bool:
        """True if the node's layout should be looked at (auto-detection, while stale):
        a healthy feed is proof enough of the layout."""
        return self.settings.layout_auto and self._stale and self.layout is not None

    def next_deadline(self) -> float | None:
        """When :meth:`tick` must next be called, or ``None`` if only events matter."""
        deadlines = []
        source = self._source
        if source is not None:
            deadline = source.next_deadline()
            if deadline is not None:
                deadlines.append(deadline)
        if self.books is not None:
            if not self._stale and self.last_block_at is not None:
                deadlines.append(self.last_block_at + self.settings.stale_after)
            if self._check is None:
                deadlines.append(self._next_check_at)
            elif self._check.phase is _Phase.WAITING:
                deadlines.append(self._check.deadline)
            if self._barrier_since is not None:
                deadlines.append(self._barrier_since + self.settings.details_wait)
            if self._details_since is not None and not self._details_stale:
                deadlines.append(self._details_since + self.settings.stale_after)
        found = min(deadlines, default=math.inf)
        return None if math.isinf(found) else found

    # -- the source ---------------------------------------------------------------------------

    def attach(
        self,
        source: BlockSource,
        now: float,
        *,
        contiguous: bool = True,
        layout: Layout | None = None,
    ) -> list[Action]:
        """Drive ``source`` from now on (a new ingestion): the books need a snapshot.

        ``contiguous``: every height is a block (by-block files, a relay stream),
        so a block that does not follow the books' height is a gap. ``layout``:
        the node layout a node source reads (see :meth:`node_shape`). A stream a
        source does not have (a node without fills) is announced with each whole
        block, empty.
        """
        self._source = source
        self._contiguous = contiguous
        self.layout = layout
        self._too_old = 0
        self._backlog.clear()
        self._reset_progress()
        self._end_check(now)
        return self._want_snapshot("starting up" if self.books is None else "ingestion restarted")

    def waiting(self, detail: str) -> None:
        """There is nothing to read yet (e.g. no node output): say so in the status."""
        self.status = Status.WAITING_FOR_NODE
        self.detail = detail

    def receive(self, outputs: Iterable[Output], now: float) -> list[Action]:
        """The source produced ``outputs`` (in its order).

        They are worked through at once, or — with :attr:`step_limit` — up to
        that many per call, the rest left in :attr:`backlog` for :meth:`work`.
        """
        self._backlog.extend(outputs)
        if self._more:
            return []  # paused after a DIFFS publication: the caller resumes with work()
        return self.work(now)

    @property
    def backlog(self) -> int:
        """Outputs received and not worked through yet (see :attr:`step_limit`), plus one
        if stages are left after :attr:`pause_after_diffs`."""
        return len(self._backlog) + self._more

    def work(self, now: float) -> list[Action]:
        """Work through the backlog (up to :attr:`step_limit` outputs)."""
        backlog = self._backlog
        actions: list[Action] = []
        if self._more:
            self._more = False
            if self.books is not None and self._source is not None and not self._source.holding:
                failure = self._advance(now)
                if failure is not None:
                    return self._fail(failure, now)
            if self._more:
                return actions
        budget = self.step_limit if self.step_limit is not None else len(backlog)
        while backlog and budget > 0 and not self._more:
            budget -= 1
            source = self._source
            if self.books is None or source is None or source.holding:
                log.debug("output while holding: %s", backlog.popleft())
                continue
            item = backlog.popleft()
            if isinstance(item, Gap):
                self.stats.gaps += 1
                actions += self._fail(str(item), now)
                break
            if isinstance(item, Part):
                failure = self._take_part(item.stream, item.block)
            else:
                failure = self._take_whole(item)
            if failure is None:
                failure = self._advance(now)
            if failure is not None:
                actions += self._fail(failure, now)
                break
        actions += self._check_progress(now)
        return actions

    def fault(self, reason: str, now: float, *, bad_line: bool = False) -> list[Action]:
        """The source lost data (an unreadable line, a read error): resync."""
        if bad_line:
            self.stats.bad_lines += 1
        return self._fail(reason, now)

    def node_shape(
        self, now: float, *, fills_appeared: bool, layout: Layout | None, where: str
    ) -> list[Action]:
        """What the node's output looks like now (checked by the shell every second).

        ``fills_appeared``: a fills directory exists that the current source does
        not read; ``layout``: the layout the node writes now, if looked at
        (:attr:`wants_layout_check`).
        """
        if fills_appeared:
            return [RestartIngestion(f"a fills directory appeared under {where}")]
        if layout is not None and self.wants_layout_check and layout is not self.layout:
            return [RestartIngestion(f"the node now writes the {layout.value} layout")]
        return []

    def tick(self, now: float) -> list[Action]:
        """Time passed: complete what waited for it, notice staleness, start validations."""
        actions: list[Action] = []
        source = self._source
        if source is not None:
            actions += self.receive(source.poll(now), now)
            books = self.books
            if (
                books is not None
                and not source.holding
                and self._barrier_since is not None
                and not self._more
            ):
                failure = self._advance(now)
                if failure is not None:
                    actions += self._fail(failure, now)
        self._check_stale(now)
        self._check_details(now)
        actions += self._check_progress(now)
        actions += self._maybe_start_check(now)
        return actions

    # -- snapshots ------------------------------------------------------------------------------

    def snapshot_loaded(
        self, books: Books, source_name: str, generation: int, now: float
    ) -> list[Action]:
        """Books were loaded from a snapshot asked for by ``WantSnapshot(generation)``."""
        source = self._source
        if generation != self._generation or source is None:
            log.info("discarding a snapshot requested before the latest problem")
            return []
        released = source.release(books.height)
        if released and isinstance(released[0], Gap):
            log.warning("%s: %s; asking for a newer snapshot", source_name, released[0])
            self._too_old += 1
            source.hold(released[1:])
            return self._want_snapshot(f"snapshot at {books.height} too old")
        # Its own block's time if the source saw it, else the nearest block's it saw,
        # else the newest order in it (no later than its block): never after what follows.
        seen = source.release_time
        known = max(seen if seen is not None else 0, books.newest_timestamp)
        if self.books is not None:  # a re-bootstrap: never before what was published
            known = max(known, self.books.time)
        first = next((item.height for item in released if not isinstance(item, Gap)), None)
        self.books = books
        self._reset_progress()
        self._too_old = 0
        self.stats.bootstraps += 1
        log.info(
            "books loaded at height %d from %s (%d held items follow%s)",
            books.height,
            source_name,
            len(released),
            f", from {first}" if first is not None else "",
        )
        self._end_check(now)
        self._stale = False
        self.last_block_at = now
        books.time = books.details_time = max(known, self._time_floor)
        self._time_floor = books.time
        self.sink.resync(books, None)
        self.status = Status.LIVE
        self.detail = ""
        self._backlog.extend(released)
        return self.receive(source.poll(now), now)

    def snapshot_failed(self, reason: str, generation: int, now: float) -> list[Action]:
        """The snapshot asked for by ``WantSnapshot(generation)`` could not be had."""
        if generation != self._generation:
            return []  # a newer request is under way
        self.stats.last_error = reason
        delay = self._retry
        self._retry = min(delay * 2, self.settings.retry_max)
        self.detail = f"{reason} (retrying in {delay:.0f} s)"
        log.warning("snapshot failed: %s; retrying in %.1f s", reason, delay)
        return [WantSnapshot(reason, delay, generation)]

    # -- validation -----------------------------------------------------------------------------

    def check_snapshot(
        self, height: int, coins: Iterable[tuple[str, SnapshotSide, SnapshotSide]], now: float
    ) -> list[Action]:
        """The validation snapshot asked for by :class:`FetchCheck`, decoded."""
        check = self._check
        if check is None or check.phase is not _Phase.FETCHING:
            return []
        check.phase = _Phase.WAITING
        check.height = height
        check.coins = {coin: (bids, asks) for coin, bids, asks in coins}
        # The node may be a little ahead of its files.
        check.deadline = now + self.settings.check_wait
        return self._check_progress(now)

    def check_failed(self, reason: str, now: float) -> list[Action]:
        """The validation snapshot could not be had."""
        if self._check is not None:
            log.warning("validation skipped: %s", reason)
            self._end_check(now)
        return []

    def check_advanced(
        self, moved: MovedSnapshot, error: DivergenceError | None, now: float
    ) -> list[Action]:
        """:class:`AdvanceCheck` is done (``error`` if the blocks did not fit the snapshot)."""
        check, books, block_log = self._check, self.books, self._log
        if check is None or check.moved is not moved or books is None or block_log is None:
            return []
        if error is None:
            try:
                moved.advance(block_log.after(moved.height))  # applied in the meantime
            except DivergenceError as exc:
                error = exc
        if error is not None:
            self._snapshot_disagrees(moved.snapshot_height, error)
            self._end_check(now)
            return []
        if moved.height != books.height:
            log.warning("validation skipped: blocks were missed while checking")
            self._end_check(now)
            return []
        check.phase = _Phase.COMPARING
        return [CompareCheck(moved)]

    def check_compared(self, moved: MovedSnapshot, result: Comparison, now: float) -> list[Action]:
        """:class:`CompareCheck` is done: count, and repair what differs."""
        check, books = self._check, self.books
        self._end_check(now)
        if check is None or check.moved is not moved or books is None:
            return []
        if books.height != moved.height or self.status not in (Status.LIVE, Status.STALE):
            log.warning("validation skipped: the books moved while comparing")
            return []
        self.stats.validations += 1
        if result.matches:
            log.info(
                "validation: %s (node snapshot at %d moved forward %d blocks)",
                result.summary(),
                moved.snapshot_height,
                books.height - moved.snapshot_height,
            )
            return []
        self.stats.validation_mismatches += 1
        log.error("validation: %s", result.summary())
        for difference in result.first:
            log.error("  %s", difference)
        moved_coins = set(result.coins) & moved.moved
        if moved_coins:
            # Only bare keys of those coins exist at this height: start over from the node.
            return self._fail(f"validation found differences in {sorted(moved_coins)[:10]}", now)
        # The other coins did not change since the snapshot: it is their exact state now.
        try:
            for coin in result.coins:
                bids, asks = moved.snapshot_coin(coin)
                books.set_coin(coin, bids, asks)
        except DivergenceError as exc:
            # E.g. an oid the node has under another coin than we do: start over.
            return self._fail(f"repair from the node's snapshot failed: {exc}", now)
        log.error("repaired %d coin(s) from the node's snapshot", len(result.coins))
        self.stats.coins_repaired += len(result.coins)
        self.sink.resync(books, result.coins)
        return []

    # -- internals: taking output ------------------------------------------------------------------

    def _entry(self, block: Block) -> _Progress:
        height = block.height
        entry = self._progress.get(height)
        if entry is None:
            entry = self._progress[height] = _Progress(block)
            bisect.insort(self._order, height)
            if block.time < self._time_floor:
                block.time = self._time_floor  # see "Time" in the module docstring
        return entry

    def _take_part(self, stream: Stream, block: Block) -> str | None:
        entry = self._entry(block)
        if stream in entry.announced:
            return None
        entry.announced.add(stream)
        height = block.height
        if height <= self._queued[stream]:
            if stream is Stream.DIFFS and block.diffs:
                self.stats.gaps += 1
                return f"diffs of block {height} came after a later block's"
            return None  # nothing of that stream at this height (announced with the block)
        self._queued[stream] = height
        if stream is Stream.DIFFS:
            entry.todo.add(Stage.DIFFS)
            self._diffs.append(entry)
        elif stream is Stream.STATUSES:
            entry.todo.add(Stage.STATUSES)
            self._statuses.append(entry)
        else:
            entry.todo.add(Stage.FILLS)  # depends on nothing: published by the next _advance
            self._fills.append(entry)
        return None

    def _take_whole(self, block: Block) -> str | None:
        entry = self._entry(block)
        entry.whole = True
        for stream in Stream:
            failure = self._take_part(stream, block)
            if failure is not None:
                return failure
        return None

    def _advance(self, now: float) -> str | None:
        """Carry out every stage that can be; a reason if the books cannot follow."""
        books = self.books
        assert books is not None
        diffs, statuses, fills = self._diffs, self._statuses, self._fills
        progress, order = self._progress, self._order
        while True:
            if statuses:
                entry = statuses[0]
                if books.height >= entry.height and Stage.DIFFS not in entry.todo:
                    statuses.popleft()
                    entry.todo.discard(Stage.STATUSES)
                    if entry.height > books.details_height:
                        started = time.perf_counter()
                        applied = books.attach_details(entry.block)
                        self._details_progressed(now)
                        self._publish(Stage.STATUSES, entry.block, applied.touched, started)
                        if books.catch_up_wanted and books.details_height == books.height:
                            books.catch_up_wanted = False
                            self._barrier_since = None
                    continue
            if diffs:
                entry = diffs[0]
                block = entry.block
                ready = Stream.STATUSES in entry.announced or not entry.needs_statuses()
                if ready and not self._held_for_details(books, now):
                    if self._contiguous and block.height != books.height + 1:
                        self.stats.gaps += 1
                        return f"block {block.height} does not follow {books.height}"
                    started = time.perf_counter()
                    try:
                        applied = books.apply_diffs(
                            block, statuses_final=Stream.STATUSES in entry.announced
                        )
                    except DivergenceError as exc:
                        self.stats.divergences += 1
                        return str(exc)
                    diffs.popleft()
                    entry.todo.discard(Stage.DIFFS)
                    entry.touched = applied.touched
                    if Stream.STATUSES not in entry.announced:
                        self.stats.diffs_first += 1
                    self._applied(block, now)
                    self._publish(Stage.DIFFS, block, applied.touched, started)
                    if self.pause_after_diffs:
                        self._more = True
                        return None
                    continue
            if fills:
                entry = fills.popleft()
                entry.todo.discard(Stage.FILLS)
                self._publish(Stage.FILLS, entry.block, {}, time.perf_counter())
                continue
            if order:
                entry = progress[order[0]]
                if entry.whole and not entry.todo:
                    del progress[order.pop(0)]
                    self.stats.blocks_applied += 1
                    self._publish(Stage.BLOCK, entry.block, entry.touched, time.perf_counter())
                    self.last_block_at = now
                    continue
            return None

    def _held_for_details(self, books: Books, now: float) -> bool:
        """True while a catch-up request holds the next diffs back (bounded)."""
        if not books.catch_up_wanted or books.details_height >= books.height:
            self._barrier_since = None
            return False
        since = self._barrier_since
        if since is None:
            self._barrier_since = since = now
            self.stats.catch_ups += 1
        if now - since < self.settings.details_wait:
            return True
        log.warning(
            "statuses did not catch up with the diffs within %.1f s (diffs at %d, statuses "
            "at %d): going on",
            self.settings.details_wait,
            books.height,
            books.details_height,
        )
        books.catch_up_wanted = False
        self._barrier_since = None
        return False

    def _applied(self, block: Block, now: float) -> None:
        """Bookkeeping after a block's diffs were applied."""
        if self._log is not None:
            self._log.add(block)
        self.last_block_at = now
        if self._stale:
            self._stale = False
            log.info(
                "%s is writing again: feed live at block %d",
                self.settings.source_name,
                block.height,
            )
            if not self._contiguous and self.settings.validate_every > 0:
                # Empty heights are invisible in this layout: check nothing was lost.
                self._next_check_at = now
        if not self._details_stale:
            self.status = Status.LIVE
            self.detail = ""

    def _details_progressed(self, now: float) -> None:
        """A block's statuses were attached: details are moving (again)."""
        self._details_since = now
        if self._details_stale:
            self._details_stale = False
            books = self.books
            log.info(
                "statuses from %s again: order details at block %d",
                self.settings.source_name,
                books.details_height if books is not None else -1,
            )
            if not self._stale and self.status is Status.STALE:
                self.status = Status.LIVE
                self.detail = ""

    def _check_details(self, now: float) -> None:
        """Statuses that stopped while diffs go on (the status file gone, say): ``l2Book``
        is right, but ``l4Book``, order channels and ``openOrders`` wait. After
        ``stale_after`` without progress the feed is stale (503, subscribers told)."""
        books = self.books
        if books is None or books.details_height >= books.height:
            self._details_since = None
            return
        if self._details_since is None:
            self._details_since = now
            return
        after = self.settings.stale_after
        if self._details_stale or now - self._details_since < after:
            return
        self._details_stale = True
        self.stats.stale_periods += 1
        text = (
            f"feed stale: no statuses from {self.settings.source_name} for {after:g} s"
            f" (order details at block {books.details_height}, levels at {books.height}):"
            " l4Book, order channels and openOrders wait for them"
        )
        if self.status is Status.LIVE:
            self.status = Status.STALE
            self.detail = text
        log.warning("%s", text)
        self.sink.notify(text)

    def _publish(
        self, stage: Stage, block: Block, touched: dict[str, CoinBook], started: float
    ) -> None:
        """Hand ``stage`` of ``block`` to the sinks; its work counted from ``started``."""
        books = self.books
        assert books is not None
        self.sink.publish(stage, block, books, touched)
        if self.stage_timer is not None:
            self.stage_timer(stage, time.perf_counter() - started)

    # -- internals: healing ------------------------------------------------------------------------

    def _reset_progress(self) -> None:
        self._progress.clear()
        self._order.clear()
        self._diffs.clear()
        self._statuses.clear()
        self._fills.clear()
        self._barrier_since = None
        self._details_since = None
        self._details_stale = False
        height = self.books.height if self.books is not None else -1
        self._queued = dict.fromkeys(Stream, height)

    def _fail(self, reason: str, now: float) -> list[Action]:
        """The books cannot follow the source: hold it and want a snapshot."""
        self.stats.last_error = reason
        log.error("%s; re-bootstrapping from a fresh snapshot", reason)
        source = self._source
        if source is not None and not source.holding:
            # What it handed out and was not finished: whole blocks in progress, then
            # everything not worked through (parts of unfinished blocks are announced again).
            wholes = [self._progress[h].block for h in self._order if self._progress[h].whole]
            source.hold([*wholes, *self._backlog])
        self._backlog.clear()
        self._more = False
        self._reset_progress()
        if self._check is not None:
            self._end_check(now)
        return self._want_snapshot(reason)

    def _want_snapshot(self, reason: str) -> list[Action]:
        # A snapshot requested before this point may predate the problem: ignored.
        self._generation += 1
        self._retry = 0.5
        self.status = Status.BOOTSTRAPPING if self.books is None else Status.RESYNCING
        self.detail = reason
        delay = min(0.25 * 2**self._too_old, self.settings.retry_max) if self._too_old else 0.0
        return [WantSnapshot(reason, delay, self._generation)]

    def _check_stale(self, now: float) -> None:
        books = self.books
        if books is None or self.last_block_at is None or self._stale:
            return
        after = self.settings.stale_after
        if now - self.last_block_at < after:
            return
        self._stale = True
        self.stats.stale_periods += 1
        height = books.height
        if self.status is Status.LIVE or self._details_stale:
            self.status = Status.STALE
            text = (
                f"feed stale: no block from {self.settings.source_name} for {after:g} s"
                f" (last height {height})"
            )
            self.detail = text
        else:  # a resync that cannot finish (e.g. the info server is down)
            text = (
                f"feed stale: no block applied for {after:g} s while {self.status.value} "
                f"({self.detail}); books held at height {height}"
            )
        log.warning("%s", text)
        self.sink.notify(text)

    # -- internals: validation ---------------------------------------------------------------------

    def _maybe_start_check(self, now: float) -> list[Action]:
        books = self.books
        if self._check is not None or books is None or now < self._next_check_at:
            return []
        if self.status not in (Status.LIVE, Status.STALE):
            self._next_check_at = now + self.settings.validate_every
            return []
        # Keep every block applied from now: the snapshot will be older than the books.
        self._log = _BlockLog(books.height)
        self._check = _Check()
        return [FetchCheck()]

    def _check_progress(self, now: float) -> list[Action]:
        check, books, block_log = self._check, self.books, self._log
        if check is None or check.phase is not _Phase.WAITING or books is None:
            return []
        height = check.height
        if books.height < height:
            if now >= check.deadline:
                log.warning(
                    "validation skipped: hlbook did not reach the snapshot's height %d", height
                )
                self._end_check(now)
            return []
        if block_log is None or block_log.start > height or block_log.overflowed:
            log.warning(
                "validation skipped: the snapshot at %d is older than the blocks kept", height
            )
            self._end_check(now)
            return []
        check.moved = MovedSnapshot(height, check.coins)
        check.coins = {}
        check.phase = _Phase.ADVANCING
        return [AdvanceCheck(check.moved, block_log.after(height))]

    def _end_check(self, now: float) -> None:
        self._check = None
        self._log = None
        every = self.settings.validate_every
        self._next_check_at = now + every if every > 0 else math.inf

    def _snapshot_disagrees(self, height: int, exc: DivergenceError) -> None:
        self.stats.validations += 1
        self.stats.validation_mismatches += 1
        self.stats.snapshots_unfit += 1
        log.error(
            "validation: the node's snapshot at %d does not fit the blocks it wrote after it "
            "(%s); hlbook's books applied those blocks cleanly and are kept",
            height,
            exc,
        )
