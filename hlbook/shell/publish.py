"""``--publish``: every applied block, and a book snapshot now and then, to NATS JetStream.

:class:`PublishSink` is the :class:`~hlbook.stages.BlockSink` the data path
calls; it hands each block's diffs as soon as they are applied
(:attr:`~hlbook.stages.Stage.DIFFS`) and each complete block
(:attr:`~hlbook.stages.Stage.BLOCK`) to a :class:`~hlbook.relay.Publisher`,
whose bounded buffer and background sender mean a slow or unreachable NATS
never holds up the book task (a full buffer drops blocks: a counted, logged gap
relays repair from the next snapshot).

Snapshots are taken at a block boundary where the books are exactly "after
block ``H``": the diffs *and* the statuses of ``H`` applied and nothing later
(the diff stream may run ahead; then the sink asks the data path to let the
statuses catch up, see :meth:`~hlbook.book.books.Books.request_catch_up`). The book task only
*captures* the books — per price level, the resting order objects and their
sizes, two C-speed passes (``benchmarks/relay_feed.py`` measures it on a
440k-order book) — because orders are replaced, never mutated, except their
``sz``; encoding the ~150 MB ``fileSnapshot`` JSON and compressing it happen
in a worker thread. One is due every ``--publish-snapshot-every`` seconds, at
start-up (relays need one to start) and after every gap or re-bootstrap.
"""

import logging
import operator
import time
from collections.abc import Iterable, Mapping
from itertools import chain
from typing import TYPE_CHECKING, Any

import attrs
import msgspec
import trio

from hlbook.book.resting import Resting, full_order
from hlbook.config import Config
from hlbook.node.formats import Order, encode_snapshot
from hlbook.relay.client import NatsConnection, NatsOptions
from hlbook.relay.names import RelayNames, StreamSettings
from hlbook.relay.publisher import Publisher
from hlbook.stages import Stage

if TYPE_CHECKING:
    from hlbook.book.books import Books
    from hlbook.book.l4 import CoinBook
    from hlbook.model import Block

__all__ = [
    "Captured",
    "PublishSink",
    "capture_books",
    "encode_captured",
    "nats_options",
    "stream_settings",
]

log = logging.getLogger("hlbook.publish")

_SZ = operator.attrgetter("sz")

_Side = tuple[list[int], list[Resting], list[str]]
Captured = list[tuple[str, _Side, _Side]]
"""Books as captured at one height: per coin, bids and asks as (orders best first, sizes)."""

_OIDS = operator.attrgetter("oids")


def nats_options(config: Config, servers: Iterable[str]) -> NatsOptions:
    """The NATS connection options of ``config`` (credentials, TLS) for ``servers``."""
    urls = tuple(url for text in servers for url in text.split(",") if url.strip())
    return NatsOptions(
        servers=tuple(url.strip() for url in urls),
        user=config.nats_user,
        password=config.nats_password,
        token=config.nats_token,
        creds_file=config.nats_creds,
        tls_ca=config.nats_tls_ca,
        tls_cert=config.nats_tls_cert,
        tls_key=config.nats_tls_key,
    )


def stream_settings(config: Config) -> StreamSettings:
    """How ``--publish`` creates the stream and bucket when they do not exist yet."""
    return StreamSettings(
        max_age=config.publish_max_age,
        max_bytes=config.publish_max_bytes,
        replicas=config.publish_replicas,
        # Two primaries' copies of a height arrive within seconds; a short retention caps it.
        duplicate_window=min(StreamSettings().duplicate_window, config.publish_max_age),
    )


def capture_books(books: "Books") -> Captured:
    """The books' resting orders as they are now, cheap enough for the book task.

    Resting records are replaced when they change, except ``sz``, which an update
    sets in place: the sizes are captured beside the records (and the oids, their
    keys). Per side, a few passes that run in C (the levels' oids chained, the
    records looked up, their sizes read): no Python code per level or per order.
    """
    out: Captured = []
    for coin in books.coins():
        book = books.book(coin)
        assert book is not None
        index = book.index.__getitem__
        sides = []
        for side in ("B", "A"):
            oids = list(chain.from_iterable(map(_OIDS, book.levels(side))))
            records = list(map(index, oids))
            sides.append((oids, records, list(map(_SZ, records))))
        out.append((coin, sides[0], sides[1]))
    return out


