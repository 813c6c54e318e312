"""Fan-out: who is subscribed to what, per-client bounded queues, and each channel's policy.

Sans I/O. The :class:`Hub` is the data path's :class:`~hlbook.stages.BlockSink`:
after each stage of a block it asks the channels that publish at that stage
(:mod:`hlbook.channels`) for the messages of their subscribed keys — each
built once, as bytes — and offers the same :class:`~hlbook.server.frames.Message`
to every subscriber's :class:`ClientQueue`, never waiting for anyone. What a
client that lags gets is the channel's :class:`~hlbook.channels.Policy`:

* ``CONFLATE`` (``l2Book``, ``bbo``): a newer message replaces an unsent older
  one of the same subscription, so a slow client always gets the latest view
  and its queue holds at most one message per subscription;
* ``LOSSLESS`` (``trades``): a client whose queue is full is disconnected with
  close code 1008 and a reason — never a silent gap;
* ``RESNAPSHOT`` (``l4Book``): on overflow the client's queued messages of that
  subscription are replaced by a fresh first message (consistent with what
  follows); if even that does not fit, the client is disconnected.

A channel may not be able to build a first message yet (``l4Book`` while the
coin's order details lag its diffs): its subscribers wait, get nothing, and
are served after a later publication (see ``Channel.ready``).

Queues count bytes of payload, not characters. Replies to the client's own
requests (pongs, errors, answers) have their own small budget: a client that
sends requests and never reads the answers is disconnected long before it
costs the server memory.
"""

import itertools
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any

import attrs
import orjson

from hlbook.book.books import Books
from hlbook.book.l4 import CoinBook
from hlbook.channels import Channel, Policy, Registry
from hlbook.channels.l4book import L4Book
from hlbook.model import Block
from hlbook.server.frames import Deflater, Message
from hlbook.stages import Stage

__all__ = [
    "SLOW_CLIENT_CODE",
    "ChannelStats",
    "ClientQueue",
    "ClientStats",
    "Hub",
    "HubStats",
    "error_message",
]

SLOW_CLIENT_CODE = 1008
"""WebSocket close code for a client disconnected because it could not keep up."""

_counter = itertools.count(1)


def error_message(text: str) -> Message:
    """``{"channel":"error","data":text}``."""
    return Message(orjson.dumps({"channel": "error", "data": text}))


@attrs.define
class ClientStats:
    """Per-client counters."""

    messages_sent: int = 0
    bytes_sent: int = 0
    """Bytes on the wire (compressed where it was)."""
    compressed_messages: int = 0
    conflated: int = 0
    resnapshots: int = 0
    dropped: int = 0
    disconnected_for_lag: bool = False
    direct_writes: int = 0
    """Writes done at once by the flusher (the socket took everything)."""
    backlogged_writes: int = 0
    """Writes the socket could not take at once, finished by the client's writer task."""


