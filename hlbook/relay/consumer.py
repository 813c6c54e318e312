"""The relay's side: bootstrap from the newest snapshot, then every block after it, in order.

:class:`Consumer` is an async iterator of :data:`RelayEvent`\\ s:

* :class:`Bootstrap` — load these books (``fileSnapshot`` bytes at ``height``);
  always the first event, and the first after every :class:`Gap`;
* :class:`BlockMessage` — the next block, after the last one delivered
  (duplicates and heights at or below it are skipped);
* :class:`DiffsMessage` — with ``diffs=True`` only: a block's diffs sent
  ahead of it by the primary (see :mod:`hlbook.relay.names`); the block
  itself still follows as a :class:`BlockMessage`. Without ``diffs`` they are
  passed over;
* :class:`Gap` — the stream cannot continue the chain (retention removed blocks
  the consumer still needed, a publisher dropped blocks, an undecodable
  message). The consumer then waits for a snapshot that repairs it (height at
  or above :attr:`GapInfo.need`) and yields its :class:`Bootstrap`: the caller
  just rebuilds its books from it. Never a silent hole.

Block messages are read through an ephemeral JetStream pull consumer
(``ack_policy=none``, in memory, removed by the server after
``inactive_threshold``) created at the stream sequence after the last one seen.
After a disconnect, a server restart or a fetch that finds the consumer gone,
a new one is created from that position, so nothing is lost and nothing is
applied twice. Fetches are bounded (``batch``): while behind, ``min(batch,
pending)`` messages per fetch; once caught up, one at a time, so a new block
is handed over as soon as it arrives (nats-py's multi-message fetch would hold
it until the batch fills or the wait expires).
"""

import io
import logging
from collections import deque
from typing import TypeAlias

import attrs
import nats.errors
import nats.js.errors
import trio
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from hlbook.model import Block
from hlbook.relay.bridge import BridgeClosedError
from hlbook.relay.chain import ChainFollower, GapInfo, Verdict
from hlbook.relay.client import NatsConnection, NatsUnavailableError
from hlbook.relay.codec import (
    FrameError,
    FrameKind,
    decode_block,
    decode_diffs,
    decode_snapshot_frame,
    frame_kind,
    frame_prev,
)
from hlbook.relay.names import HEIGHT_HEADER, SEQ_HEADER, TIME_HEADER, RelayNames, message_height

__all__ = [
    "BlockMessage",
    "Bootstrap",
    "Consumer",
    "ConsumerStats",
    "DiffsMessage",
    "Gap",
    "RelayEvent",
]

log = logging.getLogger(__name__)

_RETRYABLE = (nats.errors.Error, TimeoutError, OSError, NatsUnavailableError, BridgeClosedError)


@attrs.frozen
class Bootstrap:
    """Books to load: the snapshot object ``name`` at ``height`` (blocks resume after ``seq``)."""

    height: int
    seq: int
    snapshot: bytes
    """The node's ``fileSnapshot`` output with the height (decompressed)."""
    name: str
    time: int | None = None
    """The block time at ``height`` (ms), if the publisher stored it."""


@attrs.frozen
class BlockMessage:
    """The next block, at stream sequence ``seq``; ``prev`` is the publisher's chain link."""

    block: Block
    seq: int
    prev: int | None


@attrs.frozen
class DiffsMessage:
    """A block's diffs ahead of it, at stream sequence ``seq`` (``block`` has only diffs).

    ``prev`` is the height of the diffs the publisher sent before these.
    """

    block: Block
    seq: int
    prev: int | None


@attrs.frozen
class Gap:
    """The chain broke (see :class:`~hlbook.relay.chain.GapInfo`); a :class:`Bootstrap` follows."""

    info: GapInfo
    reason: str


RelayEvent: TypeAlias = Bootstrap | BlockMessage | DiffsMessage | Gap


@attrs.define
class ConsumerStats:
    """Counters of a :class:`Consumer`."""

    bootstraps: int = 0
    delivered: int = 0
    diffs_delivered: int = 0
    """Early diffs handed over (``diffs=True``)."""
    diffs_refused: int = 0
    """Early diffs that could not be decoded (their block brings them anyway)."""
    skipped: int = 0
    gaps: int = 0
    subscriptions: int = 0
    fetches: int = 0
    errors: int = 0
    last_error: str | None = None