def encode_captured(height: int, captured: Captured) -> bytes:
    """:func:`capture_books`' books as ``fileSnapshot`` bytes with the height (use a thread)."""

    def side(oids: list[int], records: list[Resting], sizes: list[str]) -> list[tuple[str, Order]]:
        pairs = []
        for oid, record, sz in zip(oids, records, sizes, strict=True):
            order = full_order(oid, record)
            if order.sz != sz:  # updated since the capture
                order = msgspec.structs.replace(order, sz=sz)
            pairs.append((str(order.user), order))
        return pairs

    return encode_snapshot(height, ((coin, side(*b), side(*a)) for coin, b, a in captured))


@attrs.frozen
class _Due:
    """Why a snapshot is wanted (for logs)."""

    reason: str


class PublishSink:
    """Offers each complete block to ``publisher`` and takes snapshots (module docstring)."""

    def __init__(self, publisher: Publisher, every: float) -> None:
        self.publisher = publisher
        self.every = every
        self._due: _Due | None = _Due("start-up")
        self._captured: tuple[int, Captured] | None = None
        self._wake = trio.Event()
        self.snapshots_taken = 0
        self.capture_seconds = 0.0
        """Book-task time spent capturing snapshots (the rest is in a thread)."""

    def snapshot_soon(self, reason: str = "asked for") -> None:
        """Take a snapshot at the next block boundary where it can be taken."""
        if self._due is None:
            self._due = _Due(reason)

    # -- BlockSink -------------------------------------------------------------------------

    def publish(
        self, stage: Stage, block: "Block", books: "Books", touched: Mapping[str, "CoinBook"]
    ) -> None:
        """Offer each block's diffs at :attr:`Stage.DIFFS` and the block at :attr:`Stage.BLOCK`
        (see :meth:`Publisher.publish`); take a snapshot when due and possible.

        A snapshot can be taken after any stage that leaves the books exactly
        after one block (diffs and statuses at the same height ``H``). Every block
        offered so far is then at or below ``H`` (a block is offered once all of
        it is applied), so a relay that resumes after the stream position of the
        blocks offered so far and skips heights up to ``H`` misses nothing.
        """
        publisher = self.publisher
        publisher.publish(stage, block, books, touched)
        if publisher.dropping:
            # A snapshot inside an open gap cannot repair it (relays need one past it),
            # and a big book's capture stalls this task: wait until blocks go out again.
            return
        if self._due is None and publisher.wants_snapshot and not publisher.snapshot_pending:
            self._due = _Due("a gap in what was published")
        if self._due is None:
            return
        if books.height != books.details_height:
            if not books.catch_up_wanted:
                books.request_catch_up()  # the next diffs wait (briefly) for the statuses
            return
        height = books.height
        started = time.perf_counter()
        captured = capture_books(books)
        self.capture_seconds += time.perf_counter() - started
        log.debug("snapshot at %d captured (%s)", height, self._due.reason)
        self._due = None
        # Its stream position is fixed now, after the blocks offered so far; the bytes follow.
        self.publisher.put_snapshot(height, None, time=books.time or None)
        self._captured = (height, captured)
        self._wake.set()

    def resync(self, books: "Books", coins: Iterable[str] | None = None) -> None:
        """Books rebuilt: the chain restarts at their height, and relays need a snapshot."""
        self.publisher.resync(books, coins)
        if coins is None:
            self._due = _Due("books re-bootstrapped")

    def notify(self, text: str) -> None:
        """Relays learn about trouble from the chain itself."""

    # -- the task ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Encode captured snapshots (in a thread) and mark one due every ``every`` seconds."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._clock)
            task_status.started()
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                job, self._captured = self._captured, None
                if job is None:
                    continue
                height, captured = job
                data = await trio.to_thread.run_sync(encode_captured, height, captured)
                del captured
                if self.publisher.snapshot_data(height, data):
                    self.snapshots_taken += 1

    async def _clock(self) -> None:
        while True:
            await trio.sleep(self.every)
            if self._due is None:
                self._due = _Due("periodic")

    def health(self) -> dict[str, Any]:
        """Counters for ``/health``: the publisher's and the snapshots'."""
        stats = attrs.asdict(self.publisher.stats)
        stats["snapshots_captured"] = self.snapshots_taken
        stats["snapshot_capture_seconds"] = round(self.capture_seconds, 6)
        stats["snapshot_due"] = self._due is not None
        return stats


def connection_health(connection: NatsConnection) -> dict[str, Any]:
    """A NATS connection's state and counters (for ``/health``)."""
    stats = attrs.asdict(connection.stats)
    stats["connected"] = connection.connected
    return stats


def names_of(config: Config) -> RelayNames:
    """The feed's NATS names (``--nats-prefix``)."""
    return RelayNames(config.nats_prefix)