class ClientQueue:
    """One client's outgoing messages, bounded, in order.

    ``max_messages``/``max_bytes`` bound the lossless part of the queue;
    conflated messages are bounded by the number of subscriptions instead, and
    replies by ``max_reply_bytes``. ``wake`` is called whenever something
    becomes ready to send, ``on_close`` once when the connection is to be
    closed. ``deflater`` is the client's negotiated compression (``None``: none).
    """

    def __init__(
        self,
        *,
        max_messages: int = 4096,
        max_bytes: int = 64 * 1024 * 1024,
        max_reply_bytes: int = 1024 * 1024,
        wake: Callable[[], None] = lambda: None,
        on_close: Callable[[], None] = lambda: None,
    ) -> None:
        self.id = next(_counter)
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.max_reply_bytes = max_reply_bytes
        self.wake = wake
        self.on_close = on_close
        self.deflater: Deflater | None = None
        self.subscriptions: dict[Hashable, dict[str, Any]] = {}
        """Subscribed keys and the client's own subscription objects (for echoes)."""
        self.stats = ClientStats()
        self.close_reason: tuple[int, str] | None = None
        # Keys: a subscription key (conflated), (group, n) (lossless), ("reply", n).
        self._queue: OrderedDict[Hashable, Message] = OrderedDict()
        self._lossless = 0
        self._bytes = 0
        self._reply_bytes = 0
        # Subscriptions whose first message is still being prepared: their messages wait
        # here (counted against the same limits) and follow it.
        self._held: dict[Hashable, list[Message]] = {}

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def queued_bytes(self) -> int:
        """Payload bytes waiting in the lossless part of the queue."""
        return self._bytes

    def put(self, message: Message, group: Hashable = None) -> bool:
        """Queue a message that must not be lost; False (nothing queued) if full."""
        if self.close_reason is not None:
            return True
        size = len(message.payload)
        if self._lossless >= self.max_messages or self._bytes + size > self.max_bytes:
            return False
        self._lossless += 1
        self._bytes += size
        held = self._held.get(group) if self._held else None
        if held is not None:
            held.append(message)
            return True
        self._queue[(group, next(_counter))] = message
        self.wake()
        return True

    def hold(self, group: Hashable) -> None:
        """Keep ``group``'s messages back until :meth:`release` (its first message is being
        prepared elsewhere, e.g. read from the history store)."""
        self._held.setdefault(group, [])

    def release(self, group: Hashable, first: Message | None) -> bool:
        """Queue ``first``, then what was held for ``group``; False if ``first`` does not fit."""
        held = self._held.pop(group, None)
        if held is None or self.close_reason is not None:
            return True
        if first is not None:
            size = len(first.payload)
            if self._bytes + size > self.max_bytes:
                self._drop_held(held)
                return False
            self._queue[(group, next(_counter))] = first
            self._lossless += 1
            self._bytes += size
        for message in held:
            self._queue[(group, next(_counter))] = message
        self.wake()
        return True

    def _drop_held(self, held: list[Message]) -> None:
        self._lossless -= len(held)
        self._bytes -= sum(len(message.payload) for message in held)

    def reply(self, message: Message) -> bool:
        """Queue an answer to the client's own request; False if its replies are not read."""
        if self.close_reason is not None:
            return True
        size = len(message.payload)
        if self._reply_bytes + size > self.max_reply_bytes and self._reply_bytes:
            return False
        self._queue[("reply", next(_counter))] = message
        self._reply_bytes += size
        self.wake()
        return True

    def put_latest(self, key: Hashable, message: Message) -> None:
        """Queue a message that replaces an unsent one with the same ``key``."""
        if self.close_reason is not None:
            return
        if key in self._queue:
            self.stats.conflated += 1
        # In the replaced message's place: moving it to the back would let a steady
        # backlog of lossless messages hold the view back for as long as it lasts.
        self._queue[key] = message
        self.wake()

    def forget(self, key: Hashable) -> None:
        """Drop an unsent conflated message, and held ones (its subscription ended)."""
        self._queue.pop(key, None)
        held = self._held.pop(key, None) if self._held else None
        if held:
            self._drop_held(held)

    def _popped(self, key: Hashable, message: Message) -> None:
        if type(key) is tuple:
            size = len(message.payload)
            if key[0] == "reply":
                self._reply_bytes -= size
            else:
                self._lossless -= 1
                self._bytes -= size

    def pop(self) -> Message | None:
        """The next message to send, or ``None``."""
        if not self._queue:
            return None
        key, message = self._queue.popitem(last=False)
        self._popped(key, message)
        return message

    def pop_batch(self, max_bytes: int) -> list[Message]:
        """The next messages to send, up to about ``max_bytes`` (at least one if any)."""
        batch: list[Message] = []
        total = 0
        queue = self._queue
        while queue and total < max_bytes:
            key, message = queue.popitem(last=False)
            self._popped(key, message)
            batch.append(message)
            total += len(message.payload)
        return batch

    def discard(self, group: Hashable) -> int:
        """Drop queued lossless messages of ``group``; return how many."""
        doomed = [
            key
            for key in self._queue
            if type(key) is tuple and key[0] == group and key[0] != "reply"
        ]
        for key in doomed:
            self._popped(key, self._queue.pop(key))
        self.stats.dropped += len(doomed)
        return len(doomed)

    def close(self, code: int, reason: str) -> None:
        """Close the connection: nothing more is sent (the first reason given wins)."""
        if self.close_reason is None:
            self.close_reason = (code, reason)
            self._queue.clear()
            self._held.clear()
            self._lossless = self._bytes = self._reply_bytes = 0
            self.wake()
            self.on_close()


@attrs.define
class ChannelStats:
    """One channel's counters."""

    subscriptions: int = 0
    """Distinct keys with at least one subscriber."""
    messages_built: int = 0
    messages_queued: int = 0
    """Messages offered to clients (one per subscriber)."""
    bytes_queued: int = 0
    resnapshots: int = 0
    lag_disconnects: int = 0


