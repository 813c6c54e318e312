"""The simulated exchange: a price-time matching engine that writes node events.

Every operation changes the books and appends, in the order the node would
write them, the status, raw-book-diff and fill events it causes to the current
block (:class:`BlockEvents`). Prices and sizes are integers scaled by
``10**12`` (:mod:`hlbook.numbers`); strings are made with :func:`fmt` only for
output.

Order objects are immutable by convention: a resting order's :class:`Order`
is replaced, never mutated, when its size changes. A status event can then
share the object with the book, and the history of books is a list of
references.
"""

import random
from collections import deque

import attrs
from msgspec import UNSET
from msgspec.structs import replace

from hlbook.node.formats import (
    DiffEvent,
    Fill,
    FillEvent,
    NewDiff,
    Order,
    RawDiff,
    StatusEvent,
    UpdateDiff,
    status_event,
)
from hlbook.numbers import SCALE, fmt, parse
from hlbook.sim.book import BID, Resting, SimBook
from hlbook.sim.config import CoinSpec

__all__ = ["PROTOCOL_USER", "BlockEvents", "CoinStats", "Exchange"]

PROTOCOL_USER = "0xffffffffffffffffffffffffffffffffffffffff"
"""Owner of protocol liquidity; the node writes no status lines for its orders."""

_ZERO_HASH = "0x" + "0" * 64
_TAKER_FEE = 450  # per million of notional (0.045%)
_MAKER_FEE = -30  # a rebate (-0.003%)
_FEE_QUANTUM = 10**6  # fees have six decimals: 10**12 / 10**6
_TID_MULTIPLIER = 0x9E3779B97F4A7C15  # odd, so tid = n * M mod 2**50 never repeats
_TID_MASK = (1 << 50) - 1
_MINUTE_MS = 60_000
_DAY_MS = 86_400_000


@attrs.define(eq=False)
class BlockEvents:
    """Everything one block wrote, as the node's own event structs."""

    height: int
    time_ns: int
    """Block time in nanoseconds since the epoch."""
    time: str
    """Block time as the node writes it (naive UTC, nanoseconds)."""
    statuses: list[StatusEvent] = attrs.field(factory=list)
    diffs: list[DiffEvent] = attrs.field(factory=list)
    fills: list[FillEvent] = attrs.field(factory=list)
    touched: set[str] = attrs.field(factory=set)
    """Coins whose book changed."""

    @property
    def time_ms(self) -> int:
        """Block time in integer milliseconds since the epoch."""
        return self.time_ns // 1_000_000


class CoinStats:
    """One coin's trading so far: last trade price, open interest, volume over a day.

    Volume is kept per minute of block time, so a day costs at most 1,441
    buckets whatever the trade rate.
    """

    __slots__ = ("_minutes", "last_px", "open_interest")

    def __init__(self) -> None:
        self.last_px: int | None = None
        """Price of the last trade (scaled), ``None`` before the first."""
        self.open_interest = 0
        """Sum of all long positions (perps; scaled size)."""
        # [minute, notional, base volume, last price in that minute], oldest first; the
        # first bucket may be older than a day: it holds the price a day ago.
        self._minutes: deque[list[int]] = deque()

    def trade(self, time_ms: int, px: int, sz: int) -> None:
        """Count one trade of ``sz`` at ``px`` at block time ``time_ms``."""
        minute = time_ms // _MINUTE_MS
        minutes = self._minutes
        notional = px * sz // SCALE
        if minutes and minutes[-1][0] == minute:
            bucket = minutes[-1]
            bucket[1] += notional
            bucket[2] += sz
            bucket[3] = px
        else:
            minutes.append([minute, notional, sz, px])
            start = (time_ms - _DAY_MS) // _MINUTE_MS
            while len(minutes) > 1 and minutes[1][0] <= start:
                minutes.popleft()
        self.last_px = px

    def day(self, now_ms: int) -> tuple[int, int, int | None]:
        """``(notional, base volume, price a day ago)`` for the day before ``now_ms``.

        The price a day ago is that of the last trade at least a day old, or
        ``None`` if there is none.
        """
        start = (now_ms - _DAY_MS) // _MINUTE_MS
        notional = volume = 0
        before: int | None = None
        for minute, ntl, base, last in self._minutes:
            if minute <= start:
                before = last
            else:
                notional += ntl
                volume += base
        return notional, volume, before


