"""``--source nats://…``: a relay's data path, blocks from NATS JetStream instead of node files.

:class:`RelayPath` stands where :class:`~hlbook.shell.ingest.DataPath` stands
for a primary and offers the same face to :func:`hlbook.serve` (books,
status, readiness, waiting for heights, counters), so every channel, info
type, the page and the metrics work unchanged. It drives the very same
:class:`~hlbook.supervisor.Supervisor` with an
:class:`~hlbook.source.OrderedBlocks` source:

* a :class:`~hlbook.relay.Consumer` task follows the stream: each
  :class:`~hlbook.relay.Bootstrap` is loaded into books in a worker thread
  (the old books keep serving meanwhile), each block and gap passes through;
* the book task attaches a fresh ``OrderedBlocks`` and hands the supervisor
  the loaded books at every bootstrap (subscribers get fresh snapshots, as
  after a primary's resync), then feeds it each block with its ``prev`` link,
  so streaming-layout heights that skip empty blocks are no gap;
* each block's early diffs (:class:`~hlbook.relay.DiffsMessage`, sent by the
  primary as soon as it applied them) go to the source first: ``l2Book``,
  ``bbo`` and mids are published from them, the rest when the whole block
  arrives;
* a :class:`~hlbook.relay.Gap` (retention removed blocks the relay still
  needed, a primary dropped some) makes the supervisor resync; the consumer
  is already waiting for a snapshot past the gap. If the supervisor itself
  cannot follow (a block that does not fit the books), the consumer is asked
  to bootstrap again from a snapshot past the books' height.

After a disconnect the consumer resumes after the last block it delivered;
nothing is applied twice and nothing is skipped. Validation against a node is
off (there is no node); the primary validates.
"""

import logging
import math
import time
from typing import Any

import attrs
import trio

from hlbook.book.books import Books
from hlbook.config import Config
from hlbook.errors import HlbookError
from hlbook.node.formats import Layout
from hlbook.relay.client import NatsConnection, NatsOptions, open_nats
from hlbook.relay.consumer import (
    BlockMessage,
    Bootstrap,
    Consumer,
    ConsumerStats,
    DiffsMessage,
    Gap,
)
from hlbook.relay.names import RelayNames
from hlbook.shell.path import SupervisedPath
from hlbook.shell.snapshots import load_in_thread
from hlbook.source import OrderedBlocks
from hlbook.stages import BlockSink
from hlbook.supervisor import Action, Settings, Supervisor, WantSnapshot

__all__ = ["RelayPath"]

log = logging.getLogger("hlbook.relay")


@attrs.frozen(eq=False)
class _Loaded:
    books: Books
    bootstrap: Bootstrap


_Event = _Loaded | BlockMessage | DiffsMessage | Gap


