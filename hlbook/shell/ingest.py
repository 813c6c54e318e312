"""The data path's Trio shell: node files -> supervisor -> sink, and the supervisor's actions.

:class:`DataPath` runs, in one nursery per ingestion of the node's output:

* one reader per stream (:func:`~hlbook.shell.tail.read_stream`);
* the book task: feeds what the readers send to the
  :class:`~hlbook.node.join.BlockJoiner` (the node's source of blocks) and
  the :class:`~hlbook.supervisor.Supervisor`, which applies and publishes;
  it awaits nothing but its input, the supervisor's comparisons and
  checkpoints between bounded steps — never a client;
* the snapshot task: carries out :class:`~hlbook.supervisor.WantSnapshot`
  (fetch, load in a thread), the latest request winning;
* the check task: fetches and advances validation snapshots;
* the shape watcher: every second, whether a fills directory appeared and
  (while the supervisor wants it) which layout the node writes.

When the supervisor says :class:`~hlbook.supervisor.RestartIngestion`, that
nursery ends and a new one starts on the node's new shape; the supervisor,
its books and every subscriber stay.
"""

import logging
import math
import time
from collections import deque
from collections.abc import Iterable

import attrs
import trio

from hlbook.book.books import Books
from hlbook.book.validate import MovedSnapshot, compare_moved
from hlbook.config import Config
from hlbook.errors import DivergenceError, HlbookError
from hlbook.node.files import StreamTailer, stream_dir
from hlbook.node.formats import Layout, SnapshotSide, Stream
from hlbook.node.join import BlockJoiner, LateLine
from hlbook.shell.path import SupervisedPath
from hlbook.shell.snapshots import Bootstrap, decode_in_thread, load_in_thread
from hlbook.shell.tail import (
    CaughtUp,
    Gate,
    LineLost,
    Lines,
    ReadFailed,
    SourceEvent,
    StartedAt,
    find_layout,
    read_stream,
    stream_present,
)
from hlbook.stages import BlockSink
from hlbook.supervisor import (
    Action,
    AdvanceCheck,
    CompareCheck,
    FetchCheck,
    RestartIngestion,
    Settings,
    Supervisor,
    WantSnapshot,
)
from hlbook.throttle import Report, Throttle

__all__ = ["DataPath"]

log = logging.getLogger("hlbook.ingest")


@attrs.frozen
class _Loaded:
    books: Books
    source: str
    generation: int


@attrs.frozen
class _LoadFailed:
    reason: str
    generation: int


@attrs.frozen
class _CheckSnapshot:
    height: int
    coins: list[tuple[str, SnapshotSide, SnapshotSide]]


@attrs.frozen
class _CheckFailed:
    reason: str


@attrs.frozen(eq=False)
class _Advanced:
    moved: MovedSnapshot
    error: DivergenceError | None


@attrs.frozen
class _Shape:
    fills_appeared: bool
    layout: Layout | None


_Event = SourceEvent | _Loaded | _LoadFailed | _CheckSnapshot | _CheckFailed | _Advanced | _Shape


