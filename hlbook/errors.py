"""Typed errors, split by whose fault they are.

* :class:`NodeFormatError` — the node wrote something hlbook cannot read
  (truncated JSON, a wrong type, an unknown diff kind). Bad input.
* :class:`DivergenceError` and subclasses — the input is well formed but does
  not fit the book (an update of an unknown oid, a size that disagrees, a
  block out of order). hlbook never guesses: it re-bootstraps.
* :class:`SnapshotError` — a snapshot file that cannot be loaded.
* :class:`StartupError` — hlbook cannot start as configured (a port in use).
* :class:`HistoryError` — the history store's file cannot be used (corrupt,
  foreign, newer schema, unreadable) or read.

Anything else escaping hlbook is a bug in hlbook.
"""

__all__ = [
    "BlockOrderError",
    "DivergenceError",
    "DuplicateOrderError",
    "HistoryError",
    "HlbookError",
    "NodeFormatError",
    "OrderMismatchError",
    "SnapshotError",
    "StartupError",
    "UnknownOrderError",
]


class HlbookError(Exception):
    """Base class of every error hlbook raises on purpose."""


class NodeFormatError(HlbookError):
    """A node line or event that does not follow the node's format.

    ``stream`` names the file stream (``order_statuses``, ``raw_book_diffs``,
    ``fills`` or ``snapshot``), ``block`` the block number when it could be
    read, ``where`` an optional location (file and byte offset).
    """

    def __init__(
        self, stream: str, reason: str, *, block: int | None = None, where: str | None = None
    ) -> None:
        self.stream = stream
        self.block = block
        self.reason = reason
        self.where = where
        at = f" block {block}" if block is not None else ""
        loc = f" ({where})" if where else ""
        super().__init__(f"malformed {stream} line{at}{loc}: {reason}")


class DivergenceError(HlbookError):
    """A block that cannot be applied to the book as it stands.

    The book is left exactly as it was before the block.
    """

    def __init__(
        self, reason: str, *, height: int, coin: str | None = None, oid: int | None = None
    ) -> None:
        self.reason = reason
        self.height = height
        self.coin = coin
        self.oid = oid
        parts = [f"block {height}"]
        if coin is not None:
            parts.append(f"coin {coin}")
        if oid is not None:
            parts.append(f"oid {oid}")
        super().__init__(f"divergence at {', '.join(parts)}: {reason}")


class UnknownOrderError(DivergenceError):
    """An ``update`` or ``remove`` for an oid that is not resting."""


class DuplicateOrderError(DivergenceError):
    """A ``new`` for an oid that is already resting."""


class OrderMismatchError(DivergenceError):
    """A diff whose coin, side, price or ``origSz`` disagrees with the resting order."""


class BlockOrderError(DivergenceError):
    """A block that does not follow the book's height."""


class SnapshotError(HlbookError):
    """A snapshot that cannot be loaded (unreadable, malformed, wrong height)."""


class StartupError(HlbookError):
    """hlbook cannot start as configured, e.g. its port is taken; the message says why."""


class HistoryError(HlbookError):
    """The history store cannot be used: ``path`` (``None`` for the in-memory window) and why.

    Raised when opening a file that is not hlbook's (corrupt, another
    program's SQLite database, a newer schema, not a regular file), and by
    queries that cannot read it. Never raised into the book task: failed
    writes are logged and counted instead.
    """

    def __init__(self, path: str | None, reason: str) -> None:
        self.path = path
        self.reason = reason
        where = "in-memory history" if path is None else f"history store {path}"
        super().__init__(f"{where}: {reason}")
