"""Every coin's L4 book, and applying whole blocks to them.

Applying a block is all-or-nothing. It runs in two passes:

1. *plan*: walk the block's diffs against the book plus an overlay of what
   the block itself did so far, checking every diff (unknown oid, duplicate
   ``new``, price/coin/side disagreement, ``origSz`` not equal to the resting
   size) and building the orders that will rest;
2. *commit*: perform the planned mutations, which cannot fail.

A divergence found in pass 1 raises before anything changed, so the book is
exactly as it was before the block. The diffs are the only truth about the
book: hlbook never matches orders itself. Order details (user, tif, cloid, …)
come from the ``open``/``triggered`` status of the same oid in the same block.

Diffs and details in two steps
------------------------------
A block's diffs are often complete well before its statuses (the status
stream is 5–10x larger), and the levels depend on the diffs alone. So a
block can be applied in two steps: :meth:`Books.apply_diffs` puts its new
orders on the book with what the diff says (user, side, px, size; defaults
for the rest) and :meth:`Books.attach_details` later gives each of them the
details of its ``open``/``triggered`` status, with exactly the result
:meth:`Books.apply` gives for the whole block. :attr:`Books.height` is how
far diffs are applied, :attr:`Books.details_height` how far details are
attached; :meth:`Books.details_ready` (per coin) and :meth:`Books.user_ready`
(per user) say whether a view can be built from the books now.
"""

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final, TypeAlias

import attrs
import msgspec
from msgspec import UNSET

from hlbook.book.l4 import ASK, BID, CoinBook, Level
from hlbook.book.resting import Resting, full_order, pack_cloid, shape_of, shared_shapes
from hlbook.errors import (
    BlockOrderError,
    DuplicateOrderError,
    OrderMismatchError,
    SnapshotError,
    UnknownOrderError,
)
from hlbook.model import Block, CoinFilter
from hlbook.node.formats import (
    DiffEvent,
    NewDiff,
    Order,
    SnapshotSide,
    StatusEvent,
    decode_snapshot_coin_chunked,
    decode_snapshot_coin_unchecked,
    iter_snapshot,
    normalize_side,
    time_ms,
)
from hlbook.numbers import FORMATTED, PARSED, canonical, exact, fmt, parse

__all__ = ["WATCHED_USERS", "Applied", "Books"]

WATCHED_USERS = 4096
"""Users whose resting orders are followed (see :meth:`Books.orders_of`)."""

_WHOLE_COIN_BYTES: Final = 1 << 20
"""Snapshot coins up to this size are decoded at once (see :meth:`Books.load`)."""

_NEW: Final = 0
_UPDATE: Final = 1
_REMOVE: Final = 2

_Op: TypeAlias = tuple[int, Resting, int, Any, int, int]
"""(kind, order, scaled px, argument, size, oid): a planned mutation.

``new``: insertBefore and the size; ``update``: the new size and the change;
``remove``: None and the size removed. Sizes are carried so that the commit
never parses again."""

# Bounded: ~16 MB when full of addresses (users are the bulk of it).
_INTERN_LIMIT = 1 << 17
_interned: dict[str, str] = {}


def _intern(text: str) -> str:
    """Share one string object per distinct value (users, tifs, …) to keep books small."""
    found = _interned.get(text)
    if found is not None:
        return found
    if len(_interned) >= _INTERN_LIMIT:
        _interned.clear()
    _interned[text] = text
    return text


class _Sharing:
    """Shares equal values between the orders of one load (then is dropped).

    Sizes and timestamps repeat a lot within a snapshot (mainnet BTC: 8k
    distinct sizes and 23k timestamps for 51k orders) but not enough to keep
    process-wide caches of them; one table per load shares them for free.
    """

    __slots__ = ("numbers", "timestamps")

    def __init__(self) -> None:
        self.numbers: dict[str, tuple[str, int]] = {}
        self.timestamps: dict[int, int] = {}


@attrs.define(eq=False)
class Applied:
    """What applying one block changed.

    ``touched`` maps each coin whose book changed to its :class:`CoinBook`;
    views of other coins are unchanged and need not be recomputed.
    """

    block: Block
    touched: dict[str, CoinBook]


