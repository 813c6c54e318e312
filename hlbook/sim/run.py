"""The running simulator: a block loop and an info server in one nursery.

``handle = await nursery.start(run_simulator, config)`` returns once the
info server accepts connections and the output directories exist. The block
loop then generates a block, writes it to all three streams, and only then
counts it as written (:attr:`SimHandle.height`). Blocks are generated only
when they are written, so the simulator's books are always those of the
files, except while a block is being written (partial writes, a diff stream
running ahead): snapshot requests arriving then are answered once it is
complete, at that height.
"""

import logging
import math
import os
import random
import tempfile
from collections import deque
from pathlib import Path

import attrs
import trio

from hlbook.node.formats import Layout, Order, Stream
from hlbook.sim.config import SimConfig
from hlbook.sim.exchange import BlockEvents
from hlbook.sim.generator import BlockGenerator
from hlbook.sim.info_server import serve_info
from hlbook.sim.render import LineRenderer, Segment
from hlbook.sim.writer import BlockWriter, NodeFiles

__all__ = ["SimHandle", "SimStats", "run_simulator"]

log = logging.getLogger(__name__)

_STATS_EVERY = 10.0  # seconds between progress lines in the log
_MAX_BACKLOG = 1.0  # seconds of missed blocks caught up at full speed after a stall
_ALL_STREAMS = frozenset(Stream)


@attrs.frozen
class SimStats:
    """Counters of what the simulator wrote."""

    height: int
    blocks: int
    statuses: int
    diffs: int
    fills: int
    bytes: int
    resting: int


@attrs.define(eq=False)
class _Pending:
    """A generated block whose lines are not all written yet."""

    block: BlockEvents
    segments: dict[Stream, list[Segment]]
    skip: frozenset[Stream]


@attrs.define(eq=False)
class _SnapshotWaiter:
    include_height: bool
    ready: trio.Event = attrs.field(factory=trio.Event)
    height: int = 0
    data: bytes = b""


