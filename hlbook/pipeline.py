"""The data path: ingestion tasks → book task → fan-out, with bootstrap and self-healing.

One nursery owns:

* one ingestion task per stream: tails the node's files, decodes complete
  lines and sends them, one batch per chunk, over a small bounded channel.
  When the book task is behind, the send waits and the file is the buffer;
  when the joiner says a stream is too far ahead, that stream's task waits;
* the book task: feeds the joiner, applies whole blocks, and hands them to the
  fan-out and the in-process feeds. It awaits nothing but its input and
  checkpoints — never a client;
* the bootstrap task: fetches (``fileSnapshot``) and loads a snapshot in a
  worker thread whenever the book task asks for one, retrying with backoff;
* the validation task: every ``validate_every`` seconds fetches a fresh
  snapshot and hands it to the book task, which compares at the same height
  and repairs the coins that differ.

A divergence, a gap, a malformed line or a snapshot that is too old makes the
book task hold blocks and ask for a new snapshot; it never exits. If the shape
of the node's output changes (a fills directory appears; with ``--ingest auto``,
the node switches layout while hlbook is stale), ingestion starts over on the
new shape and re-bootstraps; clients stay connected.
"""

import contextlib
import logging
import math
import time
from collections.abc import Iterable
from pathlib import Path

import attrs
import trio

from hlbook.book.books import Books
from hlbook.book.validate import MovedSnapshot, compare_moved
from hlbook.config import Config
from hlbook.errors import DivergenceError, HlbookError, NodeFormatError
from hlbook.feed import BookUpdate, Feed
from hlbook.model import Block
from hlbook.node.files import StartPoint, StreamTailer, detect_layout, stream_dir
from hlbook.node.formats import AnyLine, Layout, Stream, decode_line, line_height
from hlbook.node.join import BlockJoiner, Gap
from hlbook.node.snapshot import (
    InfoServerError,
    decode_snapshot_file,
    load_books,
    read_snapshot,
    request_file_snapshot,
)
from hlbook.server.fanout import Hub
from hlbook.stages import Stage

__all__ = ["Pipeline", "PipelineStats"]

log = logging.getLogger("hlbook.pipeline")


@attrs.frozen
class _Lines:
    stream: Stream
    lines: list[AnyLine]


@attrs.frozen
class _BadLine:
    stream: Stream
    error: NodeFormatError


@attrs.frozen
class _Loaded:
    books: Books
    source: str
    generation: int


@attrs.frozen
class _Fault:
    reason: str


@attrs.frozen
class _Start:
    stream: Stream
    floor: int


@attrs.frozen
class _CaughtUp:
    stream: Stream
    at: float
    file_number: int  # where the reader was: see StreamTailer.grown_since
    position: int


@attrs.frozen
class _Check:
    moved: MovedSnapshot


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


_Item = _Lines | _BadLine | _Fault | _Start | _CaughtUp | _Loaded | _Check


@attrs.define
class PipelineStats:
    """Counters for health and logs."""

    blocks_applied: int = 0
    bootstraps: int = 0
    divergences: int = 0
    gaps: int = 0
    bad_lines: int = 0
    validations: int = 0
    validation_mismatches: int = 0
    coins_repaired: int = 0
    stale_periods: int = 0
    last_error: str | None = None
    book_seconds: float = 0.0
    """Time the book task spent joining, applying and publishing (its own CPU work)."""
    decode_seconds: float = 0.0
    """Time the ingestion tasks spent decoding lines."""