class Books:
    """All coins' L4 books at one height, with an oid index across coins."""

    def __init__(self, height: int = 0, *, coin_filter: CoinFilter | None = None) -> None:
        self.height = height
        """The last block whose diffs are applied (the levels are those of this block)."""
        self.time = 0
        """Block time (ms) of :attr:`height`; 0 until known."""
        self.details_height = height
        """The last block whose statuses are attached: every order from a block up to
        here has its details (tif, cloid, timestamp, …). At most :attr:`height`."""
        self.details_time = 0
        """Block time (ms) of :attr:`details_height`; 0 until known."""
        self.newest_timestamp = 0
        """The newest order ``timestamp`` of the snapshot the books were loaded from (ms):
        no later than the snapshot's block time."""
        self.catch_up_wanted = False
        """Set by :meth:`request_catch_up`; the data path clears it once details caught up."""
        self.coin_filter = coin_filter or CoinFilter()
        self._coins: dict[str, CoinBook] = {}
        self._orders: dict[int, Resting] = {}
        self._accepted: dict[str, bool] = {}
        # Orders put on the book by apply_diffs that still wait for their details:
        # height -> [(oid, order as the diff made it)], oldest first.
        self._undetailed: dict[int, list[tuple[int, Resting]]] = {}
        self._undetailed_users: dict[str, int] = {}
        self._changed_at: dict[str, int] = {}  # coin -> the last height whose diffs changed it
        # The resting oids of users someone asked about (openOrders, orderStatus by cloid):
        # built by one scan on first use, then kept up to date by the commits.
        self._by_user: dict[str, dict[int, None]] = {}

    # -- reading ---------------------------------------------------------------

    def __contains__(self, coin: object) -> bool:
        return coin in self._coins

    def __len__(self) -> int:
        """Number of resting orders across all coins."""
        return len(self._orders)

    def coins(self) -> list[str]:
        """Every coin with a book (including books that are currently empty)."""
        return list(self._coins)

    def book(self, coin: str) -> CoinBook | None:
        """The book of ``coin``, or ``None`` if hlbook has none."""
        return self._coins.get(coin)

    def order(self, oid: int) -> Order | None:
        """The resting order ``oid`` (any coin), or ``None`` (a new object on each call)."""
        record = self._orders.get(oid)
        return None if record is None else full_order(oid, record)

    def accepts(self, coin: str) -> bool:
        """True if the coin filter keeps a book for ``coin``."""
        ok = self._accepted.get(coin)
        if ok is None:
            ok = self._accepted[coin] = self.coin_filter.accepts(coin)
        return ok

    def snapshot(self) -> Iterator[tuple[str, SnapshotSide, SnapshotSide]]:
        """Every book as ``(coin, bids, asks)`` of ``[user, order]`` pairs, node style."""
        for coin in self._coins:
            bids, asks = self.coin_orders(coin)
            yield coin, [(o.user, o) for o in bids], [(o.user, o) for o in asks]  # type: ignore[misc]

    def coin_orders(self, coin: str) -> tuple[list[Order], list[Order]]:
        """Bids and asks of ``coin`` as order lists, best first, queue order (new objects)."""
        book = self._coins[coin]
        return list(book.orders(BID)), list(book.orders(ASK))

    def coin_keys(self, coin: str) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
        """Bids and asks of ``coin`` as ``(oid, scaled px, scaled size)``, best first, queue
        order: what validation compares, without rebuilding the orders."""
        book = self._coins[coin]
        index = self._orders
        sides: list[list[tuple[int, int, int]]] = []
        for side in (BID, ASK):
            keys: list[tuple[int, int, int]] = []
            for level in book.levels(side):
                px = level.px
                keys.extend((oid, px, parse(index[oid].sz)) for oid in level.oids)
            sides.append(keys)
        return sides[0], sides[1]

    def orders_of(self, user: str) -> list[Order]:
        """Every resting order of ``user`` (any coin), newest first.

        The first call for a user scans the books once; from then on the user's
        orders are followed as blocks apply (for the :data:`WATCHED_USERS` most
        recently asked about), so users nobody asks about cost nothing.
        """
        return [full_order(oid, record) for oid, record in self.resting_of(user)]

    def resting_of(self, user: str) -> list[tuple[int, Resting]]:
        """``(oid, record)`` of every resting order of ``user``, newest first, as in
        :meth:`orders_of` but without building the orders (a record's ``sz`` changes in
        place as the order fills; its details, by a new record)."""
        user = user.lower()
        watched = self._by_user
        oids = watched.pop(user, None)
        if oids is None:
            oids = {oid: None for oid, record in self._orders.items() if record.user == user}
            if len(watched) >= WATCHED_USERS:
                del watched[next(iter(watched))]  # the least recently asked about
        watched[user] = oids  # (re)inserted last: most recently asked about
        index = self._orders
        found = [(oid, index[oid]) for oid in oids]
        found.sort(key=lambda item: (item[1].timestamp, item[0]), reverse=True)
        return found

    # -- how far details are attached ---------------------------------------------

    def details_ready(self, coin: str) -> bool:
        """True if ``coin``'s book is complete with details: no diff of a block whose
        statuses are not attached yet has changed it.

        Its book is then the same at :attr:`details_height` and at :attr:`height`,
        and every order in it has its details: an ``l4Book`` snapshot can be built
        now and labelled :attr:`details_height` (updates of later blocks follow).
        """
        return self._changed_at.get(coin, -1) <= self.details_height

    def user_ready(self, user: str) -> bool:
        """True if no resting order of ``user`` waits for its details (an ``openOrders``
        answer built now has every field)."""
        return user not in self._undetailed_users

    def undetailed_coins(self) -> set[str]:
        """Coins for which :meth:`details_ready` is false."""
        floor = self.details_height
        return {coin for coin, height in self._changed_at.items() if height > floor}

    def undetailed_users(self) -> set[str]:
        """Users for which :meth:`user_ready` is false."""
        return set(self._undetailed_users)

    def request_catch_up(self) -> None:
        """Ask the data path to let details catch up with the diffs soon.

        While the diff stream runs ahead, a busy coin may never be
        :meth:`details_ready`. After this call the data path holds the next
        diffs back (briefly, bounded) until every applied block has its
        statuses attached, then publishes that block's
        :attr:`~hlbook.stages.Stage.STATUSES` with ``details_height == height``
        and clears :attr:`catch_up_wanted`.
        """
        self.catch_up_wanted = True

    # -- loading ---------------------------------------------------------------

    @classmethod
    def from_snapshot(
        cls,
        height: int,
        coins: Iterable[tuple[str, SnapshotSide, SnapshotSide]],
        *,
        coin_filter: CoinFilter | None = None,
        progress: Callable[[int, str], None] | None = None,
    ) -> "Books":
        """Build books from a node snapshot at ``height``.

        ``coins`` yields ``(coin, bids, asks)``; ``progress`` is called with the
        number of coins loaded so far and the latest coin.
        """
        books = cls(height, coin_filter=coin_filter)
        sharing = _Sharing()
        for count, (coin, bids, asks) in enumerate(coins, 1):
            if books.accepts(coin):
                books.set_coin(coin, bids, asks, sharing=sharing)
            if progress is not None:
                progress(count, coin)
        books.newest_timestamp = max(sharing.timestamps, default=0)
        return books

    @classmethod
    def load(
        cls,
        data: bytes,
        *,
        height: int | None = None,
        coin_filter: CoinFilter | None = None,
        progress: Callable[[int, str], None] | None = None,
    ) -> "Books":
        """Build books from ``fileSnapshot`` output bytes (see :func:`iter_snapshot`).

        Coins the filter drops are never decoded; big coins are decoded a
        chunk of orders at a time as they are stored, which keeps memory compact.
        """
        found, raw_coins = iter_snapshot(data, height)
        books = cls(found, coin_filter=coin_filter)
        sharing = _Sharing()
        for count, (coin, raw) in enumerate(raw_coins, 1):
            if books.accepts(coin):
                # One decode per coin is fastest, but a big coin's transient orders
                # would be interleaved with its records and fragment memory (mainnet
                # BTC: 1.4 kB instead of ~0.5 kB per order): those are decoded a
                # chunk at a time, each chunk's garbage reused by the next.
                sides: tuple[Iterable[tuple[str, Order]], Iterable[tuple[str, Order]]] = (
                    decode_snapshot_coin_chunked(coin, raw)
                    if len(raw) > _WHOLE_COIN_BYTES
                    else decode_snapshot_coin_unchecked(coin, raw)
                )
                books.set_coin(coin, *sides, sharing=sharing)
            if progress is not None:
                progress(count, coin)
        books.newest_timestamp = max(sharing.timestamps, default=0)
        return books

    def set_coin(
        self,
        coin: str,
        bids: Iterable[tuple[str, Order]],
        asks: Iterable[tuple[str, Order]],
        *,
        sharing: _Sharing | None = None,
    ) -> CoinBook:
        """Replace ``coin``'s book by the given snapshot sides (used to load and to repair).

        All or nothing: on an error (a duplicate oid, a bad number) the books
        are unchanged. The given orders are not kept: the books keep records of them.
        """
        sharing = sharing or _Sharing()
        coin = _intern(coin)
        index = self._orders
        old = self._coins.get(coin)
        old_oids = (
            set()
            if old is None
            else {
                oid
                for levels in (old.bids, old.asks)
                for level in levels.values()
                for oid in level.oids
            }
        )
        book = CoinBook(coin, index)
        # A coin the books do not hold yet (every coin of a bootstrap) goes straight
        # into the index, taken out again on an error; a repair collects its records
        # apart, as the old ones stay until the new book is complete.
        fresh = old is None
        added: dict[int, Resting] = index if fresh else {}
        try:
            self._load_sides(coin, book, bids, asks, added, old_oids, sharing)
        except BaseException:
            if fresh:  # every record of this coin is one just added (rare: scan them all)
                for oid in [oid for oid, record in index.items() if record.coin == coin]:
                    del index[oid]
            raise
        if not fresh:
            for oid in old_oids:
                del index[oid]
            index.update(added)
        self._coins[coin] = book
        self._by_user.clear()  # rebuilt on the next question: loads and repairs are rare
        return book

    def _load_sides(
        self,
        coin: str,
        book: CoinBook,
        bids: Iterable[tuple[str, Order]],
        asks: Iterable[tuple[str, Order]],
        added: dict[int, Resting],
        old_oids: set[int],
        sharing: _Sharing,
    ) -> None:
        """Put snapshot sides on ``book`` and their records in ``added`` (see set_coin).

        The loop of a bootstrap (~10^6 orders): everything is inlined.
        """
        index = self._orders
        numbers = sharing.numbers
        timestamps = sharing.timestamps
        interned = _interned
        shapes = shared_shapes
        height = self.height
        repair = added is not index  # else ``oid in added`` covers the index
        for entries, levels, want in ((bids, book.bids, BID), (asks, book.asks, ASK)):
            level: Level | None = None
            new_levels: dict[int, Level] = {}  # into the SortedDict at once: one sort
            for user, order in entries:
                oid = order.oid
                try:
                    if order.side != want and normalize_side(order.side) != want:
                        raise ValueError(f"side {order.side!r} among {want}")
                    text = order.limitPx
                    if (number := numbers.get(text)) is None:
                        number = numbers[text] = exact(text)
                    limit_px, px = number
                    text = order.sz
                    if (number := numbers.get(text)) is None:
                        number = numbers[text] = exact(text)
                    sz, size = number
                    text = order.origSz
                    if (number := numbers.get(text)) is None:
                        number = numbers[text] = exact(text)
                except ValueError as exc:  # NumberError is a ValueError
                    raise SnapshotError(f"coin {coin}: order {oid}: {exc}") from None
                # shape_of, inlined for the shared shapes
                shape = None
                if not order.children:
                    shape = shapes.get(
                        (
                            want,
                            order.triggerCondition,
                            order.isTrigger,
                            order.triggerPx,
                            order.isPositionTpsl,
                            order.reduceOnly,
                            order.orderType,
                            order.tif,
                        )
                    )
                if shape is None:
                    shape = shape_of(order, want)
                cloid = order.cloid
                timestamp = order.timestamp
                record = Resting(
                    interned.get(user) or _intern(user),
                    coin,
                    limit_px,
                    sz,
                    timestamps.setdefault(timestamp, timestamp),
                    number[0],
                    None if cloid is None else pack_cloid(cloid),
                    shape,
                )
                if oid in added or (repair and oid in index and oid not in old_oids):
                    raise DuplicateOrderError(
                        "oid rests twice in the snapshot", height=height, coin=coin, oid=oid
                    )
                if level is None or level.px != px:
                    level = new_levels.get(px)
                    if level is None:
                        level = new_levels[px] = Level(px, limit_px)
                level.oids.append(oid)  # Level.append, inlined (the level is new: no view)
                level.total += size
                added[oid] = record
            levels.update(new_levels)

    # -- applying blocks ---------------------------------------------------------

    def apply(self, block: Block) -> Applied:
        """Apply one whole block, or raise a :class:`~hlbook.errors.DivergenceError`
        and leave every book exactly as it was."""
        applied = self.apply_diffs(block, statuses_final=True)
        self.attach_details(block)
        return applied

    def apply_diffs(self, block: Block, *, statuses_final: bool = False) -> Applied:
        """Apply ``block``'s diffs (all or nothing, like :meth:`apply`).

        With ``statuses_final`` the block's statuses are complete and new
        orders get their details at once; otherwise they rest with what the
        diff says until :meth:`attach_details` of this block. A ``new`` diff
        without a side needs its status: such a block must be applied with
        ``statuses_final`` (else it is an :class:`~hlbook.errors.OrderMismatchError`).
        ``touched`` holds the coins whose levels changed.
        """
        height = block.height
        if height <= self.height:
            raise BlockOrderError(
                f"block is not after the book's height {self.height}", height=height
            )
        ops = self._plan(block, statuses_final)
        touched = self._commit(ops)
        self.height = height
        self.time = block.time
        changed = self._changed_at
        for coin in touched:
            changed[coin] = height
        if not statuses_final:
            waiting = [(op[5], op[1]) for op in ops if op[0] == _NEW]
            if waiting:
                self._undetailed[height] = waiting
                users = self._undetailed_users
                for _oid, order in waiting:
                    user = order.user
                    users[user] = users.get(user, 0) + 1
        return Applied(block, touched)

    def attach_details(self, block: Block) -> Applied:
        """Attach the details of ``block``'s statuses to the orders its diffs created.

        ``block`` must be after :attr:`details_height` and at most :attr:`height`
        (its diffs applied). Orders removed or replaced since are skipped.
        ``touched`` holds the coins whose orders got details.
        """
        height = block.height
        if height > self.height:
            raise BlockOrderError(
                f"statuses before their diffs (diffs applied up to {self.height})", height=height
            )
        if height <= self.details_height:
            raise BlockOrderError(
                f"statuses already attached up to {self.details_height}", height=height
            )
        touched: dict[str, CoinBook] = {}
        pending = self._undetailed
        while pending:
            first = next(iter(pending))
            if first > height:
                break
            entries = pending.pop(first)
            details = _book_statuses(block.statuses) if first == height else {}
            self._attach(entries, details, touched)
        self.details_height = height
        self.details_time = block.time
        return Applied(block, touched)

    def _attach(
        self,
        entries: list[tuple[int, Resting]],
        details: "dict[int, _Detail]",
        touched: dict[str, CoinBook],
    ) -> None:
        index = self._orders
        users = self._undetailed_users
        for oid, order in entries:
            user = order.user
            left = users[user] - 1
            if left:
                users[user] = left
            else:
                del users[user]
            detail = details.get(oid)
            if detail is None or index.get(oid) is not order:
                continue  # no status (rests from its diff), or no longer resting
            index[oid] = _with_details(
                detail, order.coin, order.shape.side, order.limitPx, order.sz
            )
            touched[order.coin] = self._coins[order.coin]

    def _plan(self, block: Block, statuses_final: bool = True) -> list[_Op]:
        # The hot loop of every block (~400 diffs a mainnet block, on the way to l2Book):
        # names bound locally, the common cases first, the checks inline.
        height = block.height
        index_get = self._orders.get
        accepts = None if self.coin_filter.everything else self.accepts
        details: dict[int, _Detail] | None = None if statuses_final else {}
        ops: list[_Op] = []
        append = ops.append
        number = PARSED.get
        text = FORMATTED.get
        interned = _interned.get
        bare = _BARE
        # The block's own effect so far: oid -> (order, size) or None once removed.
        overlay: dict[int, tuple[Resting, int] | None] = {}
        for event in block.diffs:
            coin = event.coin
            if accepts is not None and not accepts(coin):
                continue
            oid = event.oid
            if oid in overlay:
                current = overlay[oid]
            else:
                resting = index_get(oid)
                if resting is None:
                    current = None
                else:
                    size = number(resting.sz)
                    current = (resting, parse(resting.sz) if size is None else size)
            px_text = event.px
            px = number(px_text)
            if px is None:
                px = parse(px_text)
            raw = event.raw_book_diff
            if raw.__class__ is str:  # "remove"
                if current is None:
                    raise UnknownOrderError(
                        "remove of an order that is not resting", height=height, coin=coin, oid=oid
                    )
                order = current[0]
                if (
                    order.coin != coin
                    or (order.limitPx != px_text and parse(order.limitPx) != px)
                    or (event.side is not UNSET and event.side != order.shape.side)
                ):
                    _check_same(order, event, px, height)
                append((_REMOVE, order, px, None, current[1], oid))
                overlay[oid] = None
                continue
            new = raw.new  # type: ignore[union-attr]
            if new is not UNSET:
                if current is not None:
                    raise DuplicateOrderError(
                        "new of an order that is already resting",
                        height=height,
                        coin=coin,
                        oid=oid,
                    )
                if details is None:
                    details = _book_statuses(block.statuses)
                detail = details.get(oid)
                side = event.side
                if detail is None and side is not UNSET:
                    # It rests from its diff alone (the diffs' stage, before the statuses):
                    # _resting_order without a detail, inlined.
                    size = number(new.sz)
                    if size is None:
                        size = parse(new.sz)
                    sz = text(size) or fmt(size)
                    order = Resting(
                        interned(event.user) or _intern(event.user),
                        interned(coin) or _intern(coin),
                        text(px) or fmt(px),
                        sz,
                        block.time,
                        sz,
                        None,
                        bare[side],
                    )
                else:
                    order, size = _resting_order(event, new, detail, px, block)
                append((_NEW, order, px, new.insertBefore, size, oid))
                overlay[oid] = (order, size)
                continue
            update = raw.update  # type: ignore[union-attr]
            assert update is not UNSET  # decode_line checked: exactly one kind
            if current is None:
                raise UnknownOrderError(
                    "update of an order that is not resting", height=height, coin=coin, oid=oid
                )
            order, size = current
            _check_same(order, event, px, height)
            if parse(update.origSz) != size:
                raise OrderMismatchError(
                    f"update origSz {update.origSz} but the order rests with {fmt(size)}",
                    height=height,
                    coin=coin,
                    oid=oid,
                )
            new_size = parse(update.newSz)
            append((_UPDATE, order, px, new_size, new_size - size, oid))
            overlay[oid] = (order, new_size)
        return ops

    def _commit(self, ops: list[_Op]) -> dict[str, CoinBook]:
        coins = self._coins
        index = self._orders
        watched = self._by_user
        touched: dict[str, CoinBook] = {}
        # The last op's coin and book: a block's diffs come grouped by coin.
        coin = ""
        book: CoinBook | None = None
        for kind, order, px, arg, size, oid in ops:
            if order.coin != coin or book is None:
                coin = order.coin
                book = coins.get(coin)
                if book is None:
                    book = coins[coin] = CoinBook(coin, index)
                touched[coin] = book
            side = order.shape.side
            levels = book.bids if side == BID else book.asks
            if kind == _NEW:
                level = levels.get(px)
                if level is None:
                    level = levels[px] = Level(px, order.limitPx)
                if arg is UNSET or arg is None:
                    level.oids.append(oid)  # Level.append, inlined
                    level.total += size
                    level._view = None
                else:
                    level.insert_before(arg, oid, size)
                index[oid] = order
                book.changed(side, px, size, 1)
                if watched and (oids := watched.get(order.user)) is not None:
                    oids[oid] = None
            elif kind == _UPDATE:
                levels[px].resize(size)
                order.sz = fmt(arg)
                book.changed(side, px, size, 0)
            else:
                level = levels[px]
                level.oids.remove(oid)  # Level.remove, inlined
                level.total -= size
                level._view = None
                if not level.oids:
                    del levels[px]
                del index[oid]
                book.changed(side, px, -size, -1)
                if watched and (oids := watched.get(order.user)) is not None:
                    oids.pop(oid, None)
        return touched