class Exchange:
    """All coins' books, and the operations traders perform on them.

    ``managed`` users (the named users of :mod:`hlbook.sim.users`) decide
    themselves when their orders are canceled: their orders are never picked
    at random, and :attr:`resting_of` indexes their resting orders.
    """

    def __init__(
        self,
        specs: list[CoinSpec],
        rng: random.Random,
        *,
        first_oid: int,
        managed: frozenset[str] = frozenset(),
    ) -> None:
        self.rng = rng
        self.specs = {spec.name: spec for spec in specs}
        self.books = {spec.name: SimBook(spec.name) for spec in specs}
        self.stats = {spec.name: CoinStats() for spec in specs}
        self.managed = managed
        self.resting_of: dict[str, dict[int, Resting]] = {user: {} for user in managed}
        """Resting orders of each managed user, by oid, in the order they were placed."""
        self._spot = {spec.name: spec.market == "spot" for spec in specs}
        self._next_oid = first_oid
        self._trades = rng.getrandbits(40)
        self.positions: dict[tuple[str, str], int] = {}
        """Each ``(user, coin)``'s position (perps) or balance change (spot), scaled."""
        self.block = BlockEvents(0, 0, "")
        self.time_ms = 0

    # -- blocks ------------------------------------------------------------------

    def begin_block(self, block: BlockEvents) -> None:
        """Start collecting the events of ``block``."""
        self.block = block
        self.time_ms = block.time_ns // 1_000_000

    def next_oid(self) -> int:
        """A fresh order id (ids only grow, like the node's)."""
        oid = self._next_oid
        self._next_oid = oid + 1
        return oid

    # -- orders ------------------------------------------------------------------

    def new_order(
        self,
        coin: str,
        side: str,
        px: int,
        sz: int,
        *,
        tif: str | None,
        reduce_only: bool = False,
        cloid: str | None = None,
        order_type: str = "Limit",
        trigger_px: int = 0,
        trigger_condition: str = "N/A",
    ) -> Order:
        """A new order object, stamped with the block time and a fresh oid."""
        size = fmt(sz)
        return Order(
            coin=coin,
            side=side,
            limitPx=fmt(px),
            sz=size,
            oid=self.next_oid(),
            timestamp=self.time_ms,
            triggerCondition=trigger_condition,
            isTrigger=trigger_condition != "N/A",
            triggerPx=fmt(trigger_px) if trigger_px else "0.0",
            reduceOnly=reduce_only,
            orderType=order_type,
            origSz=size,
            tif=tif,
            cloid=cloid,
        )

    def status(self, user: str, order: Order, status: str, tx_hash: str | None = None) -> None:
        """Write one status line event (a rejection needs nothing else)."""
        self.block.statuses.append(
            status_event(time=self.block.time, user=user, hash=tx_hash, status=status, order=order)
        )

    def submit(self, user: str, order: Order, px: int, sz: int) -> Resting | None:
        """Place a limit order (tif ``Alo``, ``Gtc`` or ``Ioc``).

        ALO orders that would cross are rejected (``badAloPxRejected``); IOC
        orders that cannot trade at all are rejected (``iocCancelRejected``).
        Otherwise the order is ``open``, trades what crosses, and then is
        ``filled``, ``canceled`` (IOC remainder) or rests. Returns the resting
        order, if any.
        """
        book = self.books[order.coin]
        crosses = book.crosses(order.side, px)
        tif = order.tif
        if tif == "Alo" and crosses:
            self.status(user, order, "badAloPxRejected")
            return None
        if tif == "Ioc" and not crosses:
            self.status(user, order, "iocCancelRejected")
            return None
        tx_hash = self.tx_hash()
        self.status(user, order, "open", tx_hash)
        left = sz
        if crosses:
            left = self._match(book, user, order, px, sz, tx_hash)
        if left == 0:
            self.status(user, replace(order, sz="0.0"), "filled")
            return None
        if tif == "Ioc":
            self.status(user, replace(order, sz=fmt(left)), "canceled")
            return None
        resting = order if left == sz else replace(order, sz=fmt(left))
        return self._rest(book, user, resting, px, left)

    def trigger(self, user: str, order: Order, px: int) -> Resting | None:
        """A trigger order triggers: it trades as a GTC limit at ``px`` and rests the rest.

        The ``triggered`` status carries the trigger order as placed (its
        ``limitPx`` may differ from ``px``); the resting order is what the
        node's snapshot shows: a plain GTC limit at ``px``.
        """
        book = self.books[order.coin]
        self.status(user, order, "triggered")
        sz = parse(order.sz)
        left = sz
        if book.crosses(order.side, px):
            left = self._match(book, user, order, px, sz, self.tx_hash())
        if left == 0:
            self.status(user, replace(order, sz="0.0"), "filled")
            return None
        resting = replace(
            order,
            limitPx=fmt(px),
            sz=fmt(left),
            isTrigger=False,
            triggerCondition="Triggered",
            tif="Gtc",
            timestamp=self.time_ms,
        )
        return self._rest(book, user, resting, px, left)

    def cancel(self, rest: Resting, status: str = "canceled") -> None:
        """Take a trader's resting order off the book (``canceled``, ``reduceOnlyCanceled``…)."""
        book = self.books[rest.order.coin]
        book.remove(rest)
        self._unindex(rest)
        self.status(rest.user, rest.order, status)
        self._diff(rest, "remove")

    def modify(self, rest: Resting, px: int, sz: int, *, keep_place: bool) -> Resting | None:
        """Cancel/replace a resting order with a new oid at ``px`` for ``sz``.

        With ``keep_place`` (same price) the new order takes the old one's
        place in the queue: its ``new`` diff names the order behind it in
        ``insertBefore``. A new price that would cross is not placed.
        """
        book = self.books[rest.order.coin]
        before = book.behind(rest) if keep_place and px == rest.px else None
        self.cancel(rest)
        if book.crosses(rest.side, px):
            return None
        old = rest.order
        order = self.new_order(
            old.coin,
            old.side,
            px,
            sz,
            tif=old.tif,
            reduce_only=old.reduceOnly,
            cloid=old.cloid,
        )
        self.status(rest.user, order, "open", self.tx_hash())
        return self._rest(book, rest.user, order, px, sz, before)

    def twap(self, user: str, coin: str, side: str, px: int, sz: int, twap_id: int) -> None:
        """A TWAP slice: trades like an IOC order but writes fills only, no status."""
        book = self.books[coin]
        if not book.crosses(side, px):
            return
        order = Order(
            coin=coin, side=side, limitPx=fmt(px), sz=fmt(sz), oid=self.next_oid(), timestamp=0
        )
        self._match(book, user, order, px, sz, _ZERO_HASH, twap_id)

    def protocol_place(self, coin: str, side: str, px: int, sz: int) -> Resting | None:
        """Rest a protocol order (no status line; the node's snapshot shows defaults)."""
        book = self.books[coin]
        if book.crosses(side, px):
            return None
        size = fmt(sz)
        order = Order(
            coin=coin,
            side=side,
            limitPx=fmt(px),
            sz=size,
            oid=self.next_oid(),
            timestamp=self.time_ms,
            origSz=size,
        )
        return self._rest(book, PROTOCOL_USER, order, px, sz, protocol=True)

    def protocol_remove(self, rest: Resting) -> None:
        """Take a protocol order off the book (no status line)."""
        self.books[rest.order.coin].remove(rest)
        self._diff(rest, "remove")

    # -- internals ----------------------------------------------------------------

    def tx_hash(self) -> str:
        """A fresh random transaction hash."""
        return f"0x{self.rng.getrandbits(256):064x}"

    def _rest(
        self,
        book: SimBook,
        user: str,
        order: Order,
        px: int,
        sz: int,
        before: int | None = None,
        *,
        protocol: bool = False,
    ) -> Resting:
        managed = user in self.managed
        rest = Resting(order, user, px, sz, protocol=protocol, pickable=not (protocol or managed))
        book.add(rest, before)
        if managed:
            self.resting_of[user][rest.oid] = rest
        new = NewDiff(sz=order.sz) if before is None else NewDiff(sz=order.sz, insertBefore=before)
        self._diff(rest, RawDiff(new=new))
        return rest

    def _unindex(self, rest: Resting) -> None:
        if rest.user in self.managed:
            del self.resting_of[rest.user][rest.oid]

    def _diff(self, rest: Resting, raw: RawDiff | str) -> None:
        order = rest.order
        self.block.diffs.append(
            DiffEvent(
                user=rest.user,
                oid=rest.oid,
                coin=order.coin,
                side=order.side,
                px=order.limitPx,
                raw_book_diff=raw,  # type: ignore[arg-type]
            )
        )
        self.block.touched.add(order.coin)

    def _match(
        self,
        book: SimBook,
        user: str,
        order: Order,
        limit: int,
        sz: int,
        tx_hash: str,
        twap_id: int | None = None,
    ) -> int:
        """Trade ``sz`` of ``order`` against the book up to ``limit``; return what is left."""
        buying = order.side == BID
        levels = book.asks if buying else book.bids
        left = sz
        while left and levels:
            px, queue = levels.peekitem(0 if buying else -1)
            if (px > limit) if buying else (px < limit):
                break
            for maker in list(queue.values()):
                if maker.user == user:
                    # Self-trade prevention: the resting order is canceled, the taker goes on.
                    book.remove(maker)
                    self._unindex(maker)
                    self.status(maker.user, maker.order, "selfTradeCanceled")
                    self._diff(maker, "remove")
                    continue
                size = left if left < maker.sz else maker.sz
                self._trade(user, order, maker, px, size, tx_hash, twap_id)
                left -= size
                if size == maker.sz:
                    book.remove(maker)
                    self._unindex(maker)
                    self._diff(maker, "remove")
                    if not maker.protocol:
                        self.status(maker.user, replace(maker.order, sz="0.0"), "filled")
                else:
                    new_size = maker.sz - size
                    update = UpdateDiff(origSz=maker.order.sz, newSz=fmt(new_size))
                    maker.sz = new_size
                    maker.order = replace(maker.order, sz=update.newSz)
                    self._diff(maker, RawDiff(update=update))
                if not left:
                    break
        return left

    def _trade(
        self,
        user: str,
        order: Order,
        maker: Resting,
        px: int,
        sz: int,
        tx_hash: str,
        twap_id: int | None,
    ) -> None:
        """Two fills sharing a tid, buyer first; ``crossed`` marks the taker."""
        self._trades += 1
        tid = (self._trades * _TID_MULTIPLIER) & _TID_MASK
        self.stats[order.coin].trade(self.time_ms, px, sz)
        notional = px * sz // SCALE
        taker = self._fill(user, order.coin, order.side, px, sz, order.oid, True, tid, tx_hash)
        taker.fee = fmt(_fee(notional, _TAKER_FEE))
        taker.cloid = UNSET if order.cloid is None else order.cloid
        taker.twapId = twap_id
        made = maker.order
        other = self._fill(maker.user, made.coin, made.side, px, sz, maker.oid, False, tid, tx_hash)
        other.fee = fmt(_fee(notional, _MAKER_FEE))
        other.cloid = UNSET if made.cloid is None else made.cloid
        pair = ((user, taker), (maker.user, other))
        self.block.fills.extend(pair if order.side == BID else pair[::-1])

    def _fill(
        self,
        user: str,
        coin: str,
        side: str,
        px: int,
        sz: int,
        oid: int,
        crossed: bool,
        tid: int,
        tx_hash: str,
    ) -> Fill:
        key = (user, coin)
        start = self.positions.get(key, 0)
        end = start + sz if side == BID else start - sz
        self.positions[key] = end
        if self._spot[coin]:
            direction = "Buy" if side == BID else "Sell"
        else:
            self.stats[coin].open_interest += max(end, 0) - max(start, 0)
            if side == BID:
                direction = "Close Short" if start < 0 else "Open Long"
            else:
                direction = "Close Long" if start > 0 else "Open Short"
        return Fill(
            coin=coin,
            px=fmt(px),
            sz=fmt(sz),
            side=side,
            time=self.time_ms,
            startPosition=fmt(start),
            dir=direction,
            hash=tx_hash,
            oid=oid,
            crossed=crossed,
            tid=tid,
            twapId=None,
        )


def _fee(notional: int, per_million: int) -> int:
    """Fee in scaled units, rounded toward zero to six decimals."""
    fee = abs(notional) * abs(per_million) // 1_000_000
    fee -= fee % _FEE_QUANTUM
    return -fee if per_million < 0 else fee