class Pipeline:
    """Owns the books and everything that changes them. Started by :func:`hlbook.serve`."""

    def __init__(self, config: Config, hub: Hub, feeds: set[Feed]) -> None:
        self.config = config
        self.hub = hub
        self.feeds = feeds
        self.books: Books | None = None
        self.layout: Layout | None = config.layout
        self.status = "starting"
        self.status_detail = ""
        self.stats = PipelineStats()
        self.ready = trio.Event()
        self.tailers: dict[Stream, StreamTailer] = {}
        self.started_at = time.monotonic()
        self.last_block_at: float | None = None
        self.last_block_wall: float | None = None
        self._joiner: BlockJoiner | None = None
        self._gates: dict[Stream, trio.Event] = {}
        self._bootstrap_wanted = trio.Event()
        self._generation = 0  # bumped whenever a (new) bootstrap is wanted
        self._too_old = 0  # snapshots in a row that were older than the held blocks
        self._validate_now = trio.Event()
        self._log: _BlockLog | None = None
        self._stale = False
        self._height_waiters: list[tuple[int, trio.Event]] = []
        self._snapshot_file = config.snapshot_file  # used until one bootstrap succeeds
        self._restart: str | None = None  # why ingestion must start over

    # -- lifecycle --------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled."""
        from_start = self.config.from_start
        while True:
            layout = await self._wait_for_layout()
            self.layout = layout
            await self._ingest_layout(layout, from_start=from_start)
            log.warning("%s: starting ingestion over", self._restart)
            self._restart = None
            self.layout = self.config.layout
            from_start = False  # a fresh snapshot covers what came before

    async def _ingest_layout(self, layout: Layout, *, from_start: bool) -> None:
        """Tail, join, apply and heal one output shape until it changes (returns)."""
        streams = [
            s for s in Stream if s is not Stream.FILLS or self._stream_present(Stream.FILLS, layout)
        ]
        if Stream.FILLS not in streams:
            log.warning("no fills directory under %s: trades will be empty", self.config.node_data)
        self._joiner = BlockJoiner(layout, streams, quiet_after=self.config.stream_quiet_after)
        self._gates = {}
        self.tailers = {}
        self._log = None
        self._too_old = 0
        self._bootstrap_wanted = trio.Event()
        send, receive = trio.open_memory_channel[_Item](4)
        async with send, trio.open_nursery() as nursery:
            for stream in streams:
                self._gates[stream] = trio.Event()
                self._gates[stream].set()
                tailer = StreamTailer(
                    stream_dir(self.config.node_data.expanduser(), stream, layout),
                    from_start=from_start,
                )
                self.tailers[stream] = tailer
                nursery.start_soon(self._ingest, stream, tailer, send.clone())
            nursery.start_soon(self._bootstrap_task, send.clone())
            nursery.start_soon(self._validation_task, send.clone())
            nursery.start_soon(self._watch_output, layout, streams, nursery.cancel_scope)
            self._want_bootstrap("starting up" if self.books is None else "ingestion restarted")
            await self._book_task(receive)

    async def _watch_output(
        self, layout: Layout, streams: list[Stream], scope: trio.CancelScope
    ) -> None:
        """Notice the node's output changing shape; then end this ingestion (``scope``)."""
        node_data = self.config.node_data.expanduser()
        while True:
            await trio.sleep(1.0)
            if Stream.FILLS not in streams and self._stream_present(Stream.FILLS, layout):
                self._restart = f"a fills directory appeared under {node_data}"
            elif self.config.layout is None and self._stale:
                # Only while stale: a healthy feed is proof enough of the layout.
                found = await trio.to_thread.run_sync(detect_layout, node_data)
                if found is not None and found is not layout:
                    self._restart = f"the node now writes the {found.value} layout"
            if self._restart is not None:
                scope.cancel()
                return

    def _stream_present(self, stream: Stream, layout: Layout) -> bool:
        return stream_dir(self.config.node_data.expanduser(), stream, layout).exists()

    async def _wait_for_layout(self) -> Layout:
        node_data = self.config.node_data.expanduser()
        said = False
        while True:
            if self.layout is not None:
                if self._stream_present(Stream.DIFFS, self.layout):
                    return self.layout
            else:
                found = detect_layout(node_data)
                if found is not None:
                    log.info("node writes the %s layout", found.value)
                    return found
            if not said:
                self.status = "waiting_for_node"
                self.status_detail = f"no node output under {node_data}"
                log.info("waiting for the node's output under %s", node_data)
                said = True
            await trio.sleep(0.5)

    # -- ingestion --------------------------------------------------------------------------

    async def _ingest(
        self, stream: Stream, tailer: StreamTailer, send: trio.MemorySendChannel[_Item]
    ) -> None:
        stats = self.stats

        async def deliver(raw_lines: list[bytes], where: str) -> None:
            decoded: list[AnyLine] = []
            started = time.perf_counter()
            for raw in raw_lines:
                try:
                    decoded.append(decode_line(stream, raw, where=where))
                except NodeFormatError as exc:
                    if decoded:
                        await send.send(_Lines(stream, decoded))
                        decoded = []
                    await send.send(_BadLine(stream, exc))
            stats.decode_seconds += time.perf_counter() - started
            if decoded:
                await send.send(_Lines(stream, decoded))
            await self._gates[stream].wait()

        async def on_start(point: StartPoint) -> None:
            if not point.known:
                return  # the joiner falls back to treating the first block as partial
            floor = -1
            if point.previous_line is not None:
                height = line_height(point.previous_line)
                if height is None:
                    return
                floor = height + 1 if point.skipped_partial else height
            await send.send(_Start(stream, floor))

        async def on_idle(now: float) -> None:
            mark = _CaughtUp(stream, now, tailer.stats.files_opened, tailer.position)
            await send.send(mark)

        async def on_loss(why: str) -> None:
            # Skipped bytes are a line of unknown height lost: the same as a malformed one.
            await send.send(_BadLine(stream, NodeFormatError(stream.value, why)))

        async with send:
            while True:
                try:
                    await tailer.run(deliver, on_start, on_idle, on_loss)
                except OSError as exc:
                    # The files are the truth; lost bytes mean a re-bootstrap.
                    await send.send(_Fault(f"reading {stream.value} failed: {exc}"))
                    await trio.sleep(1.0)
                    tailer.from_start = False

    def _update_gates(self) -> None:
        joiner = self._joiner
        assert joiner is not None
        for stream, gate in self._gates.items():
            if joiner.paused(stream):
                if gate.is_set():
                    self._gates[stream] = trio.Event()
            elif not gate.is_set():
                gate.set()

    # -- the book task ----------------------------------------------------------------------

    async def _book_task(self, receive: trio.MemoryReceiveChannel[_Item]) -> None:
        joiner = self._joiner
        assert joiner is not None
        # Streaming: where each reader last said it had read everything (see below).
        idle_marks: dict[Stream, _CaughtUp] = {}
        async with receive:
            while True:
                item: _Item | None = None
                with trio.move_on_at(self._next_wakeup()):
                    item = await receive.receive()
                now = trio.current_time()
                started = time.perf_counter()
                outputs: list[Block | Gap] = []
                # A stream written to since its reader's last "caught up" is not quiet,
                # even if the reader has not run yet or its lines are still queued (a
                # busy event loop): before this, a stall longer than quiet_after could
                # complete a block without that stream's lines.
                for stream, mark in list(idle_marks.items()):
                    if self.tailers[stream].grown_since(mark.file_number, mark.position):
                        joiner.reading(stream)
                        del idle_marks[stream]
                if isinstance(item, _Lines):
                    for line in item.lines:
                        outputs.extend(joiner.feed(item.stream, line, now))
                elif isinstance(item, _BadLine):
                    self.stats.bad_lines += 1
                    self._fail(f"{item.error}", [])
                    # Its block must come from a snapshot, never be applied without the line.
                    outputs.extend(joiner.lost(item.stream, item.error.block))
                elif isinstance(item, _Fault):
                    self._fail(item.reason, [])
                elif isinstance(item, _CaughtUp):
                    outputs.extend(joiner.caught_up(item.stream, item.at))
                    if joiner.layout is Layout.STREAMING:
                        idle_marks[item.stream] = item
                elif isinstance(item, _Start):
                    joiner.start_after(item.stream, item.floor)
                elif isinstance(item, _Loaded):
                    outputs.extend(self._install(item))
                outputs.extend(joiner.poll(now))
                self.stats.book_seconds += time.perf_counter() - started
                await self._handle(outputs)
                if isinstance(item, _Check):
                    await self._finish_check(item)
                self._check_stale(now)
                self._update_gates()

    def _next_wakeup(self) -> float:
        deadline = math.inf
        if self._joiner is not None:
            deadline = self._joiner.next_deadline() or math.inf
        if not self._stale and self.books is not None and self.last_block_at is not None:
            deadline = min(deadline, self.last_block_at + self.config.stale_after)
        return deadline

    async def _handle(self, outputs: list[Block | Gap]) -> None:
        for index, item in enumerate(outputs):
            if isinstance(item, Gap):
                self.stats.gaps += 1
                self._fail(str(item), _blocks(outputs[index + 1 :]))
                return
            books = self.books
            if books is None or self._joiner is None or self._joiner.holding:
                return
            if self.layout is Layout.BY_BLOCK and item.height != books.height + 1:
                self.stats.gaps += 1
                self._fail(
                    f"block {item.height} does not follow {books.height}",
                    _blocks(outputs[index:]),
                )
                return
            started = time.perf_counter()
            try:
                applied = books.apply(item)
            except DivergenceError as exc:
                self.stats.divergences += 1
                self._fail(str(exc), _blocks(outputs[index:]))
                return
            self.stats.blocks_applied += 1
            if self._log is not None:
                self._log.add(item)
            self.last_block_at = trio.current_time()
            self.last_block_wall = time.time()
            if self._stale:
                self._stale = False
                log.info("node is writing again: feed live at block %d", item.height)
                if self.layout is Layout.STREAMING:
                    # Empty heights are invisible in this layout: check nothing was lost.
                    self._validate_now.set()
            self.status = "live"
            self.status_detail = ""
            for stage in Stage:
                self.hub.publish(stage, item, books, applied.touched)
            if self.feeds:
                update = BookUpdate(item.height, item.time, frozenset(applied.touched), books, item)
                for feed in list(self.feeds):
                    feed.push(update)
            self._wake_height_waiters(item.height)
            self.stats.book_seconds += time.perf_counter() - started
            await trio.lowlevel.checkpoint()

    def _fail(self, reason: str, unapplied: list[Block]) -> None:
        """Something makes the books untrustworthy: hold blocks and re-bootstrap."""
        self.stats.last_error = reason
        log.error("%s; re-bootstrapping from a fresh snapshot", reason)
        joiner = self._joiner
        assert joiner is not None
        if not joiner.holding:
            joiner.hold(unapplied)
        self._want_bootstrap(reason)

    def _want_bootstrap(self, reason: str) -> None:
        # A snapshot requested before this point may predate the problem: ignore it.
        self._generation += 1
        self.status = "bootstrapping" if self.books is None else "resyncing"
        self.status_detail = reason
        self._bootstrap_wanted.set()

    def _install(self, loaded: _Loaded) -> list[Block | Gap]:
        joiner = self._joiner
        assert joiner is not None
        if loaded.generation != self._generation:
            log.info("discarding a snapshot requested before the latest problem")
            return []
        books = loaded.books
        released = joiner.release(books.height)
        if released and isinstance(released[0], Gap):
            log.warning("%s: %s; asking for a newer snapshot", loaded.source, released[0])
            self._too_old += 1
            joiner.hold(_blocks(released[1:]))
            self._want_bootstrap(f"snapshot at {books.height} too old")
            return []
        if books.time == 0:
            # The snapshot has no time: use its block's if it was read, else now.
            books.time = joiner.snapshot_time or int(time.time() * 1000)
        first = released[0].height if released and isinstance(released[0], Block) else None
        self.books = books
        self._log = None  # a validation under way compares with books that are gone
        self._too_old = 0
        self.stats.bootstraps += 1
        log.info(
            "books loaded at height %d from %s (%d held blocks follow%s)",
            books.height,
            loaded.source,
            len(released),
            f", from {first}" if first is not None else "",
        )
        self.hub.resync(books)
        self._notify_feeds_resync(books, books.coins())
        self.ready.set()
        self.status = "live"
        self.status_detail = ""
        self._stale = False
        self.last_block_at = trio.current_time()
        self._wake_height_waiters(books.height)
        return released

    def _notify_feeds_resync(self, books: Books, coins: Iterable[str]) -> None:
        update = BookUpdate(books.height, books.time, frozenset(coins), books, None, True)
        for feed in list(self.feeds):
            feed.push(update)

    def _check_stale(self, now: float) -> None:
        books = self.books
        if books is None or self.last_block_at is None or self._stale:
            return
        if now - self.last_block_at < self.config.stale_after:
            return
        self._stale = True
        self.stats.stale_periods += 1
        after, height = self.config.stale_after, books.height
        if self.status == "live":
            self.status = "stale"
            text = f"feed stale: no block from the node for {after:g} s (last height {height})"
            self.status_detail = text
        else:  # a resync that cannot finish (e.g. the info server is down)
            text = (
                f"feed stale: no block applied for {after:g} s while {self.status} "
                f"({self.status_detail}); books held at height {height}"
            )
        log.warning("%s", text)
        self.hub.notify(text)

    # -- bootstrap --------------------------------------------------------------------------

    async def _bootstrap_task(self, send: trio.MemorySendChannel[_Item]) -> None:
        async with send:
            while True:
                await self._bootstrap_wanted.wait()
                self._bootstrap_wanted = trio.Event()
                generation = self._generation
                if self._too_old:
                    # The node's snapshots lag what we read: give it time to move on.
                    await trio.sleep(min(0.25 * 2**self._too_old, self.config.retry_max))
                delay = 0.5
                while True:
                    use_file = self._snapshot_file
                    try:
                        if use_file is not None:
                            source = str(use_file)
                            data = await trio.to_thread.run_sync(
                                read_snapshot, use_file, abandon_on_cancel=True
                            )
                        else:
                            source = self.config.info_url
                            data = await self._fetch(self.config.snapshot_out)
                        books = await trio.to_thread.run_sync(
                            self._load, data, abandon_on_cancel=True
                        )
                    except HlbookError as exc:
                        # Unreadable, malformed or inconsistent (a duplicate oid): retry.
                        self.stats.last_error = str(exc)
                        self.status_detail = f"{exc} (retrying in {delay:.0f} s)"
                        log.warning("snapshot failed: %s; retrying in %.1f s", exc, delay)
                        await trio.sleep(delay)
                        delay = min(delay * 2, self.config.retry_max)
                        continue
                    self._snapshot_file = None  # later re-bootstraps ask the node
                    await send.send(_Loaded(books, source, generation))
                    break

    def _load(self, data: bytes) -> Books:
        return load_books(data, coin_filter=self.config.coin_filter)

    async def _fetch(self, path: Path) -> bytes:
        log.info("requesting a snapshot from %s into %s", self.config.info_url, path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InfoServerError(f"cannot create {path.parent}: {exc.strerror or exc}") from None
        # An old snapshot left in place would be read as the answer if the node wrote none.
        with contextlib.suppress(OSError):  # absent, not ours to delete, not a file
            await trio.Path(path).unlink()
        try:
            with trio.fail_after(self.config.snapshot_timeout):
                await request_file_snapshot(self.config.info_url, path)
        except trio.TooSlowError:
            raise InfoServerError(
                f"{self.config.info_url} did not write a snapshot within "
                f"{self.config.snapshot_timeout:g} s"
            ) from None
        if not await trio.Path(path).exists():
            raise InfoServerError(
                f"{self.config.info_url} answered but wrote no snapshot to {path} "
                "(is the path writable by the node?)"
            )
        return await trio.to_thread.run_sync(read_snapshot, path, abandon_on_cancel=True)

    # -- validation -------------------------------------------------------------------------

    async def _validation_task(self, send: trio.MemorySendChannel[_Item]) -> None:
        every = self.config.validate_every
        if every <= 0:
            return
        path = self.config.snapshot_out.with_name(self.config.snapshot_out.name + ".check")
        async with send:
            while True:
                with trio.move_on_after(every):
                    await self._validate_now.wait()
                self._validate_now = trio.Event()
                if self.status not in ("live", "stale") or self.books is None:
                    continue
                # Keep every block applied from now: the snapshot will be older than our books.
                self._log = _BlockLog(self.books.height)
                check = await self._prepare_check(path)
                if check is None:
                    self._log = None
                    continue
                await send.send(check)

    async def _prepare_check(self, path: Path) -> "_Check | None":
        """Fetch a snapshot and move it forward to (almost) our height, off the book task."""
        try:
            data = await self._fetch(path)
            height, coins = await trio.to_thread.run_sync(
                decode_snapshot_file, data, abandon_on_cancel=True
            )
        except HlbookError as exc:
            log.warning("validation skipped: %s", exc)
            return None
        with trio.move_on_after(max(self.config.stale_after, 5.0)):
            await self.wait_for_height(height)  # the node may be a little ahead of its files
        block_log, books = self._log, self.books
        if books is None or books.height < height:
            log.warning("validation skipped: hlbook did not reach the snapshot's height %d", height)
            return None
        if block_log is None or block_log.start > height or block_log.overflowed:
            log.warning(
                "validation skipped: the snapshot at %d is older than the blocks kept", height
            )
            return None
        moved = MovedSnapshot(height, {coin: (bids, asks) for coin, bids, asks in coins})
        try:
            await trio.to_thread.run_sync(moved.advance, block_log.after(height))
        except DivergenceError as exc:
            self._snapshot_disagrees(height, exc)
            return None
        return _Check(moved)

    def _snapshot_disagrees(self, height: int, exc: DivergenceError) -> None:
        self.stats.validations += 1
        self.stats.validation_mismatches += 1
        log.error(
            "validation: the node's snapshot at %d does not fit the blocks it wrote after it "
            "(%s); hlbook's books applied those blocks cleanly and are kept",
            height,
            exc,
        )

    async def _finish_check(self, check: "_Check") -> None:
        """Compare at the same height, in the book task (books must not move meanwhile)."""
        books, block_log = self.books, self._log
        self._log = None
        moved = check.moved
        if books is None or block_log is None or self.status not in ("live", "stale"):
            return
        try:
            moved.advance(block_log.after(moved.height))  # what was applied in the meantime
        except DivergenceError as exc:
            self._snapshot_disagrees(moved.snapshot_height, exc)
            return
        if moved.height != books.height:
            log.warning("validation skipped: blocks were missed while checking")
            return
        result = await trio.to_thread.run_sync(compare_moved, books, moved)
        self.stats.validations += 1
        if result.matches:
            log.info(
                "validation: %s (node snapshot at %d moved forward %d blocks)",
                result.summary(),
                moved.snapshot_height,
                books.height - moved.snapshot_height,
            )
            return
        self.stats.validation_mismatches += 1
        log.error("validation: %s", result.summary())
        for difference in result.first:
            log.error("  %s", difference)
        moved_coins = set(result.coins) & moved.moved
        if moved_coins:
            # Only bare keys of those coins exist at this height: start over from the node.
            self._fail(f"validation found differences in {sorted(moved_coins)[:10]}", [])
            return
        # The other coins did not change since the snapshot: it is their exact state now.
        try:
            for coin in result.coins:
                bids, asks = moved.snapshot_coin(coin)
                books.set_coin(coin, bids, asks)
        except DivergenceError as exc:
            # E.g. an oid the node has under another coin than we do: start over.
            self._fail(f"repair from the node's snapshot failed: {exc}", [])
            return
        log.error("repaired %d coin(s) from the node's snapshot", len(result.coins))
        self.stats.coins_repaired += len(result.coins)
        self.hub.resync(books, result.coins)
        self._notify_feeds_resync(books, result.coins)

    # -- waiting ------------------------------------------------------------------------------

    async def wait_for_height(self, height: int) -> None:
        """Return once the books have applied ``height`` (or a later block)."""
        if self.books is not None and self.books.height >= height:
            return
        event = trio.Event()
        self._height_waiters.append((height, event))
        await event.wait()

    def _wake_height_waiters(self, height: int) -> None:
        if not self._height_waiters:
            return
        keep = []
        for wanted, event in self._height_waiters:
            if height >= wanted:
                event.set()
            else:
                keep.append((wanted, event))
        self._height_waiters = keep

    @property
    def stale(self) -> bool:
        """True while the node has been quiet for longer than ``stale_after``."""
        return self._stale

    def joiner_stats(self) -> dict[str, object] | None:
        """The joiner's counters, for health."""
        return attrs.asdict(self._joiner.stats()) if self._joiner is not None else None


def _blocks(items: list[Block | Gap]) -> list[Block]:
    return [item for item in items if isinstance(item, Block)]
