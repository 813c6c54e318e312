"""The running simulator: a block loop and its info servers in one nursery.

``handle = await nursery.start(run_simulator, config)`` returns once the
info servers accept connections and the output directories exist. The block
loop then generates a block, writes it to all three streams, and only then
counts it as written (:attr:`SimHandle.height`). Blocks are generated only
when they are written, so the simulator's books are always those of the
files, except while a block is being written (partial writes, a diff stream
running ahead): info requests arriving then (snapshots, open orders, asset
contexts…) are answered once it is complete, at that height.

Two info servers (:mod:`hlbook.sim.info`): the node's own on ``info_port``,
and, when ``fallback_port`` is set, a stand-in for the public API that also
answers ``metaAndAssetCtxs`` and ``spotMetaAndAssetCtxs``.
"""

import logging
import math
import os
import random
import tempfile
from collections import Counter, deque
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import attrs
import trio

from hlbook.node.formats import Fill, Layout, Order, Stream
from hlbook.sim.config import SimConfig
from hlbook.sim.exchange import BlockEvents
from hlbook.sim.generator import BlockGenerator
from hlbook.sim.info import (
    FALLBACK_TYPES,
    NODE_TYPES,
    InfoApi,
    Role,
    frontend_open_order,
    open_order,
)
from hlbook.sim.info_server import answer_file_snapshot, serve_info_api
from hlbook.sim.markets import Markets
from hlbook.sim.render import LineRenderer, Segment
from hlbook.sim.users import NAMED_USERS
from hlbook.sim.writer import BlockWriter, NodeFiles

__all__ = ["SimHandle", "SimStats", "run_simulator"]

log = logging.getLogger(__name__)

_STATS_EVERY = 10.0  # seconds between progress lines in the log
_MAX_BACKLOG = 1.0  # seconds of missed blocks caught up at full speed after a stall
_ALL_STREAMS = frozenset(Stream)
_KEPT_FILLS = 100_000  # per user, the most recent
_COUNTED_TYPES = 256  # distinct request types counted; the rest as "(other)"

_KNOWN_TYPES = frozenset(NODE_TYPES) | frozenset(FALLBACK_TYPES)