def _take_waiting(receive: trio.MemoryReceiveChannel[_Event], queued: deque[_Event]) -> None:
    """Also take what is already waiting, the diff stream's events first.

    Views of the diffs (l2Book, bbo) must not wait behind the decoding and joining
    of the much larger status lines; every stream's own events keep their order.
    """
    while True:
        try:
            queued.append(receive.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            break
    if len(queued) > 1:
        ordered = sorted(
            queued, key=lambda event: getattr(event, "stream", None) is not Stream.DIFFS
        )
        queued.clear()
        queued.extend(ordered)


class DataPath(SupervisedPath):
    """Owns the supervisor (and so the books) and everything that feeds it.
    Started by :func:`hlbook.serve`."""

    def __init__(self, config: Config, sink: BlockSink) -> None:
        super().__init__(Supervisor(sink, Settings.from_config(config)))
        self.config = config
        self.tailers: dict[Stream, StreamTailer] = {}
        self.joiner: BlockJoiner | None = None
        self._snapshots = Bootstrap(config)
        self._want: WantSnapshot | None = None
        self._want_changed = trio.Event()
        self._checks: trio.MemorySendChannel[FetchCheck | AdvanceCheck] | None = None
        self._late = Throttle()
        """When to log status and fill lines dropped for coming after their block."""

    # -- reading ------------------------------------------------------------------------------

    @property
    def layout(self) -> Layout | None:
        """The layout being read (or the forced one before that)."""
        return self.supervisor.layout or self.config.layout

    def joiner_stats(self) -> dict[str, object] | None:
        """The joiner's counters, for health."""
        return attrs.asdict(self.joiner.stats()) if self.joiner is not None else None

    # -- lifecycle ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled."""
        from_start = self.config.from_start
        while True:
            layout = await self._wait_for_layout()
            reason = await self._ingest(layout, from_start=from_start)
            log.warning("%s: starting ingestion over", reason)
            from_start = False  # a fresh snapshot covers what came before

    async def _wait_for_layout(self) -> Layout:
        node_data = self.config.node_data.expanduser()
        forced = self.config.layout
        said = False
        while True:
            if forced is not None:
                if stream_present(node_data, Stream.DIFFS, forced):
                    return forced
            else:
                found = find_layout(node_data)
                if found is not None:
                    log.info("node writes the %s layout", found.value)
                    return found
            if not said:
                self.supervisor.waiting(f"no node output under {node_data}")
                log.info("waiting for the node's output under %s", node_data)
                said = True
            await trio.sleep(0.5)

    async def _ingest(self, layout: Layout, *, from_start: bool) -> str:
        """Read, join, apply and heal one output shape until it changes; return why it did."""
        node_data = self.config.node_data.expanduser()
        streams = [
            s
            for s in Stream
            if s is not Stream.FILLS or stream_present(node_data, Stream.FILLS, layout)
        ]
        if Stream.FILLS not in streams:
            log.warning("no fills directory under %s: trades will be empty", node_data)
        joiner = BlockJoiner(
            layout, streams, quiet_after=self.config.stream_quiet_after, parts=True
        )
        self.joiner = joiner
        self.tailers = {}
        gates = {stream: Gate() for stream in streams}
        send, receive = trio.open_memory_channel[_Event](4)
        # The supervisor asks for one validation step at a time: 1 is never full.
        self._checks, checks = trio.open_memory_channel[FetchCheck | AdvanceCheck](1)
        async with trio.open_nursery() as nursery:
            async with send:
                for stream in streams:
                    # The diff stream is read first after a write: l2Book and bbo need
                    # only it, and the status stream is 5-10x larger (see read_stream).
                    tailer = StreamTailer(
                        stream_dir(node_data, stream, layout),
                        from_start=from_start,
                        defer=0 if stream is Stream.DIFFS else 2,
                    )
                    self.tailers[stream] = tailer
                    nursery.start_soon(
                        read_stream, stream, tailer, send.clone(), gates[stream], self.stats
                    )
                nursery.start_soon(self._snapshot_task, send.clone())
                nursery.start_soon(self._check_results, checks, send.clone())
                nursery.start_soon(self._watch_shape, layout, streams, send.clone())
            actions = self.supervisor.attach(
                joiner,
                trio.current_time(),
                contiguous=layout is Layout.BY_BLOCK,
                layout=layout,
            )
            reason = await self._book_task(receive, joiner, gates, actions)
            nursery.cancel_scope.cancel()
        return reason

    # -- the book task --------------------------------------------------------------------------

    async def _book_task(
        self,
        receive: trio.MemoryReceiveChannel[_Event],
        joiner: BlockJoiner,
        gates: dict[Stream, Gate],
        actions: list[Action],
    ) -> str:
        sup = self.supervisor
        stats = sup.stats
        streaming = joiner.layout is Layout.STREAMING
        # Streaming: where each reader last said it had read everything (see below).
        idle_marks: dict[Stream, CaughtUp] = {}
        queued: deque[_Event] = deque()
        async with receive:
            while True:
                reason = await self._carry_out(actions)
                if reason is not None:
                    return reason
                self._after_step(joiner, gates)
                if sup.backlog:
                    actions = await self.work_step()
                    continue
                if not queued:
                    deadline = sup.next_deadline()
                    with trio.move_on_at(math.inf if deadline is None else deadline):
                        queued.append(await receive.receive())
                    _take_waiting(receive, queued)
                item = queued.popleft() if queued else None
                now = trio.current_time()
                started = time.perf_counter()
                # A stream written to since its reader's last "caught up" is not quiet,
                # even if the reader has not run yet or its lines are still queued (a
                # busy event loop): before this, a stall longer than quiet_after could
                # complete a block without that stream's lines.
                for stream, mark in list(idle_marks.items()):
                    if self.tailers[stream].grown_since(mark.file_number, mark.position):
                        joiner.reading(stream)
                        del idle_marks[stream]
                actions = self._handle(item, joiner, now)
                if streaming and isinstance(item, CaughtUp):
                    idle_marks[item.stream] = item
                actions += sup.tick(now)
                _log_late(self._late.tick(now), joiner.quiet_after)
                stats.book_seconds += time.perf_counter() - started

    def _dropped_late(self, joiner: BlockJoiner, events: int, now: float) -> None:
        """``events`` of status or fill lines came after their block was complete: counted
        (``hlbook_late_events_total``) and logged, at most a line a minute."""
        self.supervisor.stats.late_events += events
        last = joiner.last_late
        assert last is not None
        _log_late(self._late.occurred(now, _describe_late(last), events), joiner.quiet_after)

    def _handle(self, item: _Event | None, joiner: BlockJoiner, now: float) -> list[Action]:
        sup = self.supervisor
        if isinstance(item, Lines):
            stream = item.stream
            outputs = []
            late = joiner.late_events
            for line in item.lines:
                outputs.extend(joiner.feed(stream, line, now))
            if joiner.late_events != late:
                self._dropped_late(joiner, joiner.late_events - late, now)
            return sup.receive(outputs, now)
        if isinstance(item, LineLost):
            # Its block must come from a snapshot, never be applied without the line.
            actions = sup.fault(str(item.error), now, bad_line=True)
            return actions + sup.receive(joiner.lost(item.stream, item.error.block), now)
        if isinstance(item, ReadFailed):
            return sup.fault(item.reason, now)
        if isinstance(item, CaughtUp):
            return sup.receive(joiner.caught_up(item.stream, item.at), now)
        if isinstance(item, StartedAt):
            joiner.start_after(item.stream, item.floor, item.block_time)
            return []
        if isinstance(item, _Loaded):
            return sup.snapshot_loaded(item.books, item.source, item.generation, now)
        if isinstance(item, _LoadFailed):
            return sup.snapshot_failed(item.reason, item.generation, now)
        if isinstance(item, _CheckSnapshot):
            return sup.check_snapshot(item.height, item.coins, now)
        if isinstance(item, _CheckFailed):
            return sup.check_failed(item.reason, now)
        if isinstance(item, _Advanced):
            return sup.check_advanced(item.moved, item.error, now)
        if isinstance(item, _Shape):
            where = str(self.config.node_data.expanduser())
            return sup.node_shape(
                now, fills_appeared=item.fills_appeared, layout=item.layout, where=where
            )
        return []  # woken by the deadline: tick does the rest

    async def _carry_out(self, actions: Iterable[Action]) -> str | None:
        """Do what the supervisor asked; the reason if ingestion must start over."""
        pending = list(actions)
        while pending:
            action = pending.pop(0)
            if isinstance(action, WantSnapshot):
                self._want = action
                self._want_changed.set()
            elif isinstance(action, FetchCheck | AdvanceCheck):
                assert self._checks is not None
                try:
                    self._checks.send_nowait(action)
                except trio.WouldBlock:
                    # Still busy with an abandoned check's fetch (a slow info server).
                    now = trio.current_time()
                    pending += self.supervisor.check_failed("a previous check is under way", now)
            elif isinstance(action, CompareCheck):
                # In the book task: the books must not move while they are compared.
                books = self.books
                assert books is not None
                started = time.perf_counter()
                result = await trio.to_thread.run_sync(compare_moved, books, action.moved)
                self.stats.book_seconds += time.perf_counter() - started
                pending += self.supervisor.check_compared(action.moved, result, trio.current_time())
            elif isinstance(action, RestartIngestion):
                return action.reason
        return None

    def _after_step(self, joiner: BlockJoiner, gates: dict[Stream, Gate]) -> None:
        for stream, gate in gates.items():
            gate.set(not joiner.paused(stream))
        self._books_moved()

    # -- snapshots ------------------------------------------------------------------------------

    async def _snapshot_task(self, send: trio.MemorySendChannel[_Event]) -> None:
        async with send:
            while True:
                await self._want_changed.wait()
                self._want_changed = trio.Event()
                want = self._want
                assert want is not None
                if want.delay:
                    await trio.sleep(want.delay)
                    if self._want is not want:
                        self._want_changed.set()  # a newer request: take that one
                        continue
                source = self._snapshots.current
                try:
                    data = await source.fetch()
                    books = await load_in_thread(data, self.config)
                except HlbookError as exc:
                    # Unreadable, malformed or inconsistent (a duplicate oid): retried.
                    await send.send(_LoadFailed(str(exc), want.generation))
                    continue
                self._snapshots.loaded()  # later bootstraps ask the node
                await send.send(_Loaded(books, source.name, want.generation))

    # -- validation -------------------------------------------------------------------------------

    async def _check_results(
        self,
        requests: trio.MemoryReceiveChannel[FetchCheck | AdvanceCheck],
        send: trio.MemorySendChannel[_Event],
    ) -> None:
        """Fetch and advance validation snapshots as the supervisor asks."""
        async with send, requests:
            while True:
                request = await requests.receive()
                if isinstance(request, FetchCheck):
                    try:
                        data = await self._snapshots.check.fetch()
                        height, coins = await decode_in_thread(data)
                    except HlbookError as exc:
                        await send.send(_CheckFailed(str(exc)))
                        continue
                    await send.send(_CheckSnapshot(height, coins))
                else:
                    error: DivergenceError | None = None
                    try:
                        await trio.to_thread.run_sync(
                            request.moved.advance, request.blocks, abandon_on_cancel=True
                        )
                    except DivergenceError as exc:
                        error = exc
                    await send.send(_Advanced(request.moved, error))

    # -- the node's shape -----------------------------------------------------------------------

    async def _watch_shape(
        self, layout: Layout, streams: list[Stream], send: trio.MemorySendChannel[_Event]
    ) -> None:
        node_data = self.config.node_data.expanduser()
        async with send:
            while True:
                await trio.sleep(1.0)
                fills = Stream.FILLS not in streams and stream_present(
                    node_data, Stream.FILLS, layout
                )
                found: Layout | None = None
                if self.supervisor.wants_layout_check:
                    found = await trio.to_thread.run_sync(find_layout, node_data)
                if fills or (found is not None and found is not layout):
                    await send.send(_Shape(fills, found))


def _describe_late(late: LateLine) -> str:
    lost = "trades and fills" if late.stream is Stream.FILLS else "order statuses"
    return (
        f"{late.events} {late.stream.value} event(s) of block {late.height}"
        f" (its {lost} were sent and recorded without them)"
    )


def _log_late(report: Report | None, quiet_after: float) -> None:
    if report is None:
        return
    what = f"{report.count} event(s)"
    if report.seconds is not None:
        what += f" in the last {report.seconds:.0f} s"
    log.warning(
        "dropped %s read after their block was complete, the latest %s: the node paused"
        " between writing its streams for longer than --stream-quiet-after (%g s);"
        " raise it if this recurs",
        what,
        report.detail,
        quiet_after,
    )
