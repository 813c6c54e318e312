"""The simulator's own order book: price-time priority over scaled-int prices.

This is the *exchange's* book, the truth the simulated node writes diffs from;
it is deliberately a separate implementation from :mod:`hlbook.book.l4` (which
rebuilds a book from those diffs), so that tests comparing the two compare
independent code.
"""

import random

from sortedcontainers import SortedDict

from hlbook.node.formats import Order

__all__ = ["ASK", "BID", "Resting", "SimBook"]

BID = "B"
ASK = "A"


class Resting:
    """One resting order.

    ``order`` is the node-style order object (``user`` unset) as the node's
    snapshot shows it; its ``sz`` string is kept equal to ``sz``. Only
    ``pickable`` orders can be chosen at random (by traders canceling or
    modifying): protocol orders and the named users' orders are not.
    """

    __slots__ = ("index", "oid", "order", "pickable", "protocol", "px", "side", "sz", "user")

    def __init__(
        self,
        order: Order,
        user: str,
        px: int,
        sz: int,
        *,
        protocol: bool,
        pickable: bool | None = None,
    ) -> None:
        self.order = order
        self.user = user
        self.oid = order.oid
        self.side = order.side
        self.px = px
        self.sz = sz
        self.protocol = protocol
        self.pickable = not protocol if pickable is None else pickable
        self.index = -1  # position in SimBook._cancellable, -1 if not there


class SimBook:
    """Both sides of one coin, with O(1) random choice of a cancellable order.

    Each side maps a price to a ``dict`` of oid → :class:`Resting` in queue
    order (insertion order; O(1) removal). Protocol orders are not in the
    random-choice index: traders do not cancel them (nor the named users' orders,
    which only their owners cancel).
    """

    __slots__ = ("_best_ask", "_best_bid", "_cancellable", "asks", "bids", "coin", "orders")

    def __init__(self, coin: str) -> None:
        self.coin = coin
        self.bids: SortedDict = SortedDict()
        self.asks: SortedDict = SortedDict()
        self.orders: dict[int, Resting] = {}
        self._cancellable: list[Resting] = []
        # Best prices are read for nearly every order a trader sends; indexing a
        # SortedDict's keys costs microseconds, so they are kept up to date here.
        self._best_bid: int | None = None
        self._best_ask: int | None = None

    def levels(self, side: str) -> SortedDict:
        """The price → queue map of ``side``."""
        return self.bids if side == BID else self.asks

    def best_bid(self) -> int | None:
        """The best bid price, or ``None``."""
        return self._best_bid

    def best_ask(self) -> int | None:
        """The best ask price, or ``None``."""
        return self._best_ask

    def crosses(self, side: str, px: int) -> bool:
        """True if an order of ``side`` at ``px`` would trade against the book."""
        if side == BID:
            ask = self._best_ask
            return ask is not None and px >= ask
        bid = self._best_bid
        return bid is not None and px <= bid

    def add(self, rest: Resting, before: int | None = None) -> None:
        """Rest an order at the back of its level, or directly in front of ``before``."""
        px = rest.px
        if rest.side == BID:
            levels = self.bids
            if self._best_bid is None or px > self._best_bid:
                self._best_bid = px
        else:
            levels = self.asks
            if self._best_ask is None or px < self._best_ask:
                self._best_ask = px
        queue: dict[int, Resting] | None = levels.get(px)
        if queue is None:
            levels[px] = {rest.oid: rest}
        elif before is not None and before in queue:
            rebuilt: dict[int, Resting] = {}
            for oid, other in queue.items():
                if oid == before:
                    rebuilt[rest.oid] = rest
                rebuilt[oid] = other
            levels[px] = rebuilt
        else:
            queue[rest.oid] = rest
        self.orders[rest.oid] = rest
        if rest.pickable:
            rest.index = len(self._cancellable)
            self._cancellable.append(rest)

    def remove(self, rest: Resting) -> None:
        """Take a resting order off the book."""
        px = rest.px
        bid = rest.side == BID
        levels = self.bids if bid else self.asks
        queue: dict[int, Resting] = levels[px]
        del queue[rest.oid]
        if not queue:
            del levels[px]
            if bid:
                if px == self._best_bid:
                    self._best_bid = levels.keys()[-1] if levels else None
            elif px == self._best_ask:
                self._best_ask = levels.keys()[0] if levels else None
        del self.orders[rest.oid]
        index = rest.index
        if index >= 0:
            # Swap-pop keeps removal O(1); the order of the index does not matter.
            last = self._cancellable.pop()
            if last is not rest:
                self._cancellable[index] = last
                last.index = index
            rest.index = -1

    def behind(self, rest: Resting) -> int | None:
        """The oid queued directly behind ``rest`` at its price, or ``None``."""
        queue: dict[int, Resting] = self.levels(rest.side)[rest.px]
        found = False
        for oid in queue:
            if found:
                return oid
            found = oid == rest.oid
        return None

    def cancellable_count(self) -> int:
        """How many orders traders may cancel."""
        return len(self._cancellable)

    def pick(self, rng: random.Random) -> Resting | None:
        """A uniformly random cancellable order, or ``None`` if there is none."""
        pool = self._cancellable
        if not pool:
            return None
        return pool[int(rng.random() * len(pool))]

    def side_orders(self, side: str) -> list[Resting]:
        """Resting orders of ``side``, best price first, queue order within a price."""
        levels = self.levels(side)
        keys = reversed(levels.keys()) if side == BID else iter(levels.keys())
        return [rest for px in keys for rest in levels[px].values()]

    def __len__(self) -> int:
        return len(self.orders)

    def is_crossed(self) -> bool:
        """True if the best bid is at or above the best ask (never, if matching is right)."""
        bid, ask = self.best_bid(), self.best_ask()
        return bid is not None and ask is not None and bid >= ask
