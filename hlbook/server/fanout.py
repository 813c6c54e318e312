"""Fan-out: subscriptions, per-client bounded queues, and the policy when a client lags.

Sans I/O. After each applied block the :class:`Hub` builds each needed
message once per (channel, coin, parameters) and offers the same ``str`` to
every subscriber's :class:`ClientQueue`, never waiting for anyone:

* ``l2Book`` and ``bbo`` are *conflated*: a newer message replaces an older
  one of the same subscription that has not been sent yet, so a slow client
  always gets the latest book and its queue cannot grow past one message per
  subscription;
* ``trades`` is *lossless*: a client whose queue is full is disconnected with
  close code 1008 and a reason — never a silent gap;
* ``l4Book`` is *lossless or resynced*: on overflow the client's queued
  updates for that coin are dropped and replaced by a fresh ``Snapshot``
  (consistent with the updates that follow); if even that does not fit, the
  client is disconnected.

``l4Book`` updates follow the statuses (:attr:`~hlbook.stages.Stage.STATUSES`),
which may lag the diffs: a ``Snapshot`` is labelled with the books'
``details_height`` and built only when the coin is
:meth:`~hlbook.book.books.Books.details_ready`; until then the subscriber
waits (asking the data path to let details catch up) and gets no updates.
"""

import itertools
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any

import attrs

from hlbook.book.books import Books
from hlbook.book.l2 import bbo, l2_levels
from hlbook.book.l4 import ASK, BID, CoinBook
from hlbook.book.trades import trades_by_coin
from hlbook.model import Block
from hlbook.server.messages import (
    bbo_message,
    l2_book_message,
    l4_snapshot_message,
    l4_updates_message,
    trades_message,
)
from hlbook.server.protocol import (
    BboSub,
    L2BookSub,
    L4BookSub,
    Subscription,
    TradesSub,
    error_message,
)
from hlbook.stages import Stage

__all__ = ["SLOW_CLIENT_CODE", "ClientQueue", "ClientStats", "Hub", "HubStats"]

SLOW_CLIENT_CODE = 1008
"""WebSocket close code for a client disconnected because it could not keep up."""

_counter = itertools.count(1)


