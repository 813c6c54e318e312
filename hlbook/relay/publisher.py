"""The primary's side: every applied block to the stream, snapshots to the object store.

:class:`Publisher` is a :class:`~hlbook.stages.BlockSink`: at
:attr:`~hlbook.stages.Stage.BLOCK` it :meth:`~Publisher.offer`\\ s the block.
Before that, at :attr:`~hlbook.stages.Stage.DIFFS`, it offers the block's
diffs alone (:meth:`~Publisher.offer_diffs`, ``early_diffs``): a relay
publishes ``l2Book`` and ``bbo`` from them without waiting for the block's
statuses, which are 5–10x larger and often later. They are a copy: the whole
block still carries them, so they skip the buffer and its order — handed
straight to the asyncio loop as a plain NATS publish on the stream's subject
(JetStream stores and de-duplicates it all the same), with no acknowledgement
to wait for and no retry — and one
that cannot be sent (no connection, blocks being dropped, too many in flight)
is dropped and counted without a gap.
``offer`` is synchronous and never blocks: it encodes the block into a frame
(:func:`~hlbook.relay.codec.encode_block`, ~1 ms of CPU for a mainnet block,
see ``benchmarks/relay_codec.py``) and appends it to the bounded
:class:`~hlbook.relay.chain.OutBuffer` (by count and bytes). Encoding at once
keeps what waits small (a frame is ~15 KB, a decoded block ~0.8 MB) and makes
the bound exact. Two Trio tasks (:meth:`Publisher.run`) do the rest:

* the sender publishes the buffer's oldest blocks with ``Nats-Msg-Id`` = height,
  each acknowledged by JetStream before the next is sent, so the stream order
  is the offer order; a run of up to ``batch`` blocks is one call through the
  bridge (a busy book task would otherwise delay every acknowledgement by a
  Trio wake-up: under load that capped publishing below the block rate). On
  any failure it keeps the block and retries (the message id makes a retry of
  a block that did land a duplicate the server drops);
* the snapshot task stores :meth:`~Publisher.put_snapshot`'s snapshots.

While NATS is slow or down the buffer fills; beyond its bounds blocks are
dropped, counted (``stats.dropped``, ``stats.gaps``) and logged. The next block
published carries the dropped height as its ``prev``, so relays see the gap and
repair it from a snapshot; :attr:`Publisher.wants_snapshot` tells the caller to
store one soon.

A snapshot's stream sequence (``Hlbook-Seq``) is the acknowledgement of the
last block at or below its height: the snapshot waits until every block
offered before it is acknowledged or dropped. A publisher that has had no
block acknowledged yet (a primary just started, on a stream that already holds
an older chain) does not know that position: its first snapshot then waits
for the first block after it, and stands just before that block's message
(sequence 0 would make every relay that bootstraps from it read the whole
stream again). Only the newest pending snapshot is kept (an older one not yet
stored is replaced and counted).
"""

import contextlib
import io
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import attrs
import nats.errors
import nats.js.errors
import trio
from nats.aio.client import Client
from nats.js import JetStreamContext, api

from hlbook.errors import SnapshotError
from hlbook.model import Block
from hlbook.relay.bridge import BridgeClosedError
from hlbook.relay.chain import OutBuffer, Outgoing
from hlbook.relay.client import NatsConnection, NatsOptions, NatsUnavailableError, open_nats
from hlbook.relay.codec import Codec, encode_block, encode_diffs, encode_snapshot_frame
from hlbook.relay.names import (
    HEIGHT_HEADER,
    PREV_HEADER,
    SEQ_HEADER,
    TIME_HEADER,
    RelayNames,
    StreamSettings,
    diffs_message_id,
)
from hlbook.stages import Stage

if TYPE_CHECKING:
    from hlbook.book.books import Books
    from hlbook.book.l4 import CoinBook

__all__ = ["Publisher", "PublisherStats", "ensure_stream", "open_publisher"]

log = logging.getLogger(__name__)

_RETRYABLE = (nats.errors.Error, TimeoutError, OSError, NatsUnavailableError, BridgeClosedError)