@attrs.define
class HubStats:
    """Totals across clients."""

    blocks: int = 0
    messages_built: int = 0
    messages_queued: int = 0
    disconnected_for_lag: int = 0
    resnapshots: int = 0


class Hub:
    """Who is subscribed to what, and what each block means for them."""

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry if registry is not None else Registry()
        self._subscribers: dict[Hashable, set[ClientQueue]] = {}
        self._channel_of: dict[Hashable, Channel] = {}
        self._keys: dict[Channel, set[Hashable]] = {
            channel: set() for channel in self.registry.channels.values()
        }
        self.stats = HubStats()
        self.channel_stats: dict[str, ChannelStats] = {
            name: ChannelStats() for name in self.registry.channels
        }
        self.recent_disconnects: deque[str] = deque(maxlen=20)
        """Reasons of the latest disconnections for lag."""
        # Subscribers whose first message their channel cannot build yet (see
        # Channel.ready): they get nothing until it is built, after a later publication.
        self._waiting: dict[Hashable, set[ClientQueue]] = {}

    # -- subscriptions ------------------------------------------------------------------

    @property
    def subscription_count(self) -> int:
        """Distinct subscriptions with at least one subscriber."""
        return len(self._subscribers)

    def subscribe(
        self,
        client: ClientQueue,
        channel: Channel,
        key: Hashable,
        books: Books,
        echo: dict[str, Any] | None = None,
    ) -> Message | None:
        """Register ``client`` for ``key``; return the first message it gets, if any.

        ``echo`` is the client's own subscription object, kept for its responses.
        """
        client.subscriptions[key] = echo if echo is not None else {}
        clients = self._subscribers.get(key)
        if clients is None:
            clients = self._subscribers[key] = set()
            self._channel_of[key] = channel
            self._keys[channel].add(key)
            self.channel_stats[channel.name].subscriptions += 1
            channel.added(key)
        clients.add(client)
        if not channel.ready(key, books):
            self._wait(channel, key, client, books)
            return None
        first = channel.first(key, books)
        if first is not None:
            self.channel_stats[channel.name].messages_built += 1
        return first

    def _wait(self, channel: Channel, key: Hashable, client: ClientQueue, books: Books) -> None:
        self._waiting.setdefault(key, set()).add(client)
        channel.waiting(books)

    def _serve_waiting(self, books: Books, stage: Stage) -> None:
        """After ``stage`` is published: first messages for the subscribers of channels of
        that stage who can have them now (their updates continue from here)."""
        for key in list(self._waiting):
            if key not in self._waiting:
                # A client disconnected earlier in this loop (its first message did not
                # fit) was the last one waiting for it.
                continue
            channel = self._channel_of.get(key)
            if channel is None:
                del self._waiting[key]
                continue
            if channel.stage is not stage:
                continue
            if not channel.ready(key, books):
                channel.waiting(books)
                continue
            message = channel.first(key, books)
            clients = self._waiting.pop(key)
            if message is None:
                continue
            self.channel_stats[channel.name].messages_built += 1
            for client in clients:
                if not client.put(message, key):
                    self.disconnect_slow(
                        client, f"{channel.name} first message does not fit", channel.name
                    )

    def unsubscribe(self, client: ClientQueue, key: Hashable) -> None:
        """Remove one subscription of ``client``."""
        client.subscriptions.pop(key, None)
        client.forget(key)
        waiting = self._waiting.get(key)
        if waiting is not None:
            waiting.discard(client)
            if not waiting:
                del self._waiting[key]
        clients = self._subscribers.get(key)
        if clients is None:
            return
        clients.discard(client)
        if not clients:
            del self._subscribers[key]
            channel = self._channel_of.pop(key)
            self._keys[channel].discard(key)
            self.channel_stats[channel.name].subscriptions -= 1
            channel.removed(key)

    def drop(self, client: ClientQueue) -> None:
        """Forget every subscription of a disconnected client."""
        for key in list(client.subscriptions):
            self.unsubscribe(client, key)
        client.subscriptions.clear()

    def channel(self, key: Hashable) -> Channel | None:
        """The channel of a subscribed key."""
        return self._channel_of.get(key)

    def clients(self) -> set[ClientQueue]:
        """Every client with at least one subscription."""
        found: set[ClientQueue] = set()
        for clients in self._subscribers.values():
            found |= clients
        return found

    # -- the data path's sink -------------------------------------------------------------

    def publish(
        self, stage: Stage, block: Block, books: Books, touched: Mapping[str, CoinBook]
    ) -> None:
        """Offer what ``stage`` of ``block`` changed to the subscribers."""
        if stage is Stage.BLOCK:
            self.stats.blocks += 1
        if not self._subscribers:
            return
        for channel in self.registry.by_stage[stage]:
            keys = self._keys[channel]
            if not keys:
                continue
            # Built first, then offered: offering can drop a slow client, and with it keys
            # of the set the channel would still be walking.
            for key, message in list(channel.publish(block, books, touched, keys)):
                self._offer(channel, key, message, books)
        if self._waiting:
            self._serve_waiting(books, stage)

    def resync(self, books: Books, coins: Iterable[str] | None = None) -> None:
        """After a re-bootstrap or repair: send every subscriber of ``coins`` (default: all)
        a fresh first message (including a new ``l4Book`` Snapshot)."""
        wanted = None if coins is None else set(coins)
        for channel in self.registry.channels.values():
            if isinstance(channel, L4Book):
                # A repair changes a coin's book without a new height: its cached
                # snapshot of that height is stale.
                channel.forget(wanted)
            if channel.policy is Policy.LOSSLESS:
                continue  # nothing to redo: the next block's messages follow on
            for key in list(self._keys[channel]):
                coin = channel.coin(key)
                if wanted is not None and not channel.repaired(key, wanted):
                    continue
                if not channel.ready(key, books):
                    for client in list(self._subscribers.get(key, ())):
                        client.discard(key)
                        self._wait(channel, key, client, books)
                    continue
                self._waiting.pop(key, None)  # the message below serves them too
                message = channel.first(key, books)
                if message is None:
                    continue
                if channel.policy is Policy.CONFLATE:
                    self._offer(channel, key, message, books)
                    continue
                for client in list(self._subscribers.get(key, ())):
                    client.discard(key)
                    if not client.put(message, key):
                        self.disconnect_slow(
                            client, f"{channel.name} {coin} snapshot does not fit", channel.name
                        )

    def notify(self, text: str) -> None:
        """Send an error message (e.g. the feed is stale) to every subscribed client."""
        message = error_message(text)
        for client in self.clients():
            if not client.reply(message):
                self.disconnect_slow(client, "messages not read")

    # -- offering ---------------------------------------------------------------------------

    def _offer(self, channel: Channel, key: Hashable, message: Message, books: Books) -> None:
        clients = self._subscribers.get(key)
        if not clients:
            return
        stats = self.channel_stats[channel.name]
        self.stats.messages_built += 1
        stats.messages_built += 1
        message.shared = len(clients)
        stats.messages_queued += len(clients)
        stats.bytes_queued += len(clients) * len(message.payload)
        self.stats.messages_queued += len(clients)
        if channel.policy is Policy.CONFLATE:
            for client in clients:
                client.put_latest(key, message)
            return
        waiting = self._waiting.get(key)
        for client in list(clients):
            if waiting is not None and client in waiting:
                continue  # its first message is not out yet: it will be later than this
            if client.put(message, key):
                continue
            if channel.policy is Policy.RESNAPSHOT:
                # Replace the backlog of this subscription by one fresh first message.
                client.discard(key)
                client.stats.resnapshots += 1
                self.stats.resnapshots += 1
                stats.resnapshots += 1
                if not channel.ready(key, books):
                    self._wait(channel, key, client, books)
                    continue
                fresh = channel.first(key, books)
                if fresh is not None and client.put(fresh, key):
                    continue
            coin = channel.coin(key)
            what = f"{channel.name} {coin}" if coin else channel.name
            self.disconnect_slow(client, f"{what} backlog over the limit", channel.name)

    def disconnect_slow(self, client: ClientQueue, why: str, channel: str | None = None) -> None:
        """Close a client that cannot keep up (code 1008) and forget its subscriptions
        (``channel``: the channel whose messages did not fit, for its counters)."""
        if channel is not None and channel in self.channel_stats:
            self.channel_stats[channel].lag_disconnects += 1
        client.stats.disconnected_for_lag = True
        self.stats.disconnected_for_lag += 1
        reason = f"client too slow: {why}"
        self.recent_disconnects.append(reason)
        client.close(SLOW_CLIENT_CODE, reason)
        self.drop(client)
