"""The deterministic node: one call, one block; plus its books at any recent height.

:class:`BlockGenerator` is pure and synchronous (no Trio, no I/O). The same
:class:`~hlbook.sim.config.SimConfig` gives the same blocks; the layout only
changes how they are written, never what happens in them.
"""

import random
from collections import deque
from collections.abc import Iterator

from msgspec.structs import replace

from hlbook.node.formats import Order, SnapshotSide, encode_snapshot
from hlbook.numbers import fmt, parse
from hlbook.sim.book import ASK, BID, SimBook
from hlbook.sim.config import SimConfig
from hlbook.sim.exchange import BlockEvents, Exchange
from hlbook.sim.render import node_time
from hlbook.sim.traders import Market, Traders
from hlbook.sim.users import NAMED_USERS, NamedUsers

__all__ = ["BlockGenerator", "CoinState", "State"]

CoinState = tuple[SnapshotSide, SnapshotSide]
"""One coin's ``(bids, asks)`` as ``[user, order]`` pairs, best first, queue order."""

Pending = tuple[tuple[str, Order], ...]
"""One coin's untriggered trigger orders as ``(user, order)``, oldest first."""

State = tuple[dict[str, CoinState], dict[str, Pending]]
"""The books and the pending trigger orders of every coin at one height."""

_FIRST_OID = 412_000_000_000
_JITTER = 0.3  # block times wander by up to this share of the interval


def _pairs(book: SimBook, side: str) -> SnapshotSide:
    return [(rest.user, rest.order) for rest in book.side_orders(side)]


def _with_user(pairs: SnapshotSide) -> list[Order]:
    return [replace(order, user=user) for user, order in pairs]


