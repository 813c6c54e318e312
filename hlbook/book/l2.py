"""L2 views of an L4 book: aggregated levels, best bid/offer.

Price aggregation follows Hyperliquid's ``l2Book`` rules. With
``e = floor(log10(px))`` the bucket width is ``mantissa * 10**(e + 1 - nSigFigs)``;
bids round down to a multiple of the width, asks round up; walking a side
best first, a level whose rounded price equals the current bucket's joins it
(sizes and order counts add up).
"""

from collections.abc import Iterable

from hlbook.book.l4 import ASK, BID, CoinBook, Level, LevelView
from hlbook.numbers import fmt

__all__ = [
    "DEFAULT_LEVELS",
    "MAX_LEVELS",
    "aggregate",
    "bbo",
    "bucket_price",
    "l2_levels",
]

DEFAULT_LEVELS = 20
MAX_LEVELS = 100

_POW10: list[int] = [10**i for i in range(80)]


def bucket_price(px: int, side: str, n_sig_figs: int, mantissa: int = 1) -> int:
    """The bucket a scaled price falls in (bids round down, asks round up)."""
    if px <= 0:
        return px
    # px is scaled by 10**SCALE_DIGITS, so it has e + 1 + SCALE_DIGITS digits and
    # the width in scaled units is mantissa * 10**(digits - n_sig_figs).
    exponent = len(str(px)) - n_sig_figs
    if exponent < 0:
        # The width is below one scaled unit: every price is already a multiple of it.
        return px
    width = mantissa * _POW10[exponent]
    if side == BID:
        return px - px % width
    return -(-px // width) * width


def aggregate(
    levels: Iterable[Level], side: str, n_levels: int, n_sig_figs: int, mantissa: int = 1
) -> list[LevelView]:
    """Merge ``levels`` (best first) into at most ``n_levels`` buckets."""
    out: list[LevelView] = []
    bucket: int | None = None
    size = count = 0
    for level in levels:
        rounded = bucket_price(level.px, side, n_sig_figs, mantissa)
        if rounded == bucket:
            size += level.total
            count += len(level.oids)
            continue
        if bucket is not None:
            out.append((fmt(bucket), fmt(size), count))
            if len(out) == n_levels:
                return out
        bucket, size, count = rounded, level.total, len(level.oids)
    if bucket is not None:
        out.append((fmt(bucket), fmt(size), count))
    return out


def l2_levels(
    book: CoinBook,
    side: str,
    n_levels: int = DEFAULT_LEVELS,
    n_sig_figs: int | None = None,
    mantissa: int | None = None,
) -> list[LevelView]:
    """The best ``n_levels`` L2 levels of one side, aggregated when ``n_sig_figs`` is set."""
    if n_sig_figs is None:
        return book.depth(side, n_levels)
    return aggregate(book.levels(side), side, n_levels, n_sig_figs, mantissa or 1)


def bbo(book: CoinBook) -> tuple[LevelView | None, LevelView | None]:
    """Best bid and best ask levels (``None`` for an empty side)."""
    bid, ask = book.best(BID), book.best(ASK)
    return (bid.view() if bid else None, ask.view() if ask else None)