T = TypeVar("T")


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
class _Waiter:
    """Work to do once no block is in flight, and its outcome."""

    work: Callable[[], Any]
    ready: trio.Event = attrs.field(factory=trio.Event)
    result: Any = None
    error: Exception | None = None


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
        self.markets = Markets(config.coin_specs())
        self.apis = {role: InfoApi(self.markets, role) for role in Role}
        self.requests: Counter[tuple[str, str]] = Counter()
        self._all_fills = config.record_fills
        self.fills: dict[str, deque[tuple[int, Fill]]] = {
            user: deque(maxlen=_KEPT_FILLS) for user in NAMED_USERS
        }
        self._queue: deque[_Pending] = deque()
        self._waiters: list[_Waiter] = []
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
        if Stream.FILLS not in pending.skip:
            self._record_fills(block)
        counts = self.events
        counts[0] += len(block.statuses)
        counts[1] += len(block.diffs)
        counts[2] += len(block.fills)
        self.notify()

    def _record_fills(self, block: BlockEvents) -> None:
        fills = self.fills
        for user, fill in block.fills:
            kept = fills.get(user)
            if kept is None:
                if not self._all_fills:
                    continue
                kept = fills[user] = deque(maxlen=_KEPT_FILLS)
            kept.append((block.height, fill))

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
            try:
                waiter.result = waiter.work()
            except Exception as exc:  # handed to the waiting task, which raises it
                waiter.error = exc
            waiter.ready.set()
        self._waiters.clear()

    async def at_rest(self, work: Callable[[], T]) -> T:
        """``work()``, run when no block is in flight: on the books of :attr:`height`."""
        if not self._queue:
            return work()
        waiter = _Waiter(work)
        self._waiters.append(waiter)
        self.wake()
        await waiter.ready.wait()
        if waiter.error is not None:
            raise waiter.error
        result: T = waiter.result
        return result

    async def write_snapshot(self, path: Path, include_height: bool) -> int:
        """Write the books as of the last fully written block to ``path``; return the height."""
        height, data = await self.at_rest(
            lambda: (self.height, self._encode_snapshot(include_height))
        )
        await trio.to_thread.run_sync(_write_file, path, data)
        log.info("snapshot at height %d written to %s (%d bytes)", height, path, len(data))
        return height

    # -- the info servers ------------------------------------------------------------------

    async def answer(self, role: Role, message: dict[str, Any]) -> Any:
        """Answer a decoded info request as ``role``."""
        kind: str = message["type"]
        key = (role.value, kind)
        full = len(self.requests) >= _COUNTED_TYPES
        if full and kind not in _KNOWN_TYPES and key not in self.requests:
            key = (role.value, "(other)")  # made-up types cannot grow the counter forever
        self.requests[key] += 1
        api = self.apis[role]
        if role is Role.NODE and kind == "fileSnapshot":
            return await answer_file_snapshot(self.write_snapshot, message)
        query = api.parse(message)
        return await self.at_rest(lambda: api.answer(query, self.generator))


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

    def __init__(
        self,
        node: _Node,
        info_port: int,
        scope: trio.CancelScope,
        fallback_port: int | None = None,
    ) -> None:
        self._node = node
        self._scope = scope
        self.info_port = info_port
        """The bound port of the node's info server."""
        self.fallback_port = fallback_port
        """The bound port of the fallback info server (``None``: not started)."""
        self.config = node.config

    # -- where things are --------------------------------------------------------------------

    @property
    def info_base_url(self) -> str:
        """``http://HOST:PORT`` of the node's info server (an SDK's ``base_url``)."""
        return f"http://{self.config.info_host}:{self.info_port}"

    @property
    def info_url(self) -> str:
        """``http://HOST:PORT/info`` of the node's info server (hlbook's ``--info-url``)."""
        return f"{self.info_base_url}/info"

    @property
    def fallback_base_url(self) -> str | None:
        """``http://HOST:PORT`` of the fallback info server, if started."""
        if self.fallback_port is None:
            return None
        return f"http://{self.config.info_host}:{self.fallback_port}"

    @property
    def fallback_url(self) -> str | None:
        """``http://HOST:PORT/info`` of the fallback info server (hlbook's
        ``--fallback-info-url``), if started."""
        base = self.fallback_base_url
        return None if base is None else f"{base}/info"

    @property
    def markets(self) -> Markets:
        """What the simulated exchange lists (the source of ``meta``, ``spotMeta``…)."""
        return self._node.markets

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

    def info_requests(self) -> Counter[tuple[str, str]]:
        """Requests received by each info server, as ``(role, type)`` → count, where
        role is ``"node"`` or ``"fallback"`` (refused requests included)."""
        return Counter(self._node.requests)

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

    # -- users ---------------------------------------------------------------------------------

    def _user_orders(self, user: str, height: int | None) -> tuple[list[Order], list[Order]]:
        generator = self._node.generator
        if height is None:
            # Without partial writes or diffs ahead no block is ever seen in flight.
            height = self.height if generator.keep else None
        return generator.user_orders(user, height)

    def resting_orders(self, user: str, height: int | None = None) -> list[Order]:
        """``user``'s orders in the books as of ``height`` (default :attr:`height`; others
        need ``record_history``), oldest first, ``user`` set: what a ``fileSnapshot``
        holds of them, and all a node's files can tell of their open orders."""
        return self._user_orders(user, height)[0]

    def trigger_orders(self, user: str, height: int | None = None) -> list[Order]:
        """``user``'s untriggered trigger orders as of ``height``, oldest first: open
        orders that are in no book (nor in ``fileSnapshot``) until they trigger."""
        return self._user_orders(user, height)[1]

    def open_orders(
        self, user: str, dex: str = "", height: int | None = None, *, triggers: bool = True
    ) -> list[dict[str, Any]]:
        """The node's ``openOrders`` answer for ``user`` and ``dex`` as of ``height``:
        resting and untriggered trigger orders, newest first. With ``triggers=False``,
        the resting orders only: all that a node's files and snapshots can tell."""
        return [open_order(o) for o in self._open(user, dex, height, triggers)]

    def frontend_open_orders(
        self, user: str, dex: str = "", height: int | None = None, *, triggers: bool = True
    ) -> list[dict[str, Any]]:
        """The node's ``frontendOpenOrders`` answer for ``user`` and ``dex`` as of
        ``height`` (``triggers=False``: without the untriggered trigger orders)."""
        return [frontend_open_order(o) for o in self._open(user, dex, height, triggers)]

    def _open(self, user: str, dex: str, height: int | None, triggers: bool) -> list[Order]:
        resting, pending = self._user_orders(user, height)
        coins = self._node.markets.dex_coins(dex)
        orders = [o for o in (*resting, *(pending if triggers else ())) if o.coin in coins]
        return sorted(orders, key=lambda o: (o.timestamp, o.oid), reverse=True)

    def fills(self, user: str, height: int | None = None) -> list[Fill]:
        """``user``'s fills written so far (up to ``height`` if given), oldest first.

        Kept for the named users (:mod:`hlbook.sim.users`) always, for every
        user with ``record_fills``; the last 100,000 per user. Fills of a
        block whose fill stream was skipped (a fault) were never written and
        are not here.
        """
        kept = self._node.fills.get(user.lower(), ())
        return [fill for at, fill in kept if height is None or at <= height]

    async def info(self, request: dict[str, Any], role: str = "node") -> Any:
        """Answer ``request`` as the ``"node"`` or ``"fallback"`` info server would
        (without HTTP; raises :class:`~hlbook.sim.info.InfoError` for a refusal)."""
        return await self._node.answer(Role(role), request)

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
    is returned once the output directories exist and the info servers
    accept connections. When ``blocks`` or ``duration`` is spent the node
    goes quiet but keeps answering on its info servers.
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
                partial(serve_info_api, name="the info server"),
                partial(node.answer, Role.NODE),
                config.info_host,
                config.info_port,
            )
            fallback_port = None
            if config.fallback_port is not None:
                fallback_port = await nursery.start(
                    partial(serve_info_api, name="the fallback info server"),
                    partial(node.answer, Role.FALLBACK),
                    config.info_host,
                    config.fallback_port,
                )
            handle = SimHandle(node, port, nursery.cancel_scope, fallback_port)
            log.info(
                "simulated node (%s, seed %d, %s, %.1f blocks/s, scale %g) writing to %s; "
                "info server at %s%s",
                config.layout.value,
                config.seed,
                ",".join(config.coins),
                config.blocks_per_second,
                config.scale,
                config.node_data,
                handle.info_url,
                f", fallback at {handle.fallback_url}" if fallback_port is not None else "",
            )
            nursery.start_soon(node.run)
            task_status.started(handle)
    finally:
        node.files.close()