@attrs.define
class PublisherStats:
    """What a :class:`Publisher` did (all counters since it was made)."""

    offered: int = 0
    published: int = 0
    """Blocks acknowledged by JetStream (duplicates included)."""
    duplicates: int = 0
    """Acknowledged as duplicates (another primary, or a retry, got there first)."""
    dropped: int = 0
    gaps: int = 0
    retries: int = 0
    too_large: int = 0
    """Blocks the server refused as larger than its max_payload (dropped, in ``dropped``)."""
    buffered: int = 0
    buffered_bytes: int = 0
    published_bytes: int = 0
    diffs_published: int = 0
    """Early-diffs messages sent (see :meth:`Publisher.offer_diffs`)."""
    diffs_bytes: int = 0
    diffs_dropped: int = 0
    """Early-diffs messages not sent (see :meth:`Publisher.offer_diffs`): no gap."""
    last_height: int | None = None
    last_seq: int | None = None
    snapshots: int = 0
    snapshots_replaced: int = 0
    snapshot_height: int | None = None
    last_error: str | None = None


class _Partial(Exception):
    """A run of publishes failed after ``acks`` succeeded (asyncio side -> Trio side)."""

    def __init__(self, acks: list[api.PubAck], error: Exception) -> None:
        super().__init__(str(error))
        self.acks = acks
        self.error = error


@attrs.define
class _SnapshotJob:
    height: int
    data: bytes | None  # None: still being encoded (see Publisher.snapshot_data)
    index: int  # the last offer it follows
    seq: int = 0
    placed: bool = False  # seq is known (see the module docstring)
    wants: int = 0  # the publisher's want counter when it was put
    ready: bool = False
    time: int | None = None  # the block time at its height (ms)


async def ensure_stream(js: JetStreamContext, names: RelayNames, settings: StreamSettings) -> int:
    """Create the block stream and the snapshot bucket unless they exist (asyncio side);
    the stream's last sequence (0: empty)."""
    last_seq = 0
    try:
        last_seq = (await js.stream_info(names.stream)).state.last_seq
    except nats.js.errors.NotFoundError:
        storage = api.StorageType.MEMORY if settings.memory else api.StorageType.FILE
        await js.add_stream(
            api.StreamConfig(
                name=names.stream,
                description="hlbook: one message per block (see hlbook.relay)",
                subjects=[names.subject],
                retention=api.RetentionPolicy.LIMITS,
                discard=api.DiscardPolicy.OLD,
                max_age=settings.max_age,
                max_bytes=settings.max_bytes,
                max_msgs=settings.max_msgs,
                duplicate_window=settings.duplicate_window,
                storage=storage,
                num_replicas=settings.replicas,
                allow_direct=True,
            )
        )
        log.info("NATS: created stream %s on %s", names.stream, names.subject)
    try:
        await js.object_store(names.bucket)
    except nats.js.errors.BucketNotFoundError:
        storage = api.StorageType.MEMORY if settings.memory else api.StorageType.FILE
        await js.create_object_store(
            names.bucket,
            api.ObjectStoreConfig(
                description="hlbook: book snapshots (see hlbook.relay)",
                storage=storage,
                replicas=settings.replicas,
            ),
        )
        log.info("NATS: created object store %s", names.bucket)
    return last_seq