class RelayPath(SupervisedPath):
    """Owns the supervisor (and so the books) and the NATS consumer that feeds it."""

    def __init__(
        self,
        config: Config,
        sink: BlockSink,
        options: NatsOptions,
        names: RelayNames | None = None,
        *,
        consumer_settings: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.options = options
        self.names = names or RelayNames(config.nats_prefix)
        settings = attrs.evolve(
            Settings.from_config(config),
            validate_every=0.0,
            layout_auto=False,
            source_name="the NATS stream",
        )
        super().__init__(Supervisor(sink, settings))
        self.tailers: dict[Any, Any] = {}
        """No node files (health lists none)."""
        self.connection: NatsConnection | None = None
        self.consumer: Consumer | None = None
        self.loads = 0
        self.load_failures = 0
        self._consumer_settings = consumer_settings or {}

    # -- reading (the same face as DataPath) ----------------------------------------------

    @property
    def layout(self) -> Layout | None:
        """No node layout: blocks come whole from the stream."""
        return None

    def joiner_stats(self) -> dict[str, object] | None:
        """No joiner (health shows ``null``)."""
        return None

    def relay_health(self, *, public: bool) -> dict[str, Any]:
        """The consumer's position and counters and the connection's, for ``/health``."""
        consumer, connection = self.consumer, self.connection
        out: dict[str, Any] = {
            "connected": connection.connected if connection is not None else False,
            "height": None,
            "stream_seq": None,
            "snapshot_loads": self.loads,
            "snapshot_load_failures": self.load_failures,
        }
        out.update(attrs.asdict(consumer.stats if consumer is not None else ConsumerStats()))
        if consumer is not None and consumer.position is not None:
            out["height"], out["stream_seq"] = consumer.position
        if connection is not None:
            stats = attrs.asdict(connection.stats)
            out["connects"] = stats["connects"]
            out["disconnects"] = stats["disconnects"]
            out["reconnects"] = stats["reconnects"]
            out["connection_errors"] = stats["errors"]
            if not public:
                out["connection_last_error"] = stats["last_error"]
        if public:
            out.pop("last_error", None)
        else:
            out["servers"] = self.options.describe()
            out["stream"] = self.names.stream
            out["bucket"] = self.names.bucket
        return out

    # -- running ------------------------------------------------------------------------

    async def run(self) -> None:
        """Follow the stream until cancelled."""
        self.supervisor.waiting(
            f"waiting for a snapshot in {self.names.bucket} at {self.options.describe()}"
        )
        async with open_nats(self.options) as connection:
            self.connection = connection
            settings = {
                "fetch_wait": 1.0,
                "snapshot_poll": 0.5,
                "diffs": True,
                **self._consumer_settings,
            }
            consumer = Consumer(connection, self.names, **settings)
            self.consumer = consumer
            send, receive = trio.open_memory_channel[_Event](16)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._follow, consumer, send)
                await self._book_task(consumer, receive)

    async def _follow(self, consumer: Consumer, send: trio.MemorySendChannel[_Event]) -> None:
        async with send:
            async for event in consumer:
                if isinstance(event, Bootstrap):
                    try:
                        books = await load_in_thread(event.snapshot, self.config)
                    except HlbookError as exc:
                        # Not usable here (e.g. two orders with one oid): wait for a newer one.
                        self.load_failures += 1
                        log.error("snapshot %s cannot be loaded: %s", event.name, exc)
                        consumer.request_bootstrap(event.height + 1)
                        continue
                    if event.time is not None:
                        # Its block's time: the supervisor never dates the books earlier.
                        books.newest_timestamp = max(books.newest_timestamp, event.time)
                    self.loads += 1
                    await send.send(_Loaded(books, event))
                else:
                    await send.send(event)

    async def _book_task(
        self, consumer: Consumer, receive: trio.MemoryReceiveChannel[_Event]
    ) -> None:
        sup = self.supervisor
        stats = sup.stats
        source: OrderedBlocks | None = None
        actions: list[Action] = []
        async with receive:
            while True:
                self._carry_out(actions, consumer)
                self._books_moved()
                if sup.backlog:
                    actions = await self.work_step()
                    continue
                deadline = sup.next_deadline()
                item: _Event | None = None
                with trio.move_on_at(math.inf if deadline is None else deadline):
                    item = await receive.receive()
                now = trio.current_time()
                started = time.perf_counter()
                actions = []
                if isinstance(item, _Loaded):
                    source = OrderedBlocks()
                    wants = sup.attach(source, now, contiguous=False)
                    generation = next(a.generation for a in wants if isinstance(a, WantSnapshot))
                    actions = sup.snapshot_loaded(item.books, item.bootstrap.name, generation, now)
                elif isinstance(item, BlockMessage):
                    if source is not None:
                        actions = sup.receive(source.block(item.block, prev=item.prev), now)
                elif isinstance(item, DiffsMessage):
                    if source is not None:
                        actions = sup.receive(source.diffs(item.block, prev=item.prev), now)
                elif isinstance(item, Gap):
                    # The consumer already waits for a snapshot past the gap.
                    stats.gaps += 1
                    actions = [a for a in sup.fault(item.reason, now) if not _want(a)]
                actions += sup.tick(now)
                stats.book_seconds += time.perf_counter() - started

    def _carry_out(self, actions: list[Action], consumer: Consumer) -> None:
        for action in actions:
            if isinstance(action, WantSnapshot):
                books = self.books
                need = books.height + 1 if books is not None else 0
                log.warning("%s: bootstrapping again from NATS", action.reason)
                consumer.request_bootstrap(need)
            # Validation and restarts are a node's business: a relay has neither.


def _want(action: Action) -> bool:
    return isinstance(action, WantSnapshot)