@attrs.frozen
class _Snapshot:
    name: str
    height: int
    seq: int
    time: int | None = None


class Consumer:
    """Follows one feed from its snapshots and block stream (see the module docstring)."""

    def __init__(
        self,
        connection: NatsConnection,
        names: RelayNames | None = None,
        *,
        batch: int = 256,
        fetch_wait: float = 2.0,
        snapshot_poll: float = 1.0,
        inactive_threshold: float = 60.0,
        diffs: bool = False,
    ) -> None:
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self.connection = connection
        self.names = names or RelayNames()
        self.batch = batch
        self.fetch_wait = fetch_wait
        self.snapshot_poll = snapshot_poll
        self.inactive_threshold = inactive_threshold
        self.diffs = diffs
        """Hand over the early diffs as :class:`DiffsMessage`\\ s (else pass over them)."""
        self.stats = ConsumerStats()
        self._follower: ChainFollower | None = None
        self._need: int | None = 0  # bootstrap first, from any snapshot
        self._pending: deque[Msg] = deque()
        self._behind = 0
        self._sub: JetStreamContext.PullSubscription | None = None
        self._sub_name: str | None = None
        self._sub_epoch = -1
        self._bad_snapshots: set[str] = set()
        self._waiting_logged = False

    @property
    def position(self) -> tuple[int, int] | None:
        """``(height, stream sequence)`` of the last delivered block (or snapshot)."""
        if self._follower is None:
            return None
        return self._follower.height, self._follower.seq

    def request_bootstrap(self, need: int = 0) -> None:
        """Bootstrap again from the newest snapshot at height ``need`` or above.

        For a caller whose books cannot follow the blocks delivered (a block
        that does not fit them): the next event is a :class:`Bootstrap`.
        """
        self._need = need if self._need is None else max(self._need, need)
        self._pending.clear()

    def __aiter__(self) -> "Consumer":
        return self

    async def __anext__(self) -> RelayEvent:
        while True:
            if self._need is not None or self._follower is None:
                return await self._bootstrap(self._need or 0)
            if not self._pending:
                await self._fill()
                continue
            event = self._next_from(self._pending.popleft(), self._follower)
            await trio.lowlevel.checkpoint()
            if event is not None:
                return event

    # -- blocks -----------------------------------------------------------------------

    def _next_from(self, msg: Msg, follower: ChainFollower) -> RelayEvent | None:
        seq = msg.metadata.sequence.stream
        self._behind = msg.metadata.num_pending
        height, prev = _height_and_prev(msg)
        if _is_diffs(msg):
            return self._diffs_from(msg, seq, height, follower)
        before = (follower.height, follower.seq)
        verdict = follower.check(seq, height, prev) if height is not None else Verdict.DELIVER
        if verdict is Verdict.SKIP:
            self.stats.skipped += 1
            return None
        if verdict is Verdict.GAP:
            assert height is not None
            info = follower.gap(seq, height, prev)
            return self._gap(info, "the stream skips blocks")
        try:
            frame = decode_block(msg.data)
            if height is not None and frame.block.height != height:
                raise FrameError(f"message id {height} holds block {frame.block.height}")
        except FrameError as exc:
            follower.height, follower.seq = before
            bad = height if height is not None else follower.height + 1
            # A snapshot at the bad message's height or later skips over it.
            info = GapInfo(after=follower.height, height=bad, prev=prev, seq=seq, need=bad)
            log.error("NATS: undecodable block message at stream seq %d: %s", seq, exc)
            return self._gap(info, f"undecodable block message at stream seq {seq}: {exc}")
        if height is None:  # no usable message id: judge by the decoded block
            verdict = follower.check(seq, frame.block.height, frame.prev)
            if verdict is Verdict.SKIP:
                self.stats.skipped += 1
                return None
            if verdict is Verdict.GAP:
                info = follower.gap(seq, frame.block.height, frame.prev)
                return self._gap(info, "the stream skips blocks")
        self.stats.delivered += 1
        return BlockMessage(frame.block, seq, frame.prev)

    def _diffs_from(
        self, msg: Msg, seq: int, height: int | None, follower: ChainFollower
    ) -> DiffsMessage | None:
        """Early diffs: never part of the chain, so never a gap (their block follows)."""
        if seq <= follower.seq:
            return None  # redelivered after a resume
        follower.seq = seq  # every message up to here is taken care of
        if not self.diffs or (height is not None and height <= follower.height):
            return None
        try:
            frame = decode_diffs(msg.data)
        except FrameError as exc:
            self.stats.diffs_refused += 1
            log.warning("NATS: undecodable early diffs at stream seq %d (ignored): %s", seq, exc)
            return None
        self.stats.diffs_delivered += 1
        return DiffsMessage(frame.block, seq, frame.prev)

    def _gap(self, info: GapInfo, reason: str) -> Gap:
        self.stats.gaps += 1
        self._need = info.need
        self._pending.clear()
        log.warning(
            "NATS: gap after height %d (next message: height %d, prev %s, seq %d): %s;"
            " waiting for a snapshot at height >= %d",
            info.after,
            info.height,
            info.prev,
            info.seq,
            reason,
            info.need,
        )
        return Gap(info, reason)

    async def _fill(self) -> None:
        follower = self._follower
        assert follower is not None
        try:
            if self._sub is None or self._sub_epoch != self.connection.epoch:
                await self._subscribe(follower)
            sub = self._sub
            assert sub is not None
            count = min(self.batch, self._behind) if self._behind > 0 else 1
            wait = self.fetch_wait

            async def _fetch(_nc: Client, _js: JetStreamContext) -> list[Msg]:
                return await sub.fetch(count, timeout=wait)

            self.stats.fetches += 1
            msgs = await self.connection.call(_fetch)
        except nats.errors.TimeoutError:
            self._behind = 0
            await self._check_consumer()
            return
        except NatsUnavailableError:
            self._drop_subscription()
            await self.connection.wait_connected()
            return
        except _RETRYABLE as exc:
            self._failed(exc)
            self._drop_subscription()
            await trio.sleep(min(self.fetch_wait, 0.5))
            return
        self._pending.extend(msgs)

    async def _subscribe(self, follower: ChainFollower) -> None:
        self._drop_subscription()
        names = self.names
        epoch = self.connection.epoch
        inactive = self.inactive_threshold

        async def _create(
            nc: Client, js: JetStreamContext
        ) -> tuple[JetStreamContext.PullSubscription, str, int]:
            info = await js.stream_info(names.stream)
            start = follower.resume_from(info.state.last_seq)
            name = nc._nuid.next().decode()
            config = api.ConsumerConfig(
                name=name,
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=start,
                ack_policy=api.AckPolicy.NONE,
                filter_subject=names.subject,
                inactive_threshold=inactive,
                mem_storage=True,
                num_replicas=1,
            )
            await js.add_consumer(names.stream, config)
            sub = await js.pull_subscribe_bind(consumer=name, stream=names.stream)
            return sub, name, start

        try:
            sub, name, start = await self.connection.call(_create)
        except nats.js.errors.NotFoundError:
            if not self._waiting_logged:
                log.warning("NATS: stream %s does not exist yet; waiting", names.stream)
                self._waiting_logged = True
            raise nats.errors.TimeoutError from None
        self._waiting_logged = False
        self._sub, self._sub_name, self._sub_epoch = sub, name, epoch
        self._behind = 1  # unknown: fetch a batch first
        self.stats.subscriptions += 1
        log.debug("NATS: following %s from stream seq %d", names.stream, start)

    async def _check_consumer(self) -> None:
        """After a quiet fetch: make sure our consumer still exists (a server restart loses it)."""
        name = self._sub_name
        if name is None:
            return
        stream = self.names.stream

        async def _info(_nc: Client, js: JetStreamContext) -> None:
            await js.consumer_info(stream, name)

        try:
            await self.connection.call(_info)
        except nats.js.errors.NotFoundError:
            log.info("NATS: consumer %s is gone; following again from the last block", name)
            self._drop_subscription()
        except _RETRYABLE as exc:
            self._failed(exc)
            self._drop_subscription()

    def _drop_subscription(self) -> None:
        sub, name = self._sub, self._sub_name
        self._sub = None
        self._sub_name = None
        self._pending.clear()
        if sub is None or name is None:
            return
        stream = self.names.stream

        async def _cleanup(_nc: Client, js: JetStreamContext) -> None:
            await sub.unsubscribe()
            await js.delete_consumer(stream, name)

        # Best effort, without waiting: the server removes idle consumers anyway.
        self.connection.spawn(_cleanup)

    def _failed(self, exc: BaseException) -> None:
        self.stats.errors += 1
        self.stats.last_error = f"{type(exc).__name__}: {exc}"
        log.warning("NATS consumer: %s", self.stats.last_error)

    # -- snapshots ----------------------------------------------------------------

    async def _bootstrap(self, need: int) -> Bootstrap:
        logged = False
        while True:
            if not self.connection.connected:
                await self.connection.wait_connected()
            try:
                found = await self._newest_snapshot(need)
                if found is None:
                    if not logged:
                        log.info(
                            "NATS: waiting for a snapshot at height >= %d in %s",
                            need,
                            self.names.bucket,
                        )
                        logged = True
                    await trio.sleep(self.snapshot_poll)
                    continue
                data = await self._download(found.name)
            except _RETRYABLE as exc:
                self._failed(exc)
                await trio.sleep(self.snapshot_poll)
                continue
            try:
                frame = await trio.to_thread.run_sync(decode_snapshot_frame, data)
                if frame.height != found.height:
                    raise FrameError(f"object {found.name} holds height {frame.height}")
            except FrameError as exc:
                log.error("NATS: snapshot object %s is unusable: %s", found.name, exc)
                self._bad_snapshots.add(found.name)
                continue
            self._follower = ChainFollower(frame.height, found.seq)
            self._need = None
            self._drop_subscription()
            self.stats.bootstraps += 1
            log.info(
                "NATS: bootstrapped from %s (height %d, %.1f MB), blocks from stream seq %d",
                found.name,
                frame.height,
                len(frame.data) / 1e6,
                found.seq + 1,
            )
            return Bootstrap(frame.height, found.seq, frame.data, found.name, found.time)

    async def _newest_snapshot(self, need: int) -> _Snapshot | None:
        names, bad = self.names, self._bad_snapshots

        async def _list(_nc: Client, js: JetStreamContext) -> list[api.ObjectInfo]:
            try:
                store = await js.object_store(names.bucket)
                return await store.list(ignore_deletes=True)
            except nats.js.errors.NotFoundError:  # no bucket, or an empty one
                return []

        best: _Snapshot | None = None
        for info in await self.connection.call(_list):
            height = names.snapshot_height(info.name)
            if height is None or info.deleted or info.name in bad or height < need:
                continue
            header_height = _header_int(info.headers, HEIGHT_HEADER)
            if header_height is not None and header_height != height:
                continue
            if best is None or height > best.height:
                best = _Snapshot(
                    info.name,
                    height,
                    _header_int(info.headers, SEQ_HEADER) or 0,
                    _header_int(info.headers, TIME_HEADER),
                )
        return best

    async def _download(self, name: str) -> bytes:
        bucket = self.names.bucket

        async def _get(_nc: Client, js: JetStreamContext) -> bytes:
            store = await js.object_store(bucket)
            sink = io.BytesIO()
            await store.get(name, writeinto=sink)
            return sink.getvalue()

        return await self.connection.call(_get)


def _header_int(headers: dict[str, object] | None, key: str) -> int | None:
    if not headers:
        return None
    value = headers.get(key)
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


def _is_diffs(msg: Msg) -> bool:
    try:
        return frame_kind(msg.data) is FrameKind.DIFFS
    except FrameError:
        return False  # judged (and refused) as a block


def _height_and_prev(msg: Msg) -> tuple[int | None, int | None]:
    """The height (``Nats-Msg-Id``) and ``prev`` of a block message, without decoding it."""
    headers = msg.headers or {}
    height = message_height(headers.get("Nats-Msg-Id", ""))
    try:
        prev = frame_prev(msg.data)
    except FrameError:
        prev = None
    return height, prev