def _check_same(order: Resting, event: DiffEvent, px: int, height: int) -> None:
    """The diff must name the resting order where it rests."""
    if order.coin != event.coin:
        reason = f"diff for coin {event.coin} but the order rests on {order.coin}"
    elif order.limitPx != event.px and parse(order.limitPx) != px:
        reason = f"diff at px {event.px} but the order rests at {order.limitPx}"
    elif event.side is not UNSET and event.side != order.shape.side:
        reason = f"diff on side {event.side} but the order rests on side {order.shape.side}"
    else:
        return
    raise OrderMismatchError(reason, height=height, coin=event.coin, oid=event.oid)


_Detail: TypeAlias = tuple[StatusEvent, Order]


def _book_statuses(statuses: list[StatusEvent]) -> dict[int, _Detail]:
    """oid -> the status that put it on the book, with its order (``triggered`` wins)."""
    found: dict[int, _Detail] = {}
    for event in statuses:
        status = event.status
        if status == "open" or status == "triggered":
            order = event.parsed_order()
            if status == "triggered" or order.oid not in found:
                found[order.oid] = (event, order)
    return found


def _resting_order(
    event: DiffEvent, new: NewDiff, detail: _Detail | None, px: int, block: Block
) -> tuple[Resting, int]:
    """The order a ``new`` diff puts on the book (details from its status), and its size."""
    side = event.side if event.side is not UNSET else None
    if side is None:
        side = normalize_side(detail[1].side) if detail is not None else None
        if side is None:
            raise OrderMismatchError(
                "new diff has no side and no status to take it from",
                height=block.height,
                coin=event.coin,
                oid=event.oid,
            )
    px_str = fmt(px)
    size = parse(new.sz)
    sz = fmt(size)
    coin = _intern(event.coin)
    if detail is None:
        # Orders without a status (some protocol addresses) rest from the diff alone.
        return Resting(
            _intern(event.user), coin, px_str, sz, block.time, sz, None, _BARE[side]
        ), size
    return _with_details(detail, coin, side, px_str, sz), size


_BARE: Final = {
    side: shape_of(Order(coin="", side=side, limitPx="", sz="", oid=0, timestamp=0), side)
    for side in (BID, ASK)
}
"""The details of an order that rests from its diff alone (the node's defaults)."""


def _with_details(detail: _Detail, coin: str, side: str, px: str, sz: str) -> Resting:
    """The resting order with its status's details, at the diff's coin, side, px and size."""
    status, order = detail
    timestamp = order.timestamp
    if status.status == "triggered":
        # A triggered order rests at the diff's px as a plain GTC limit order. (The
        # status's order is shared by repeats of the oid in a block: it is not modified.)
        order = msgspec.structs.replace(
            order, isTrigger=False, triggerCondition="Triggered", tif="Gtc"
        )
        timestamp = time_ms(status.time)
    return Resting(
        _intern(status.user),
        coin,
        px,
        sz,
        timestamp,
        canonical(order.origSz),
        pack_cloid(order.cloid),
        shape_of(order, side),
    )