class BlockGenerator:
    """Generates blocks of node events from simulated traders on a matching engine.

    The books start populated (as a node one starts watching mid-stream): the
    state before the first block is height ``config.start_height - 1``.
    """

    def __init__(self, config: SimConfig, *, history: int | None = None) -> None:
        """``history`` is how many heights of books to keep (default ``config.record_history``)."""
        self.config = config
        self.keep = config.record_history if history is None else history
        rng = random.Random(config.seed)
        specs = config.coin_specs()
        self.exchange = Exchange(specs, rng, first_oid=_FIRST_OID, managed=frozenset(NAMED_USERS))
        self.traders = Traders(self.exchange, specs, rng, config.scale)
        self.named = NamedUsers(
            self.exchange, self.traders.markets, random.Random(f"{config.seed}-users")
        )
        self._markets = {market.coin: market for market in self.traders.markets}
        self._timing = random.Random(f"{config.seed}-timing")
        self._start_ns = int(config.start_time.timestamp()) * 1_000_000_000 + (
            config.start_time.microsecond * 1000
        )
        self._interval_ns = round(config.block_interval * 1e9)
        self.height = config.start_height - 1
        before = self._start_ns - self._interval_ns
        self.exchange.begin_block(BlockEvents(self.height, before, node_time(before)))
        self.traders.populate()
        self.named.populate()
        self._history: deque[tuple[int, State]] = deque(maxlen=self.keep or None)
        self._pending: dict[str, tuple[int, Pending]] = {}  # coin -> (trigger version, pending)
        if self.keep:
            books = {coin: self._state(coin) for coin in self.coins()}
            self._history.append((self.height, (books, self._all_pending())))

    # -- generating ---------------------------------------------------------------------------

    def step(self) -> BlockEvents:
        """Generate the next block; the books move to its height."""
        height = self.height + 1
        offset = (height - self.config.start_height) * self._interval_ns
        jitter = int(self._timing.random() * _JITTER * self._interval_ns)
        time_ns = self._start_ns + offset + jitter
        block = BlockEvents(height, time_ns, node_time(time_ns))
        self.exchange.begin_block(block)
        self.traders.step()
        self.named.step()
        self.height = height
        if self.keep:
            last = self._history[-1][1][0]
            touched = block.touched
            books = {c: self._state(c) if c in touched else last[c] for c in self.coins()}
            self._history.append((height, (books, self._all_pending())))
        return block

    # -- reading the books ---------------------------------------------------------------------

    def coins(self) -> list[str]:
        """Every simulated coin, in configuration order."""
        return list(self.exchange.books)

    def book(self, coin: str) -> SimBook:
        """The live matching book of ``coin``."""
        return self.exchange.books[coin]

    def coin_orders(self, coin: str) -> tuple[list[Order], list[Order]]:
        """Bids and asks of ``coin`` now, best first in queue order, as owned copies
        with ``user`` set (as hlbook's books hold them)."""
        bids, asks = self._state(coin)
        return _with_user(bids), _with_user(asks)

    def heights(self) -> list[int]:
        """The heights whose books are kept (see ``history``)."""
        return [height for height, _ in self._history]

    def coin_orders_at(self, height: int, coin: str) -> tuple[list[Order], list[Order]]:
        """Like :meth:`coin_orders`, as of ``height`` (needs ``record_history``)."""
        bids, asks = self._state_at(height)[0][coin]
        return _with_user(bids), _with_user(asks)

    def user_orders(self, user: str, height: int | None = None) -> tuple[list[Order], list[Order]]:
        """``(resting, untriggered trigger orders)`` of ``user``, with ``user`` set.

        As of ``height`` (one of :meth:`heights`), by default now. Resting
        orders are in the books (and in ``fileSnapshot``); trigger orders wait
        outside them until they trigger. Both in the order they were placed.
        """
        user = user.lower()
        if height is None or height == self.height:
            books = self.exchange.books.values()
            resting = [r.order for book in books for r in book.orders.values() if r.user == user]
            markets = self.traders.markets
            pending = [o for m in markets for u, o in m.pending_triggers() if u == user]
        else:
            states, triggers = self._state_at(height)
            resting = [
                order
                for bids, asks in states.values()
                for side in (bids, asks)
                for owner, order in side
                if owner == user
            ]
            pending = [o for entries in triggers.values() for u, o in entries if u == user]
        resting.sort(key=lambda order: order.oid)
        pending.sort(key=lambda order: order.oid)
        return [replace(o, user=user) for o in resting], [replace(o, user=user) for o in pending]

    def market(self, coin: str) -> Market:
        """The traders' state of ``coin`` (its fair price, pending triggers)."""
        return self._markets[coin]

    def snapshot(
        self, *, disagree: bool = False
    ) -> Iterator[tuple[str, SnapshotSide, SnapshotSide]]:
        """Every coin as ``(coin, bids, asks)`` of ``[user, order]`` pairs, node style.

        With ``disagree``, one order's size is off by one lot (a fault for tests).
        """
        states = {coin: self._state(coin) for coin in self.coins()}
        if disagree:
            _alter_one(states, self.exchange)
        for coin, (bids, asks) in states.items():
            yield coin, bids, asks

    def snapshot_bytes(self, *, include_height: bool = True, disagree: bool = False) -> bytes:
        """The node's ``fileSnapshot`` output for the current height."""
        height = self.height if include_height else None
        return encode_snapshot(height, self.snapshot(disagree=disagree))

    def snapshot_bytes_at(self, height: int) -> bytes:
        """The ``fileSnapshot`` output (with height) as of ``height`` (needs ``record_history``)."""
        states = self._state_at(height)[0]
        return encode_snapshot(height, ((coin, b, a) for coin, (b, a) in states.items()))

    def _state(self, coin: str) -> CoinState:
        book = self.exchange.books[coin]
        return _pairs(book, BID), _pairs(book, ASK)

    def _all_pending(self) -> dict[str, Pending]:
        """Every coin's pending trigger orders, re-read only for coins where they changed."""
        out: dict[str, Pending] = {}
        for market in self.traders.markets:
            cached = self._pending.get(market.coin)
            if cached is None or cached[0] != market.trigger_version:
                cached = (market.trigger_version, tuple(market.pending_triggers()))
                self._pending[market.coin] = cached
            out[market.coin] = cached[1]
        return out

    def _state_at(self, height: int) -> State:
        if height == self.height:
            return {coin: self._state(coin) for coin in self.coins()}, self._all_pending()
        for kept, state in self._history:
            if kept == height:
                return state
        raise KeyError(f"no books kept for height {height} (kept: {self.heights()[:1]}…)")


def _alter_one(states: dict[str, CoinState], exchange: Exchange) -> None:
    """Make one order's size wrong by one lot: the first resting order found."""
    for coin, (bids, asks) in states.items():
        for entries in (bids, asks):
            if entries:
                user, order = entries[0]
                lot = parse(exchange.specs[coin].lot)
                entries = list(entries)
                entries[0] = (user, replace(order, sz=fmt(parse(order.sz) + lot)))
                states[coin] = (entries, asks) if order.side == BID else (bids, entries)
                return