class Publisher:
    """Publishes blocks and snapshots of one feed; a :class:`~hlbook.stages.BlockSink`."""

    def __init__(
        self,
        connection: NatsConnection,
        names: RelayNames | None = None,
        *,
        settings: StreamSettings | None = None,
        max_blocks: int = 4096,
        max_bytes: int = 256 * 1024 * 1024,
        codec: Codec = Codec.ZSTD,
        level: int | None = None,
        start_height: int | None = None,
        batch: int = 64,
        early_diffs: bool = True,
        max_diffs_in_flight: int = 16,
    ) -> None:
        self.connection = connection
        self.early_diffs = early_diffs
        """Offer each block's diffs ahead of it at :attr:`Stage.DIFFS` (:meth:`offer_diffs`)."""
        self.max_diffs_in_flight = max_diffs_in_flight
        """Early diffs handed to the asyncio loop and not written yet, at most (beyond,
        they are dropped: the loop is stuck)."""
        self._diffs_in_flight = 0
        self.batch = batch
        """At most this many blocks per bridge call (each still acknowledged in turn)."""
        self.names = names or RelayNames()
        self.settings = settings or StreamSettings()
        self.codec = codec
        self.level = level
        self._out = OutBuffer(max_blocks, max_bytes)
        self._prev = start_height
        self._diffs_prev = start_height
        self._next_index = 0
        self._last_ack_seq = 0
        self._stream_empty = False  # seen empty before any block of ours was acknowledged
        self._snapshot: _SnapshotJob | None = None
        # Each gap or chain reset adds a want; a stored snapshot satisfies those before it.
        self._wants = 0
        self._satisfied = 0
        self._wake_sender = trio.Event()
        self._wake_snapshot = trio.Event()
        self._progress = trio.Event()
        self._ensured_epoch = -1
        self._stats = PublisherStats()
        self._error_logged = False

    # -- the synchronous side (the book task) ----------------------------------------

    def offer(self, block: Block) -> bool:
        """Encode ``block`` and queue it for publishing; never blocks.

        Returns ``False`` if the buffer is full: the block is dropped, counted
        and (at the start of each gap) logged.
        """
        index = self._next_index
        self._next_index += 1
        self._stats.offered += 1
        prev, self._prev = self._prev, block.height
        data = encode_block(block, prev=prev, codec=self.codec, level=self.level)
        was_dropping = self._out.dropping
        if not self._out.push(Outgoing(index, block.height, prev, data)):
            self._dropped(block.height, was_dropping)
            return False
        if was_dropping:
            log.warning(
                "NATS publish: buffering again from height %d (%d blocks dropped so far)",
                block.height,
                self._out.dropped,
            )
        self._wake_sender.set()
        return True

    def offer_diffs(self, block: Block) -> bool:
        """Send ``block``'s diffs alone, ahead of the block; never blocks.

        Call it when the diffs are final, before :meth:`offer` of the same
        block. They go straight to the asyncio loop, not through the buffer,
        as a plain publish: the block follows with them anyway, so they need no
        order with the blocks, no acknowledgement (a second wake-up of the NATS
        thread per block, in the middle of the book task's work on the block's
        statuses), no retry and no bound but :attr:`max_diffs_in_flight`.
        Returns ``False`` when they are not sent: no connection (or none the
        stream was made sure of yet), blocks being dropped, or too many in
        flight. Counted in ``diffs_dropped``, with those nats-py refuses.
        """
        prev, self._diffs_prev = self._diffs_prev, block.height
        if (
            self._out.dropping
            or self._diffs_in_flight >= self.max_diffs_in_flight
            or self._ensured_epoch != self.connection.epoch
        ):
            self._stats.diffs_dropped += 1
            return False
        data = encode_diffs(block, prev=prev, codec=self.codec, level=self.level)
        headers = {"Nats-Msg-Id": diffs_message_id(block.height), PREV_HEADER: str(prev or 0)}
        subject = self.names.subject
        token = trio.lowlevel.current_trio_token()

        async def _send(nc: Client, _js: JetStreamContext) -> None:
            sent = False
            try:
                await nc.publish(subject, data, headers=headers)
                sent = True
            finally:
                with contextlib.suppress(trio.RunFinishedError):
                    token.run_sync_soon(self._diffs_settled, sent, len(data))

        if not self.connection.spawn(_send):
            self._stats.diffs_dropped += 1
            return False
        self._diffs_in_flight += 1
        return True

    def _diffs_settled(self, sent: bool, size: int) -> None:
        """An early-diffs message was handed to the connection (``sent``) or refused."""
        self._diffs_in_flight -= 1
        if sent:
            self._stats.diffs_published += 1
            self._stats.diffs_bytes += size
        else:
            self._stats.diffs_dropped += 1
        self._progressed()

    def reset_chain(self, height: int | None) -> None:
        """The books were rebuilt at ``height`` (``None``: unknown): the chain restarts there."""
        self._prev = height
        self._diffs_prev = height
        self._wants += 1

    def put_snapshot(self, height: int, data: bytes | None, *, time: int | None = None) -> bool:
        """Store ``data`` (``fileSnapshot`` bytes with height) as the snapshot at ``height``.

        Call it with the books exactly after block ``height`` and no block above
        ``height`` offered yet (blocks at or below it may still follow: relays
        skip them): the snapshot's stream position is that of the blocks offered
        so far. ``data`` may be ``None`` when the bytes are still being encoded
        elsewhere: hand them over with :meth:`snapshot_data` (the position is
        fixed now). ``time`` is the block time at ``height`` (ms), stored with it.
        Never blocks: the snapshot is stored in the background once the blocks
        offered before it are acknowledged. Returns ``False`` if it replaced an
        older snapshot still waiting.
        """
        replaced = self._snapshot is not None
        if replaced:
            self._stats.snapshots_replaced += 1
        self._snapshot = _SnapshotJob(
            height,
            data,
            self._next_index - 1,
            self._last_ack_seq,
            placed=self._last_ack_seq > 0 or self._stream_empty,
            wants=self._wants,
            time=time,
        )
        self._check_snapshot_ready()
        self._wake_snapshot.set()
        return not replaced

    def snapshot_data(self, height: int, data: bytes) -> bool:
        """The bytes of the snapshot :meth:`put_snapshot` announced at ``height`` without them.

        Returns ``False`` (and drops ``data``) if that snapshot was replaced meanwhile.
        """
        job = self._snapshot
        if job is None or job.height != height or job.data is not None:
            return False
        job.data = data
        self._wake_snapshot.set()
        return True

    @property
    def snapshot_pending(self) -> bool:
        """True while a snapshot put is not stored yet."""
        return self._snapshot is not None

    @property
    def dropping(self) -> bool:
        """True while blocks are being dropped (the buffer is full): a gap is open."""
        return self._out.dropping

    @property
    def wants_snapshot(self) -> bool:
        """True after a gap (or a chain reset) until a snapshot after it is stored."""
        return self._wants > self._satisfied

    @property
    def stats(self) -> PublisherStats:
        """Counters (a fresh copy with the buffer's current size)."""
        self._stats.buffered = len(self._out)
        self._stats.buffered_bytes = self._out.bytes
        return attrs.evolve(self._stats)

    # -- BlockSink --------------------------------------------------------------------

    def publish(
        self, stage: Stage, block: Block, books: "Books", touched: Mapping[str, "CoinBook"]
    ) -> None:
        """Offer each block's diffs (:attr:`Stage.DIFFS`) and the block once complete."""
        if stage is Stage.BLOCK:
            self.offer(block)
        elif stage is Stage.DIFFS and self.early_diffs:
            self.offer_diffs(block)

    def resync(self, books: "Books", coins: Iterable[str] | None = None) -> None:
        """A re-bootstrap restarts the chain at the books' height (relays re-bootstrap too)."""
        if coins is None:
            self.reset_chain(books.height)

    def notify(self, text: str) -> None:
        """Nothing to do: relays learn about trouble from the chain itself."""

    # -- bookkeeping --------------------------------------------------------------------

    def _settled_index(self) -> int:
        head = self._out.head()
        if head is not None:
            return head.index - 1
        return self._next_index - 1

    def _check_snapshot_ready(self) -> None:
        job = self._snapshot
        if job is not None and not job.ready and job.placed and self._settled_index() >= job.index:
            job.ready = True
            self._wake_snapshot.set()

    def _dropped(self, height: int, was_dropping: bool) -> None:
        """Account for a dropped block (the buffer already counted it)."""
        self._stats.dropped = self._out.dropped
        self._stats.gaps = self._out.gaps
        self._wants += 1
        if not was_dropping:
            log.warning(
                "NATS publish: the buffer is full (%d blocks, %.1f MB): dropping blocks from"
                " height %d (gap #%d); relays repair it from the next snapshot",
                len(self._out),
                self._out.bytes / 1e6,
                height,
                self._out.gaps,
            )
        self._progressed()

    def _progressed(self) -> None:
        self._check_snapshot_ready()
        self._progress.set()
        self._progress = trio.Event()

    async def flush(self) -> None:
        """Wait until every block offered so far is acknowledged or dropped (early diffs too)."""
        target = self._next_index - 1
        while self._settled_index() < target or self._diffs_in_flight:
            await self._progress.wait()

    async def flush_snapshots(self) -> None:
        """Wait until no snapshot is waiting to be stored."""
        while self._snapshot is not None:
            await self._progress.wait()

    # -- the Trio tasks -------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Publish and store snapshots until cancelled (started at once)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._sender)
            nursery.start_soon(self._snapshotter)
            nursery.start_soon(self._ensurer)
            task_status.started()

    async def ready(self) -> None:
        """Wait until connected with the stream made sure of (early diffs are sent from then)."""
        while not (self.connection.connected and self._ensured_epoch == self.connection.epoch):
            await self._progress.wait()

    async def _ensurer(self) -> None:
        """Make sure of the stream on every (re)connection, before any block needs it."""
        delay = 0.05
        while True:
            await self.connection.wait_connected()
            if self._ensured_epoch == self.connection.epoch:
                await trio.sleep(0.25)  # an epoch check: cheap, and reconnections are rare
                continue
            try:
                await self._ensure()
            except _RETRYABLE as exc:
                self._failed("creating the stream", exc)
                delay = await self._backoff(delay)
                continue
            delay = 0.05

    async def _ensure(self) -> None:
        epoch = self.connection.epoch
        if self._ensured_epoch == epoch:
            return
        names, settings = self.names, self.settings

        async def _setup(_nc: Client, js: JetStreamContext) -> int:
            return await ensure_stream(js, names, settings)

        last_seq = await self.connection.call(_setup)
        self._ensured_epoch = epoch
        if last_seq == 0 and self._last_ack_seq == 0:
            # An empty stream: a snapshot before any block stands at its start.
            self._stream_empty = True
            job = self._snapshot
            if job is not None and not job.placed:
                job.placed = True
        self._progressed()

    def _failed(self, what: str, exc: BaseException) -> None:
        text = f"{type(exc).__name__}: {exc}"
        self._stats.last_error = text
        if not self._error_logged:
            log.warning("NATS publish: %s failed (%s); retrying", what, text)
            self._error_logged = True

    async def _backoff(self, delay: float) -> float:
        if not self.connection.connected:
            await self.connection.wait_connected()
            return 0.05
        await trio.sleep(delay)
        return min(delay * 2, 2.0)

    async def _publish(self, items: list[Outgoing]) -> list[api.PubAck]:
        """Publish ``items`` one after the other, each acknowledged before the next.

        One call through the bridge for the whole run: the acknowledgements are
        awaited on the asyncio side, so a busy Trio thread costs one wake-up per
        run instead of one per block (a backlog drains at JetStream's speed). The
        first failure stops the run: the acknowledgements before it are handed
        back with it (:class:`_Partial`), so the stream order stays the offer order.
        """
        subject, stream = self.names.subject, self.names.stream

        async def _call(_nc: Client, js: JetStreamContext) -> list[api.PubAck]:
            acks: list[api.PubAck] = []
            for item in items:
                headers = {"Nats-Msg-Id": str(item.height), PREV_HEADER: str(item.prev or 0)}
                try:
                    acks.append(
                        await js.publish(subject, item.data, stream=stream, headers=headers)
                    )
                except Exception as exc:
                    if not acks:
                        raise
                    raise _Partial(acks, exc) from exc
            return acks

        try:
            return await self.connection.call(_call)
        except _Partial as partial:
            for item, ack in zip(items, partial.acks, strict=False):
                self._acknowledged(item, ack)
            raise partial.error from None

    def _acknowledged(self, item: Outgoing, ack: api.PubAck) -> None:
        """``item`` (the buffer's head) is in the stream."""
        if self._error_logged:
            log.info("NATS publish: publishing again from height %d", item.height)
            self._error_logged = False
        self._out.pop()
        self._last_ack_seq = ack.seq
        job = self._snapshot
        if job is not None and not job.ready:
            if item.index <= job.index:
                job.seq, job.placed = ack.seq, True
            elif not job.placed:
                # The first block after it, none before it acknowledged: what precedes
                # this message is at or below the snapshot's height (or a chain that
                # this primary does not continue), so a relay resumes right here.
                job.seq, job.placed = ack.seq - 1, True
        stats = self._stats
        stats.published += 1
        stats.published_bytes += len(item.data)
        stats.duplicates += bool(ack.duplicate)
        stats.last_height = item.height
        stats.last_seq = ack.seq
        self._progressed()

    async def _sender(self) -> None:
        delay = 0.05
        while True:
            items = self._out.peek(self.batch)
            if not items:
                await self._wake_sender.wait()
                self._wake_sender = trio.Event()
                continue
            if not self.connection.connected:
                await self.connection.wait_connected()
            try:
                await self._ensure()
                acks = await self._publish(items)
            except nats.errors.MaxPayloadError as exc:
                item = self._out.pop()  # the block that failed: the acknowledged ones are gone
                self._out.dropped += 1  # a gap of its own, whatever the buffer is doing
                self._out.gaps += 1
                self._stats.too_large += 1
                self._stats.dropped = self._out.dropped
                self._stats.gaps = self._out.gaps
                self._wants += 1
                log.error(
                    "NATS publish: block %d is %d bytes, over the server's max_payload (%s):"
                    " dropped; relays repair it from the next snapshot",
                    item.height,
                    len(item.data),
                    exc,
                )
                self._progressed()
                continue
            except nats.js.errors.NoStreamResponseError as exc:
                self._ensured_epoch = -1  # the stream is gone (a new server?): create it again
                self._stats.retries += 1
                self._failed(f"publishing block {self._head_height()}", exc)
                delay = await self._backoff(delay)
                continue
            except _RETRYABLE as exc:
                self._stats.retries += 1
                self._failed(f"publishing block {self._head_height()}", exc)
                delay = await self._backoff(delay)
                continue
            delay = 0.05
            for item, ack in zip(items, acks, strict=True):
                self._acknowledged(item, ack)

    def _head_height(self) -> int | None:
        head = self._out.head()
        return head.height if head is not None else None

    async def _snapshotter(self) -> None:
        while True:
            job = self._snapshot
            if job is None or not job.ready or job.data is None:
                await self._wake_snapshot.wait()
                self._wake_snapshot = trio.Event()
                continue
            try:
                frame = await trio.to_thread.run_sync(self._encode_snapshot, job)
            except SnapshotError as exc:
                log.error("NATS: snapshot at height %d not stored: %s", job.height, exc)
                if self._snapshot is job:
                    self._snapshot = None
                continue
            if await self._store_with_retries(job, frame):
                self._satisfied = max(self._satisfied, job.wants)
                self._stats.snapshots += 1
                self._stats.snapshot_height = job.height
                log.info(
                    "NATS: stored snapshot at height %d (%.1f MB, stream seq %d)",
                    job.height,
                    len(frame) / 1e6,
                    job.seq,
                )
            if self._snapshot is job:
                self._snapshot = None
            self._progressed()

    def _encode_snapshot(self, job: _SnapshotJob) -> bytes:
        assert job.data is not None
        return encode_snapshot_frame(job.height, job.data, codec=self.codec, level=self.level)

    async def _store_with_retries(self, job: _SnapshotJob, frame: bytes) -> bool:
        """Store until it works; ``False`` if a newer snapshot replaced ``job`` meanwhile."""
        delay = 0.2
        while True:
            if not self.connection.connected:
                await self.connection.wait_connected()
            try:
                await self._ensure()
                await self._store(job, frame)
            except _RETRYABLE as exc:
                self._failed(f"storing the snapshot at {job.height}", exc)
                delay = await self._backoff(delay)
                if self._snapshot is not job:
                    return False
                continue
            return True

    async def _store(self, job: _SnapshotJob, frame: bytes) -> None:
        names, settings = self.names, self.settings
        name = names.snapshot_object(job.height)
        headers = {HEIGHT_HEADER: [str(job.height)], SEQ_HEADER: [str(job.seq)]}
        if job.time is not None:
            headers[TIME_HEADER] = [str(job.time)]
        meta = api.ObjectMeta(
            name=name,
            description=f"hlbook book snapshot at height {job.height} (stream seq {job.seq})",
            headers=headers,
            options=api.ObjectMetaOptions(max_chunk_size=settings.chunk_size),
        )

        async def _put(_nc: Client, js: JetStreamContext) -> None:
            store = await js.object_store(names.bucket)
            await store.put(name, io.BytesIO(frame), meta=meta)
            # Keep the newest few: a relay reading the newest is never raced by a delete.
            try:
                infos = await store.list(ignore_deletes=True)
            except nats.js.errors.NotFoundError:
                return
            heights = sorted(
                (h, info.name)
                for info in infos
                if (h := names.snapshot_height(info.name)) is not None and not info.deleted
            )
            for _h, old in heights[: -settings.keep_snapshots]:
                await store.delete(old)

        await self.connection.call(_put)


@asynccontextmanager
async def open_publisher(
    options: NatsOptions, names: RelayNames | None = None, **kwargs: object
) -> AsyncIterator[Publisher]:
    """Connect and run a :class:`Publisher` for the duration of the block (returns at once).

    ``kwargs`` go to :class:`Publisher`. On exit, whatever is still buffered is
    not waited for (call :meth:`Publisher.flush` first for that).
    """
    async with open_nats(options) as connection, trio.open_nursery() as nursery:
        publisher = Publisher(connection, names, **kwargs)  # type: ignore[arg-type]
        await nursery.start(publisher.run)
        try:
            yield publisher
        finally:
            nursery.cancel_scope.cancel()