@attrs.define
class ClientStats:
    """Per-client counters."""

    messages_sent: int = 0
    bytes_sent: int = 0
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
    conflated messages are bounded by the number of subscriptions instead.
    ``wake`` is called whenever something becomes ready to send, ``on_close``
    once when the connection is to be closed.
    """

    def __init__(
        self,
        *,
        max_messages: int = 4096,
        max_bytes: int = 64 * 1024 * 1024,
        wake: Callable[[], None] = lambda: None,
        on_close: Callable[[], None] = lambda: None,
    ) -> None:
        self.id = next(_counter)
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.wake = wake
        self.on_close = on_close
        self.subscriptions: dict[Subscription, dict[str, Any]] = {}
        self.stats = ClientStats()
        self.close_reason: tuple[int, str] | None = None
        self._queue: OrderedDict[Hashable, str] = OrderedDict()
        self._lossless = 0
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def queued_bytes(self) -> int:
        """Bytes waiting in the lossless part of the queue."""
        return self._bytes

    def put(self, payload: str, group: Hashable = None, *, allowance: int = 0) -> bool:
        """Queue a message that must not be lost; False (nothing queued) if full.

        ``allowance`` extra messages may be queued beyond ``max_messages``: replies
        to the client's own requests use it, so that a pong does not cost an
        ``l4Book`` subscriber its resync.
        """
        if self.close_reason is not None:
            return True
        if (
            self._lossless >= self.max_messages + allowance
            or self._bytes + len(payload) > self.max_bytes
        ):
            return False
        self._queue[(group, next(_counter))] = payload
        self._lossless += 1
        self._bytes += len(payload)
        self.wake()
        return True

    def put_latest(self, key: Hashable, payload: str) -> None:
        """Queue a message that replaces an unsent one with the same ``key``."""
        if self.close_reason is not None:
            return
        if key in self._queue:
            self.stats.conflated += 1
        # In the replaced message's place: moving it to the back would let a steady
        # backlog of trades/l4Book messages hold the view back for as long as it lasts.
        self._queue[key] = payload
        self.wake()

    def forget(self, key: Hashable) -> None:
        """Drop an unsent conflated message (its subscription ended)."""
        self._queue.pop(key, None)

    def pop(self) -> str | None:
        """The next message to send, or ``None``."""
        if not self._queue:
            return None
        key, payload = self._queue.popitem(last=False)
        if isinstance(key, tuple):  # lossless; conflated keys are subscriptions
            self._lossless -= 1
            self._bytes -= len(payload)
        return payload

    def pop_batch(self, max_chars: int) -> list[str]:
        """The next messages to send, up to about ``max_chars`` (at least one if any)."""
        batch: list[str] = []
        total = 0
        queue = self._queue
        while queue and total < max_chars:
            key, payload = queue.popitem(last=False)
            if isinstance(key, tuple):
                self._lossless -= 1
                self._bytes -= len(payload)
            batch.append(payload)
            total += len(payload)
        return batch

    def discard(self, group: Hashable) -> int:
        """Drop queued lossless messages of ``group``; return how many."""
        doomed = [key for key in self._queue if isinstance(key, tuple) and key[0] == group]
        for key in doomed:
            payload = self._queue.pop(key)
            self._lossless -= 1
            self._bytes -= len(payload)
        self.stats.dropped += len(doomed)
        return len(doomed)

    def close(self, code: int, reason: str) -> None:
        """Close the connection: nothing more is sent (the first reason given wins)."""
        if self.close_reason is None:
            self.close_reason = (code, reason)
            self._queue.clear()
            self._lossless = self._bytes = 0
            self.wake()
            self.on_close()


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

    def __init__(self) -> None:
        self._subscribers: dict[Subscription, set[ClientQueue]] = {}
        self._by_coin: dict[str, set[Subscription]] = {}
        self._last_l2: dict[L2BookSub, tuple[object, object]] = {}
        self._last_bbo: dict[str, tuple[object, object]] = {}
        self._l4: set[L4BookSub] = set()
        self._l4_cache: dict[str, tuple[int, str]] = {}
        # l4Book subscribers waiting for a snapshot (their coin's details lag the diffs).
        self._l4_waiting: dict[L4BookSub, set[ClientQueue]] = {}
        self.stats = HubStats()
        self.recent_disconnects: deque[str] = deque(maxlen=20)
        """Reasons of the latest disconnections for lag."""

    # -- subscriptions ------------------------------------------------------------------

    @property
    def subscription_count(self) -> int:
        """Distinct subscriptions with at least one subscriber."""
        return len(self._subscribers)

    def subscribe(
        self,
        client: ClientQueue,
        sub: Subscription,
        books: Books,
        echo: dict[str, Any] | None = None,
    ) -> str | None:
        """Register ``client``; return the immediate snapshot message, if the channel has one.

        ``echo`` is the client's own subscription object, kept for its responses.
        """
        client.subscriptions[sub] = echo if echo is not None else {}
        self._subscribers.setdefault(sub, set()).add(client)
        self._by_coin.setdefault(sub.coin, set()).add(sub)
        if isinstance(sub, L4BookSub):
            self._l4.add(sub)
            if not books.details_ready(sub.coin):
                self._wait_for_details(sub, client, books)
                return None
        return self.snapshot_message(sub, books)

    def _wait_for_details(self, sub: L4BookSub, client: ClientQueue, books: Books) -> None:
        """``client`` gets ``sub``'s snapshot once the coin's details caught up."""
        self._l4_waiting.setdefault(sub, set()).add(client)
        books.request_catch_up()

    def _serve_waiting(self, books: Books) -> None:
        """Snapshots for l4Book subscribers whose coin's details caught up."""
        for sub in list(self._l4_waiting):
            if not books.details_ready(sub.coin):
                continue
            message = self._l4_snapshot(sub.coin, books)
            for client in self._l4_waiting.pop(sub):
                if not client.put(message, sub):
                    self.disconnect_slow(client, f"l4Book {sub.coin} snapshot does not fit")
        if self._l4_waiting:
            books.request_catch_up()

    def unsubscribe(self, client: ClientQueue, sub: Subscription) -> None:
        """Remove one subscription of ``client``."""
        client.subscriptions.pop(sub, None)
        client.forget(sub)
        if isinstance(sub, L4BookSub) and sub in self._l4_waiting:
            waiting = self._l4_waiting[sub]
            waiting.discard(client)
            if not waiting:
                del self._l4_waiting[sub]
        clients = self._subscribers.get(sub)
        if clients is None:
            return
        clients.discard(client)
        if not clients:
            del self._subscribers[sub]
            if isinstance(sub, L2BookSub):
                self._last_l2.pop(sub, None)
            elif isinstance(sub, L4BookSub):
                self._l4.discard(sub)
                self._l4_cache.pop(sub.coin, None)
            subs = self._by_coin[sub.coin]
            subs.discard(sub)
            if not subs:
                del self._by_coin[sub.coin]

    def drop(self, client: ClientQueue) -> None:
        """Forget every subscription of a disconnected client."""
        for sub in list(client.subscriptions):
            self.unsubscribe(client, sub)
        client.subscriptions.clear()

    def clients(self) -> set[ClientQueue]:
        """Every client with at least one subscription."""
        found: set[ClientQueue] = set()
        for clients in self._subscribers.values():
            found |= clients
        return found

    # -- messages -------------------------------------------------------------------------

    def snapshot_message(self, sub: Subscription, books: Books) -> str | None:
        """The message a new subscriber of ``sub`` gets at once (``None`` for trades)."""
        book = books.book(sub.coin)
        if book is None or isinstance(sub, TradesSub):
            return None
        time = books.time
        # The view sent now is, for every subscriber, the last one sent: publish()
        # runs after each block, so nothing changed since the last publication.
        if isinstance(sub, L2BookSub):
            bids = l2_levels(book, BID, sub.n_levels, sub.n_sig_figs, sub.mantissa)
            asks = l2_levels(book, ASK, sub.n_levels, sub.n_sig_figs, sub.mantissa)
            self._last_l2[sub] = (bids, asks)
            return l2_book_message(sub.coin, time, bids, asks)
        if isinstance(sub, BboSub):
            best = self._last_bbo[sub.coin] = bbo(book)
            return bbo_message(sub.coin, time, *best)
        return self._l4_snapshot(sub.coin, books)

    def _l4_snapshot(self, coin: str, books: Books) -> str:
        # Only when the coin is details_ready: its book is then that of details_height,
        # the height the l4Book updates (published with the statuses) continue from.
        height = books.details_height
        cached = self._l4_cache.get(coin)
        if cached is not None and cached[0] == height:
            return cached[1]
        bids, asks = books.coin_orders(coin)
        message = l4_snapshot_message(coin, books.details_time, height, bids, asks)
        self._l4_cache[coin] = (height, message)
        self.stats.messages_built += 1
        return message

    def publish(
        self, stage: Stage, block: Block, books: Books, touched: Mapping[str, CoinBook]
    ) -> None:
        """Offer what ``stage`` of ``block`` completed to its subscribers (a
        :class:`~hlbook.stages.BlockSink`)."""
        if stage is Stage.BLOCK:
            self.stats.blocks += 1
            return
        by_coin = self._by_coin
        if not by_coin:
            return
        if stage is Stage.DIFFS:
            self._publish_levels(block, touched)
        elif stage is Stage.FILLS:
            if block.fills:
                for coin, trades in trades_by_coin(block.fills).items():
                    sub = TradesSub(coin)
                    if sub in self._subscribers:
                        self._offer_lossless(sub, trades_message(trades), books)
        else:
            for l4 in list(self._l4):
                statuses = block.statuses_by_coin.get(l4.coin, ())
                diffs = block.diffs_by_coin.get(l4.coin, ())
                if statuses or diffs:
                    message = l4_updates_message(block.time, block.height, statuses, diffs)
                    self._offer_lossless(l4, message, books)
            if self._l4_waiting:
                self._serve_waiting(books)

    def _publish_levels(self, block: Block, touched: Mapping[str, CoinBook]) -> None:
        by_coin = self._by_coin
        for coin, book in touched.items():
            subs = by_coin.get(coin)
            if not subs:
                continue
            for sub in list(subs):
                if isinstance(sub, L2BookSub):
                    bids = l2_levels(book, BID, sub.n_levels, sub.n_sig_figs, sub.mantissa)
                    asks = l2_levels(book, ASK, sub.n_levels, sub.n_sig_figs, sub.mantissa)
                    if self._last_l2.get(sub) == (bids, asks):
                        continue
                    self._last_l2[sub] = (bids, asks)
                    message = l2_book_message(coin, block.time, bids, asks)
                    self._offer_latest(sub, message)
                elif isinstance(sub, BboSub):
                    best = bbo(book)
                    if self._last_bbo.get(coin) == best:
                        continue
                    self._last_bbo[coin] = best
                    self._offer_latest(sub, bbo_message(coin, block.time, *best))

    def resync(self, books: Books, coins: Iterable[str] | None = None) -> None:
        """After a re-bootstrap or repair: send every subscriber of ``coins`` (default: all)
        a fresh view, including a new ``l4Book`` Snapshot."""
        if coins is None:
            self._l4_cache.clear()
        wanted = set(self._by_coin) if coins is None else set(coins) & set(self._by_coin)
        for coin in wanted:
            self._last_bbo.pop(coin, None)
            # A repair changes a coin's book without a new height: the cached
            # snapshot of that height is stale.
            self._l4_cache.pop(coin, None)
            for sub in self._by_coin[coin]:
                if isinstance(sub, L2BookSub):
                    self._last_l2.pop(sub, None)
                if isinstance(sub, L4BookSub) and not books.details_ready(coin):
                    for client in list(self._subscribers.get(sub, ())):
                        client.discard(sub)
                        self._wait_for_details(sub, client, books)
                    continue
                message = self.snapshot_message(sub, books)
                if message is None:
                    continue
                if isinstance(sub, L4BookSub):
                    self._l4_waiting.pop(sub, None)  # the snapshot below serves them too
                    for client in list(self._subscribers.get(sub, ())):
                        client.discard(sub)
                        if not client.put(message, sub):
                            self.disconnect_slow(client, f"l4Book {coin} snapshot does not fit")
                else:
                    self._offer_latest(sub, message)

    def notify(self, text: str) -> None:
        """Send an error message (e.g. the feed is stale) to every subscribed client."""
        message = error_message(text)
        for client in self.clients():
            if not client.put(message):
                self.disconnect_slow(client, "queue full")

    def _offer_latest(self, sub: Subscription, message: str) -> None:
        self.stats.messages_built += 1
        for client in self._subscribers.get(sub, ()):
            client.put_latest(sub, message)
            self.stats.messages_queued += 1

    def _offer_lossless(self, sub: Subscription, message: str, books: Books) -> None:
        self.stats.messages_built += 1
        waiting = self._l4_waiting.get(sub) if isinstance(sub, L4BookSub) else None
        for client in list(self._subscribers.get(sub, ())):
            if waiting is not None and client in waiting:
                continue  # its snapshot is not out yet: it will be later than this
            if client.put(message, sub):
                self.stats.messages_queued += 1
                continue
            if isinstance(sub, L4BookSub):
                # Replace the backlog for this coin by one fresh snapshot.
                client.discard(sub)
                client.stats.resnapshots += 1
                self.stats.resnapshots += 1
                if not books.details_ready(sub.coin):
                    self._wait_for_details(sub, client, books)
                    continue
                if client.put(self._l4_snapshot(sub.coin, books), sub):
                    continue
            self.disconnect_slow(client, f"{_channel(sub)} {sub.coin} backlog over the limit")

    def disconnect_slow(self, client: ClientQueue, why: str) -> None:
        """Close a client that cannot keep up (code 1008) and forget its subscriptions."""
        client.stats.disconnected_for_lag = True
        self.stats.disconnected_for_lag += 1
        reason = f"client too slow: {why}"
        self.recent_disconnects.append(reason)
        client.close(SLOW_CLIENT_CODE, reason)
        self.drop(client)


def _channel(sub: Subscription) -> str:
    return {L2BookSub: "l2Book", BboSub: "bbo", TradesSub: "trades", L4BookSub: "l4Book"}[type(sub)]
