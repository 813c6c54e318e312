"""Trades from a block's fills.

The node writes two fills per trade (buyer and seller) sharing a ``tid``;
``crossed: true`` marks the taker, whose side is the trade's side.
"""

import msgspec

from hlbook.node.formats import Fill, FillEvent
from hlbook.numbers import canonical

__all__ = ["Trade", "trades_by_coin"]


class Trade(msgspec.Struct, kw_only=True, gc=False):
    """A trade as served on the ``trades`` channel. ``users`` is ``[buyer, seller]``."""

    coin: str
    side: str
    px: str
    sz: str
    hash: str
    time: int
    tid: int
    users: tuple[str, str]


def _trade(fills: list[tuple[str, Fill]]) -> Trade:
    buyer = seller = ""
    taker: Fill | None = None
    for user, fill in fills:
        if fill.side == "B":
            buyer = buyer or user
        else:
            seller = seller or user
        if fill.crossed and taker is None:
            taker = fill
    if taker is None:
        taker = fills[0][1]
    return Trade(
        coin=taker.coin,
        side=taker.side,
        px=canonical(taker.px),
        sz=canonical(taker.sz),
        hash=taker.hash,
        time=taker.time,
        tid=taker.tid,
        users=(buyer, seller),
    )


def trades_by_coin(fills: list[FillEvent]) -> dict[str, list[Trade]]:
    """Pair fills by ``tid`` into trades, grouped by coin, in the node's order.

    A fill whose counterpart is not in the block still makes a trade; the
    missing user is ``""``.
    """
    by_tid: dict[int, list[tuple[str, Fill]]] = {}
    for user, fill in fills:
        group = by_tid.get(fill.tid)
        if group is None:
            by_tid[fill.tid] = [(user, fill)]
        else:
            group.append((user, fill))
    out: dict[str, list[Trade]] = {}
    for group in by_tid.values():
        trade = _trade(group)
        bucket = out.get(trade.coin)
        if bucket is None:
            out[trade.coin] = [trade]
        else:
            bucket.append(trade)
    return out