class _Node:
    """State shared by the block loop, the info server and the handle."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        # While a block is in flight the books are ahead of the files; keeping the
        # books of the last few heights lets the handle show exactly the written state.
        in_flight = config.diff_ahead + 2 if config.partial_writes or config.diff_ahead else 0
        self.generator = BlockGenerator(config, history=max(config.record_history, in_flight))
        self.renderer = LineRenderer(config.layout, random.Random(f"{config.seed}-lines"))
        self.files = NodeFiles(config.node_data, config.layout)
        rate = config.blocks_per_second
        self.interval = 0.0 if math.isinf(rate) else 1.0 / rate
        self.writer = BlockWriter(
            self.files,
            partial_writes=config.partial_writes,
            rng=random.Random(f"{config.seed}-writes"),
            pause=self.interval / 4,
        )
        self.height = self.generator.height
        self.generated = 0
        self.events = [0, 0, 0]  # statuses, diffs, fills written
        self.paused = False
        self.idle = False
        self.done = trio.Event()
        self.skipped: list[tuple[int, frozenset[Stream]]] = []
        self.snapshots_served = 0
        self._queue: deque[_Pending] = deque()
        self._waiters: list[_SnapshotWaiter] = []
        self._skip_next: list[frozenset[Stream]] = []
        self._disagree = False
        self._wake = trio.Event()
        self._changed = trio.Event()
        self._started_at = 0.0
        self._logged_blocks = 0

    # -- signalling ------------------------------------------------------------------------

    def wake(self) -> None:
        """Make an idle block loop look at its state again."""
        self._wake.set()

    def notify(self) -> None:
        """Tell waiters (heights, idleness) that something changed."""
        self._changed.set()
        self._changed = trio.Event()

    async def changed(self) -> None:
        """Wait for the next :meth:`notify`."""
        await self._changed.wait()

    # -- the block loop ----------------------------------------------------------------------

    def _budget_spent(self) -> bool:
        config = self.config
        if config.blocks is not None and self.generated >= config.blocks:
            return True
        return config.duration is not None and (
            trio.current_time() - self._started_at >= config.duration
        )

    def _can_generate(self) -> bool:
        return not (self.paused or self._waiters or self._budget_spent())

    async def run(self) -> None:
        """Write blocks at the configured pace until cancelled."""
        self._started_at = next_due = last_stats = trio.current_time()
        diff_ahead = self.config.diff_ahead
        while True:
            if self._queue and (len(self._queue) > diff_ahead or not self._can_generate()):
                await self._finish_oldest()
            elif self._waiters and not self._queue:
                self._serve_waiters()
            elif self._can_generate():
                if self.interval:
                    await trio.sleep_until(next_due)
                else:
                    await trio.lowlevel.checkpoint()
                if not self._can_generate():
                    continue
                next_due = max(next_due + self.interval, trio.current_time() - _MAX_BACKLOG)
                await self._generate()
            else:
                if self._budget_spent() and not self.done.is_set():
                    log.info("wrote %d blocks; the node is now quiet", self.generated)
                    self.done.set()
                self.idle = True
                self.notify()
                await self._wake.wait()
                self._wake = trio.Event()
                self.idle = False
                next_due = trio.current_time()  # resume without a burst of catch-up blocks
            now = trio.current_time()
            if now - last_stats >= _STATS_EVERY:
                self._log_stats(now - last_stats)
                last_stats = now

    async def _generate(self) -> None:
        block = self.generator.step()
        self.generated += 1
        skip = self._skip_next.pop(0) if self._skip_next else frozenset()
        if skip:
            self.skipped.append((block.height, skip))
            log.info(
                "fault: block %d not written to %s", block.height, sorted(s.value for s in skip)
            )
        pending = _Pending(block, self.renderer.render(block), skip)
        self._queue.append(pending)
        if Stream.DIFFS not in skip:
            await self.writer.write(Stream.DIFFS, pending.segments[Stream.DIFFS])

    async def _finish_oldest(self) -> None:
        pending = self._queue[0]
        for stream in (Stream.FILLS, Stream.STATUSES):
            if stream not in pending.skip:
                await self.writer.write(stream, pending.segments[stream])
        self._queue.popleft()
        block = pending.block
        self.height = block.height
        counts = self.events
        counts[0] += len(block.statuses)
        counts[1] += len(block.diffs)
        counts[2] += len(block.fills)
        self.notify()

    def _log_stats(self, elapsed: float) -> None:
        stats = self.stats()
        rate = (stats.blocks - self._logged_blocks) / elapsed
        self._logged_blocks = stats.blocks
        log.info(
            "height %d: %.1f blocks/s (target %.1f), %d blocks, %.1f MB written, %d resting orders",
            stats.height,
            rate,
            self.config.blocks_per_second,
            stats.blocks,
            stats.bytes / 1e6,
            stats.resting,
        )

    def stats(self) -> SimStats:
        """Counters of what was written so far."""
        books = self.generator.exchange.books.values()
        return SimStats(
            height=self.height,
            blocks=self.height - (self.config.start_height - 1),
            statuses=self.events[0],
            diffs=self.events[1],
            fills=self.events[2],
            bytes=self.files.bytes_written,
            resting=sum(len(book) for book in books),
        )

    # -- faults -----------------------------------------------------------------------------

    def skip_block(self, stream: Stream | None) -> None:
        self._skip_next.append(_ALL_STREAMS if stream is None else frozenset({stream}))

    def disagree_next_snapshot(self) -> None:
        self._disagree = True

    # -- snapshots ----------------------------------------------------------------------------

    @property
    def in_flight(self) -> bool:
        """True while a generated block is not fully written."""
        return bool(self._queue)

    def _encode_snapshot(self, include_height: bool) -> bytes:
        disagree, self._disagree = self._disagree, False
        if disagree:
            log.info("fault: the snapshot at height %d has one order altered", self.height)
        self.snapshots_served += 1
        return self.generator.snapshot_bytes(include_height=include_height, disagree=disagree)

    def _serve_waiters(self) -> None:
        for waiter in self._waiters:
            waiter.height = self.height
            waiter.data = self._encode_snapshot(waiter.include_height)
            waiter.ready.set()
        self._waiters.clear()

    async def write_snapshot(self, path: Path, include_height: bool) -> int:
        """Write the books as of the last fully written block to ``path``; return the height."""
        if self._queue:
            waiter = _SnapshotWaiter(include_height)
            self._waiters.append(waiter)
            self.wake()
            await waiter.ready.wait()
            height, data = waiter.height, waiter.data
        else:
            height, data = self.height, self._encode_snapshot(include_height)
        await trio.to_thread.run_sync(_write_file, path, data)
        log.info("snapshot at height %d written to %s (%d bytes)", height, path, len(data))
        return height


def _write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (a reader never sees half a snapshot)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes it private; a node's snapshot is for another process to read.
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


class SimHandle:
    """Control and inspection of a running simulator (see :func:`run_simulator`)."""

    def __init__(self, node: _Node, info_port: int, scope: trio.CancelScope) -> None:
        self._node = node
        self._scope = scope
        self.info_port = info_port
        """The bound port of the info server."""
        self.config = node.config

    # -- where things are --------------------------------------------------------------------

    @property
    def info_url(self) -> str:
        """``http://HOST:PORT/info``."""
        return f"http://{self.config.info_host}:{self.info_port}/info"

    @property
    def node_data(self) -> Path:
        """The root directory of the node's files."""
        return self.config.node_data

    @property
    def layout(self) -> Layout:
        """How the node groups events into lines."""
        return self.config.layout

    def stream_dir(self, stream: Stream) -> Path:
        """``<node_data>/node_<stream>_<layout>``."""
        return self._node.files.stream_dir(stream)

    def current_file(self, stream: Stream) -> Path | None:
        """The hourly file ``stream`` appends to now (``None`` before its first line)."""
        return self._node.files.current(stream)

    # -- progress -----------------------------------------------------------------------------

    @property
    def start_height(self) -> int:
        """The first block's height; the initial books are at ``start_height - 1``."""
        return self.config.start_height

    @property
    def height(self) -> int:
        """The last block fully written to all three streams."""
        return self._node.height

    @property
    def generated_height(self) -> int:
        """The last block generated (ahead of :attr:`height` while a block is in flight)."""
        return self._node.generator.height

    @property
    def done(self) -> bool:
        """True once the block budget (``blocks`` / ``duration``) is spent."""
        return self._node.done.is_set()

    @property
    def skipped(self) -> list[tuple[int, frozenset[Stream]]]:
        """Blocks not written (fault injection): ``(height, streams left out)``."""
        return list(self._node.skipped)

    @property
    def snapshots_served(self) -> int:
        """How many ``fileSnapshot`` requests were answered."""
        return self._node.snapshots_served

    def stats(self) -> SimStats:
        """Counters of what was written so far."""
        return self._node.stats()

    async def wait_for_height(self, height: int) -> None:
        """Wait until block ``height`` is fully written."""
        while self._node.height < height:
            await self._node.changed()

    async def wait_idle(self) -> int:
        """Wait until the node is quiet (paused or done, nothing in flight); return the height."""
        node = self._node
        while not (node.idle and (node.paused or node.done.is_set())):
            await node.changed()
        return node.height

    async def wait_done(self) -> None:
        """Wait until the block budget is spent and everything is written."""
        await self._node.done.wait()

    # -- books -------------------------------------------------------------------------------------

    def coins(self) -> list[str]:
        """Every simulated coin."""
        return self._node.generator.coins()

    def coin_orders(self, coin: str) -> tuple[list[Order], list[Order]]:
        """Bids and asks of ``coin`` as of :attr:`height`, best first in queue order.

        Orders are copies with ``user`` set, as hlbook's books hold them.
        """
        generator = self._node.generator
        if generator.keep:
            return generator.coin_orders_at(self.height, coin)
        # Without partial writes or diffs ahead no block is ever seen in flight.
        return generator.coin_orders(coin)

    def coin_orders_at(self, height: int, coin: str) -> tuple[list[Order], list[Order]]:
        """Bids and asks of ``coin`` as of ``height`` (one of the last ``record_history``)."""
        return self._node.generator.coin_orders_at(height, coin)

    def snapshot_at(self, height: int) -> bytes:
        """The node's ``fileSnapshot`` output as of ``height`` (needs ``record_history``)."""
        return self._node.generator.snapshot_bytes_at(height)

    # -- control and faults ----------------------------------------------------------------------

    def pause(self) -> None:
        """Stop writing blocks (the node goes quiet) once the block in flight is written."""
        self._node.paused = True
        self._node.wake()

    def resume(self) -> None:
        """Start writing blocks again, at the configured pace from now."""
        self._node.paused = False
        self._node.wake()

    def skip_block(self, stream: Stream | None = None) -> None:
        """Do not write the next block: to any stream, or only to ``stream`` (a real gap)."""
        self._node.skip_block(stream)

    def corrupt_next_line(self, stream: Stream, *, replace: bool = False) -> None:
        """Write one malformed line to ``stream`` just before its next real line, or
        (``replace``) instead of it: that line's events are then lost to readers."""
        self._node.writer.corrupt.add(stream)
        if replace:
            self._node.writer.replace.add(stream)

    def disagree_next_snapshot(self) -> None:
        """Alter one order (its size, by one lot) in the next ``fileSnapshot`` answer."""
        self._node.disagree_next_snapshot()

    def stop(self) -> None:
        """Stop the simulator: :func:`run_simulator` returns."""
        self._scope.cancel()


async def run_simulator(
    config: SimConfig, *, task_status: trio.TaskStatus[SimHandle] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run a simulated node until cancelled (or :meth:`SimHandle.stop`).

    Use as ``handle = await nursery.start(run_simulator, config)``: the handle
    is returned once the output directories exist and the info server
    accepts connections. When ``blocks`` or ``duration`` is spent the node
    goes quiet but keeps answering the info server.
    """
    node = _Node(config)
    node.files.prepare()
    if node.files.has_files():
        log.warning(
            "%s already holds node files; new lines are appended to them "
            "(heights start again at %d)",
            config.node_data,
            config.start_height,
        )
    try:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                serve_info, node.write_snapshot, config.info_host, config.info_port
            )
            handle = SimHandle(node, port, nursery.cancel_scope)
            log.info(
                "simulated node (%s, seed %d, %s, %.1f blocks/s, scale %g) writing to %s; "
                "info server at %s",
                config.layout.value,
                config.seed,
                ",".join(config.coins),
                config.blocks_per_second,
                config.scale,
                config.node_data,
                handle.info_url,
            )
            nursery.start_soon(node.run)
            task_status.started(handle)
    finally:
        node.files.close()
