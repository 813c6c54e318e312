"""The history store: an SQLite database written by its own thread, never awaited.

Writes. The recorder hands the store one batch per block and stage
(:meth:`HistoryStore.submit`): a few list references, no I/O, a lock held for
microseconds. The writer thread takes everything queued, at most every
``commit_interval`` (0.2 s: about three blocks), and writes it in one
transaction — whole blocks only; many blocks at once when it falls behind —
then enforces retention in bounded chunks. Grouping blocks matters: the
indexes that are not in time order (fills by user, orders by cloid) dirty a
page per row, and a page that several blocks touch is then written once.

When the disk is slow — the policy, in order:

1. *queue*: batches wait, up to ``max_pending_rows`` fills + trades + orders
   + candles in all (default 100,000: about five minutes of mainnet);
2. *coalesce*: past that, a block's candle updates still replace the pending
   state of the same candles (only the newest state of a candle matters);
3. *drop*: its fills, trades and statuses are dropped whole — never part of a
   block — counted (:class:`HistoryStats`), logged once per gap, and recorded
   as a :class:`Gap` (stream, heights, times, rows) that is persisted with the
   next write and returned with every answer whose time window it touches.

Memory is bounded by ``max_pending_rows`` whatever the disk does. Write
failures (disk full, read-only, a lock held by another program, I/O errors)
roll the transaction back and keep its rows queued — answers go on including
them — retried with backoff (1 s, doubling to 30 s) for ``retry_for``
seconds of failures (default 60); after that, and when closing, a failed
transaction's rows become a ``write-failed`` gap. Failures are counted and
logged (once, then at most once a minute while they last, and when writes
recover); writes that fail only sometimes (a file damaged inside) are counted
and summed up once a minute instead (:mod:`hlbook.history.failures`).

The file. Every ``check_interval`` seconds the writer checks that the path
still holds the file it writes (:mod:`hlbook.history.filecheck`). A file
deleted or moved away, or replaced by another, is closed — its write-ahead
log checkpointed into it first, so a file moved away is complete — and the
path is opened again as at startup: a new history is created there (or the
history now there is resumed), ``PATH.lock`` taken again if it went too, and
recording goes on from the blocks not yet written. What the lost file held
and the new one does not becomes a ``deleted`` (or ``replaced``) gap. If the
path cannot be opened (another program's file is there, another hlbook holds
the lock, the directory is gone), writes fail — kept, retried, then gaps, as
above — and the path is tried again at every check.

Reads. Queries run on the caller's thread (the async layer,
:mod:`hlbook.history.queries`, puts them in worker threads): on a file, each
uses a pooled read-only connection and its own WAL snapshot, concurrently with
the writer; the in-memory window (``path=None``) has one connection, shared
under a lock. Every answer merges what the database holds with what is
accepted but not yet written (a :class:`PendingView`, taken at the start of
the call), so it agrees with the live feed at the height it reports.
"""

import contextlib
import logging
import math
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import islice
from typing import Any, Final, TypeAlias, TypeVar

import attrs

from hlbook.book.trades import Trade
from hlbook.errors import HistoryError
from hlbook.history.candles import INTERVALS, Candle, candle_open
from hlbook.history.failures import FailureLog
from hlbook.history.filecheck import DELETED, FileId, file_change, file_id
from hlbook.history.requests import CANDLES_LIMIT, FILLS_LIMIT
from hlbook.history.rows import (
    CANDLE_COLUMNS,
    FILL_COLUMNS,
    ORDER_COLUMNS,
    TRADE_COLUMNS,
    FinishedOrder,
    candle_from_row,
    candle_row,
    fill_from_row,
    fill_row,
    order_from_row,
    order_row,
    order_user,
    pack_hex,
    trade_from_row,
    trade_row,
)
from hlbook.history.schema import (
    KeyClock,
    key_of,
    lock_writer,
    open_database,
    open_reader,
    time_of,
)
from hlbook.history.wire import aggregate_by_time, fill_wire, order_status_wire
from hlbook.node.formats import FillEvent

__all__ = [
    "DEFAULT_RETENTION_MS",
    "FILLS",
    "STATUSES",
    "Batch",
    "FillsAnswer",
    "FillsBatch",
    "Gap",
    "HistoryStats",
    "HistoryStore",
    "PendingView",
    "StatusesBatch",
]

log = logging.getLogger("hlbook.history")

DEFAULT_RETENTION_MS: Final = 7 * 86_400_000
"""Seven days."""

FILLS: Final = "fills"
"""The stream of fills, trades and candles (:attr:`hlbook.stages.Stage.FILLS`)."""
STATUSES: Final = "statuses"
"""The stream of finished order statuses (:attr:`hlbook.stages.Stage.STATUSES`)."""

_NO_END: Final = (1 << 63) - 1
_PRUNE_CHUNK: Final = 20_000
_PAGE: Final = 500
_FAILURE_LOG_INTERVAL: Final = 60.0
_MAX_GAPS_KEPT: Final = 10_000
_KEYED_TABLES: Final = ("fills", "orders", "trades")
_STREAM_TABLES: Final = {FILLS: ("fills", "trades"), STATUSES: ("orders",)}
_SIDECARS: Final = ("-wal", "-shm")
_CHECKPOINT_TRIES: Final = 2

T = TypeVar("T")


@attrs.frozen
class Gap:
    """A stretch the store knows it does not hold.

    ``stream`` is :data:`FILLS` (fills, trades, candles) or :data:`STATUSES`;
    ``reason`` one of ``dropped`` (the disk was too slow: queue full),
    ``write-failed`` (the disk refused the write), ``offline`` (hlbook was not
    recording between these blocks), ``resync`` (the books were
    re-bootstrapped and blocks in between were never applied), ``deleted``
    or ``replaced`` (the file was deleted, moved away or replaced while
    hlbook ran: what it held and the file now at the path does not — from
    height 0 for a new file, the first block of the file being unknown; the
    times are its oldest and newest rows'). Heights and times (ms) are
    inclusive; ``rows`` is how many rows were lost (``-1``: unknown).
    """

    stream: str
    reason: str
    from_height: int
    to_height: int
    from_time: int
    to_time: int
    rows: int = -1

    def touches(self, start: int, end: int) -> bool:
        """True if the gap overlaps the time window ``[start, end]``."""
        return self.from_time <= end and self.to_time >= start


@attrs.frozen
class FillsBatch:
    """One block's fills (the node's events, by reference), its trades and changed candles."""

    height: int
    time: int
    fills: Sequence[FillEvent] = ()
    trades: Sequence[Trade] = ()
    candles: Sequence[Candle] = ()

    stream = FILLS

    @property
    def rows(self) -> int:
        """Rows this batch adds to the queue."""
        return len(self.fills) + len(self.trades) + len(self.candles)


@attrs.frozen
class StatusesBatch:
    """One block's statuses that the store keeps (see :func:`~hlbook.history.wire.is_recorded`)."""

    height: int
    time: int
    orders: Sequence[FinishedOrder] = ()

    stream = STATUSES

    @property
    def rows(self) -> int:
        """Rows this batch adds to the queue."""
        return len(self.orders)


Batch: TypeAlias = FillsBatch | StatusesBatch

_CandleKey: TypeAlias = tuple[str, str, int]


@attrs.frozen
class PendingView:
    """What the store accepted and may not have written yet, at one moment.

    Queries merge it with the database: a batch counts when its height is
    above the height the database says it holds for that stream.
    """

    fills: tuple[FillsBatch, ...] = ()
    statuses: tuple[StatusesBatch, ...] = ()
    candles: Mapping[_CandleKey, tuple[int, Candle]] = attrs.field(factory=dict)
    """Coalesced candle states (height, candle) newer than every queued batch."""
    heights: Mapping[str, int] = attrs.field(factory=dict)
    """The newest height the recorder has seen per stream (``-1``: none)."""
    gaps: tuple[Gap, ...] = ()


@attrs.frozen
class FillsAnswer:
    """Fills in the official shape, the height they are consistent with, and known gaps."""

    fills: list[dict[str, Any]]
    height: int | None
    gaps: tuple[Gap, ...]


@attrs.define
class HistoryStats:
    """Counters of a :class:`HistoryStore` (a copy; see :meth:`HistoryStore.statistics`)."""

    path: str | None
    max_pending_rows: int
    pending_rows: int = 0
    transactions: int = 0
    batches_written: int = 0
    rows_written: int = 0
    write_seconds: float = 0.0
    batches_dropped: int = 0
    rows_dropped: int = 0
    candles_coalesced: int = 0
    write_failures: int = 0
    last_error: str = ""
    pruned_rows: int = 0
    gaps: int = 0
    files_lost: int = 0
    """Times the file was found deleted, moved away or replaced (each time, the path was
    opened again)."""


@attrs.define
class _Seen:
    height: int = -1
    time: int = 0


@attrs.frozen
class _FileState:
    """What a history file holds, read cheaply (meta, key bounds, gaps)."""

    seen: dict[str, _Seen]
    written: dict[str, int]
    keys: dict[str, tuple[int, int] | None]
    """Per time-keyed table, its lowest and highest row key (``None``: empty)."""
    gaps: list[Gap]

    def times(self, tables: Sequence[str]) -> tuple[int, int] | None:
        """The oldest and newest row times in ``tables`` (``None``: no rows)."""
        bounds = [found for table in tables if (found := self.keys[table]) is not None]
        if not bounds:
            return None
        return time_of(min(low for low, _ in bounds)), time_of(max(high for _, high in bounds))


def _read_state(conn: sqlite3.Connection) -> _FileState:
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    keys: dict[str, tuple[int, int] | None] = {}
    for table in _KEYED_TABLES:
        # min and max of an indexed column: two index lookups, whatever the table's size.
        low, high = conn.execute(f"SELECT min(id), max(id) FROM {table}").fetchone()
        keys[table] = None if low is None else (low, high)
    return _FileState(
        seen={
            stream: _Seen(
                int(meta.get(f"seen_{stream}_height", -1)), int(meta.get(f"seen_{stream}_time", 0))
            )
            for stream in (FILLS, STATUSES)
        },
        written={stream: int(meta.get(f"{stream}_height", -1)) for stream in (FILLS, STATUSES)},
        keys=keys,
        gaps=[
            Gap(*row)
            for row in conn.execute(
                "SELECT stream, reason, from_height, to_height, from_time, to_time, rows "
                "FROM gaps ORDER BY id"
            ).fetchall()
        ][-_MAX_GAPS_KEPT:],
    )


@attrs.frozen
class _Lost:
    """A file that the path no longer holds: what it held, by stream."""

    reason: str
    """:data:`~hlbook.history.filecheck.DELETED` or :data:`~hlbook.history.filecheck.REPLACED`."""
    written: dict[str, int]
    times: dict[str, tuple[int, int] | None]
    """Its oldest and newest row times (``None``: no rows, or unknown if not ``known``)."""
    known: bool = True
    """Its rows' times could be read."""

    @property
    def what(self) -> str:
        """What happened to it, in words."""
        if self.reason == DELETED:
            return "was deleted or moved away"
        return "was replaced by another file"

    def describe(self, path: str) -> str:
        """The start of the log line that tells of the loss."""
        held = "what it held"
        spans = [span for span in self.times.values() if span is not None]
        if spans and max(self.written.values()) >= 0:
            held = (
                f"what it held (blocks up to {max(self.written.values())}, rows from "
                f"{_utc(min(low for low, _ in spans))} to {_utc(max(high for _, high in spans))})"
            )
        elif self.known:
            held = "what it held (no rows)"
        return f"history store {path} {self.what} while hlbook ran: {held} is no longer there"

    def gaps(self, now_at_path: _FileState, seen: Mapping[str, _Seen]) -> list[Gap]:
        """Per stream, what the lost file held and the file now at the path does not."""
        found: list[Gap] = []
        for stream, tables in _STREAM_TABLES.items():
            first, last = now_at_path.written[stream] + 1, self.written[stream]
            span = self.times[stream]
            if span is None and not self.known:
                span = (0, seen[stream].time)  # unknown: from the start to now
            if last < first or span is None:
                continue
            from_time, to_time = span
            kept = now_at_path.times(tables)
            if kept is not None:  # the file now there holds rows of its own up to then
                from_time = max(from_time, kept[1] + 1)
            if from_time <= to_time:
                found.append(Gap(stream, self.reason, first, last, from_time, to_time))
        return found


def _holds(path: str, known: FileId) -> bool:
    """True if ``path`` holds the file ``known`` (False when it cannot be told)."""
    try:
        return file_id(path) == known
    except OSError:
        return False


def _utc(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms / 1000))


def _size(count: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"


def _opening_line(path: str, created: bool, state: _FileState, size: int) -> str:
    """``created new history store PATH`` or ``resuming history store PATH at block H (…)``:
    facts that cost nothing to read (meta, two index ends per table, the file's size)."""
    if created:
        return f"created new history store {path}"
    height = max(seen.height for seen in state.seen.values())
    if height < 0:
        return f"resuming history store {path} (nothing recorded in it yet; {_size(size)})"
    newest = max(seen.time for seen in state.seen.values())
    span = state.times(_KEYED_TABLES)
    rows = "no rows" if span is None else f"rows from {_utc(span[0])}"
    gaps = len(state.gaps)
    return (
        f"resuming history store {path} at block {height} (block time {_utc(newest)}; "
        f"{rows}; {_size(size)}; {gaps} gap{'' if gaps == 1 else 's'})"
    )


class HistoryStore:
    """The history database and its writer thread (see the module docstring).

    ``path``: the SQLite file (created if new), or ``None`` for a bounded
    in-memory window that answers the same queries. Opening raises
    :class:`~hlbook.errors.HistoryError` (path and reason) for a file that is
    not this hlbook's history. ``retention_ms``: rows older than the newest
    block time minus this are deleted, every ``prune_interval`` seconds.
    ``memory_rows``: the in-memory window also keeps at most this many fills,
    trades and orders (each). ``max_pending_rows``: the queue's bound (see the
    policy above). ``commit_interval``: the shortest time between two write
    transactions (:meth:`flush` does not wait for it). ``max_bytes``: an
    optional hard cap on the file's size; writes past it fail (logged,
    counted, a gap) until retention frees room. ``readers``: query
    connections kept open. ``retry_for``: how long rows of refused writes
    are kept and retried. ``check_interval``: how often the writer checks
    that the path still holds its file. Opening does file I/O: do it before
    the event loop or in a thread; :attr:`opened` says what it found. Use as
    a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        *,
        retention_ms: int = DEFAULT_RETENTION_MS,
        max_pending_rows: int = 100_000,
        memory_rows: int = 100_000,
        max_bytes: int | None = None,
        prune_interval: float | None = None,
        commit_interval: float = 0.2,
        readers: int = 4,
        retry_for: float = 60.0,
        check_interval: float = 1.0,
    ) -> None:
        if retention_ms <= 0:
            raise ValueError("retention must be positive")
        self.path: str | None = None if path is None else os.fspath(path)
        self.retention_ms = retention_ms
        self._memory = path is None
        self._memory_rows = memory_rows
        self._max_pending = max_pending_rows
        self._max_bytes = max_bytes
        self._prune_interval = (
            prune_interval if prune_interval is not None else (5.0 if self._memory else 60.0)
        )
        opened = open_database(path)  # refuses what is not a history file first
        conn = opened.conn
        self._conn: sqlite3.Connection | None = conn
        self._lock: int | None = None
        self._lock_id: FileId | None = None
        try:
            if self.path is not None:
                self._take_lock()
        except BaseException:
            conn.close()
            raise
        # The file the writer writes, and its write-ahead log and shared-memory index
        # (None in memory): what the path must still hold (see _check_file).
        self._file: FileId | None = None
        self._sidecars: dict[str, FileId | None] = {}
        try:
            self._limit_size(conn)
            state = _read_state(conn)
            self._note_file()
        except (sqlite3.Error, OSError) as exc:
            conn.close()
            self._unlock()
            raise HistoryError(self.path, f"cannot read it: {exc}") from None
        self._adopt(state)
        self._seen = state.seen
        self._gaps: list[Gap] = list(state.gaps)
        self.opened = (
            "in-memory history (a bounded window, lost at exit)"
            if self.path is None
            else _opening_line(self.path, opened.created, state, self.disk_bytes())
        )
        """How opening went, for the startup log: ``created new history store PATH`` or
        ``resuming history store PATH at block H (…)``."""
        self._stats = HistoryStats(self.path, max_pending_rows)
        self._stats.gaps = len(self._gaps)
        self._cond = threading.Condition(threading.Lock())
        self._db_lock = threading.Lock()  # the in-memory connection is shared by all threads
        self._queue: deque[Batch] = deque()
        self._inflight: tuple[Batch, ...] = ()
        self._spill: dict[_CandleKey, tuple[int, Candle]] = {}
        self._inflight_spill: dict[_CandleKey, tuple[int, Candle]] = {}
        self._pending_rows = 0
        self._open_gaps: dict[str, Gap] = {}
        self._new_gaps: list[Gap] = []
        self._inflight_gaps: list[Gap] = []
        """Of the gaps not written yet, those the writer is writing now."""
        self._closing = False
        self._closed = False
        self._paused = False
        self._busy = False
        self._prune_wanted = False
        self._flushing = 0
        self._commit_interval = commit_interval
        self._retry_for = retry_for
        self._gave_up_logged = False
        self._requeued = False  # the last failed write's batches went back to the queue
        self._backoff_until = 0.0  # kept rows are retried from then
        self._last_commit = 0.0
        self._failing_since: float | None = None
        self._retry_at = 0.0  # while writes fail, gaps and meta are retried at this pace
        self._retry_delay = 1.0
        self._last_failure_log = 0.0
        self._flaps = FailureLog()
        self._checks = self.path is not None
        self._check_interval = check_interval
        self._check_wanted = False
        self._no_file: str | None = None  # why the store has no file to write (then None)
        self._lost: _Lost | None = None  # the loss the next successful reopen records
        self._readers: list[sqlite3.Connection] = []
        self._generation = 0  # readers of an earlier file are closed, not pooled
        self._max_readers = readers
        self._readers_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="hlbook-history", daemon=True)
        self._thread.start()

    # -- opening -----------------------------------------------------------------

    def _adopt(self, state: _FileState) -> None:
        """Write on from what the (newly) opened file holds (writer-side state only)."""
        self._written = dict(state.written)
        self._persisted_seen = {stream: seen.height for stream, seen in state.seen.items()}
        self._clocks = {
            table: KeyClock(0 if (keys := state.keys[table]) is None else keys[1])
            for table in _KEYED_TABLES
        }

    def _limit_size(self, conn: sqlite3.Connection) -> None:
        if self._max_bytes is not None:
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {max(pages, self._max_bytes // page_size)}")

    def _take_lock(self) -> bool:
        """Hold ``PATH.lock`` — again if the file at that path is not the one held
        (deleted or replaced: anyone could lock the new one); True if it was taken now."""
        assert self.path is not None
        if self._lock is not None and file_id(f"{self.path}.lock") == self._lock_id:
            return False
        fd = lock_writer(self.path)
        if self._lock is not None:
            os.close(self._lock)  # the lock of a file no longer at the path: no one's
        self._lock, self._lock_id = fd, FileId.of(os.fstat(fd))
        return True

    def _note_file(self) -> None:
        """Remember the identity of the file just opened at the path, and of its sidecars.

        Right after opening: what is at the path now is what SQLite opened.
        """
        if self.path is None:
            return
        here = file_id(self.path)
        if here is None:
            raise FileNotFoundError(f"{self.path} vanished while it was opened")
        self._file = here
        self._sidecars = {suffix: file_id(self.path + suffix) for suffix in _SIDECARS}

    def last_seen(self, stream: str) -> tuple[int, int] | None:
        """``(height, time)`` of the newest block of ``stream`` recorded by any run, or ``None``."""
        with self._cond:
            seen = self._seen[stream]
            return None if seen.height < 0 else (seen.height, seen.time)

    def latest_candles(self) -> list[Candle]:
        """The candles that were current when recording stopped (to resume candle building).

        Per interval, the candles containing the newest recorded fills time;
        older candles are closed and need no resuming.
        """
        seen = self.last_seen(FILLS)
        if seen is None:
            return []
        now = seen[1]

        def read(conn: sqlite3.Connection) -> list[Candle]:
            out: list[Candle] = []
            for interval in INTERVALS:
                rows = conn.execute(
                    f"SELECT {CANDLE_COLUMNS} FROM candles WHERE interval = ? AND t = ?",
                    (interval, candle_open(now, interval)),
                ).fetchall()
                out.extend(candle_from_row(row) for row in rows)
            return out

        return self._read(read)

    # -- writing (called from the book task: never blocks) -----------------------

    def note_seen(self, stream: str, height: int, time_ms: int) -> None:
        """The recorder saw block ``height`` of ``stream`` (persisted with the next write)."""
        with self._cond:
            seen = self._seen[stream]
            if height > seen.height:
                seen.height = height
                seen.time = time_ms

    def submit(self, batch: Batch) -> bool:
        """Queue ``batch`` for writing; ``False`` if it was dropped (see the policy above).

        Never blocks on I/O: the lock it takes is held by others only to swap
        list references.
        """
        stream = batch.stream
        with self._cond:
            if self._closing:
                return False
            rows = batch.rows
            if rows and self._queue and self._pending_rows + rows > self._max_pending:
                opened = self._drop(batch)
                pending = self._pending_rows
                accepted = False
                closed = None
            else:
                opened = False
                accepted = True
                closed = self._open_gaps.pop(stream, None)
                if closed is not None:
                    self._record_gap(closed)
                if isinstance(batch, FillsBatch) and self._spill:
                    # Newer than the spilled candles: absorb them so the order stays right.
                    merged = dict(self._spill)
                    for candle in batch.candles:
                        merged[_candle_key(candle)] = (batch.height, candle)
                    self._spill = {}
                    batch = attrs.evolve(batch, candles=[candle for _, candle in merged.values()])
                    rows = batch.rows
                self._queue.append(batch)
                self._pending_rows += rows
                self._cond.notify_all()
        if opened:
            log.warning(
                "history writes are behind (%d rows pending): dropping %s from block %d on; "
                "the live feed is not affected, queries report the gap",
                pending,
                stream,
                batch.height,
            )
        if closed is not None:
            log.warning(
                "history writes caught up: %d %s rows of blocks %d-%d were not recorded "
                "(kept as a gap)",
                closed.rows,
                stream,
                closed.from_height,
                closed.to_height,
            )
        return accepted

    def _drop(self, batch: Batch) -> bool:
        """Drop ``batch`` (lock held), coalescing its candles; True if this opens a gap."""
        lost = batch.rows
        if isinstance(batch, FillsBatch):
            lost -= len(batch.candles)
            for candle in batch.candles:
                self._spill[_candle_key(candle)] = (batch.height, candle)
            self._stats.candles_coalesced += len(batch.candles)
            if len(self._spill) > self._max_pending:
                # Even the coalesced candles are too many: keep only the open ones.
                closed = [k for k, (_, c) in self._spill.items() if c.close_time < batch.time]
                for key in closed:
                    del self._spill[key]
                lost += len(closed)
        self._stats.batches_dropped += 1
        self._stats.rows_dropped += lost
        stream = batch.stream
        gap = self._open_gaps.get(stream)
        opened = gap is None
        if gap is None:
            gap = Gap(stream, "dropped", batch.height, batch.height, batch.time, batch.time, 0)
        self._open_gaps[stream] = attrs.evolve(
            gap, to_height=batch.height, to_time=batch.time, rows=gap.rows + lost
        )
        return opened

    def add_gap(self, gap: Gap) -> None:
        """Record a gap found outside the store (hlbook offline, a re-bootstrap)."""
        with self._cond:
            self._record_gap(gap)
            self._cond.notify_all()
        log.warning(
            "history has a gap in %s: blocks %d-%d (%s)",
            gap.stream,
            gap.from_height,
            gap.to_height,
            gap.reason,
        )

    def _record_gap(self, gap: Gap) -> None:
        # Caller holds the lock.
        if gap.reason == "write-failed" and self._extend_failed(gap):
            return
        self._gaps.append(gap)
        del self._gaps[:-_MAX_GAPS_KEPT]
        self._new_gaps.append(gap)
        self._stats.gaps += 1

    def _extend_failed(self, gap: Gap) -> bool:
        """Extend the stream's unwritten ``write-failed`` gap with ``gap``, if there is one.

        While writes go on failing (a disk that is gone, a path that cannot be opened
        again), each given-up transaction is one more gap: one per stream and failure,
        several a second, each kept in memory and inserted again at every attempt. No
        write succeeded in between (that would have written the older one), so the rows
        between them are lost too: one gap says it."""
        for new in (self._new_gaps, self._inflight_gaps):  # the newest unwritten first
            at = next((i for i in range(len(new) - 1, -1, -1) if new[i].stream == gap.stream), None)
            if at is not None:
                break
        else:
            return False
        old = new[at]
        if old.reason != "write-failed" or old.to_height >= gap.from_height:
            return False
        merged = attrs.evolve(
            old, to_height=gap.to_height, to_time=gap.to_time, rows=old.rows + gap.rows
        )
        new[at] = merged
        for i in range(len(self._gaps) - 1, -1, -1):
            if self._gaps[i] is old:
                self._gaps[i] = merged
                break
        return True

    # -- the writer thread ---------------------------------------------------------

    def _run(self) -> None:
        next_prune = time.monotonic() + self._prune_interval
        next_check = time.monotonic() + self._check_interval if self._checks else math.inf
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    retry_due = bool(self._new_gaps) and now >= self._retry_at
                    # Rows kept after a failed write wait for the retry (backoff).
                    backing_off = now < self._backoff_until
                    has_work = bool(self._queue or self._spill or retry_due) and not backing_off
                    check = (
                        self._checks
                        and not self._paused
                        and not self._closing
                        and (self._check_wanted or now >= next_check)
                    )
                    write = self._closing and not self._paused
                    # Group the blocks of up to commit_interval into one transaction: pages
                    # that consecutive blocks touch are written once, not once per block.
                    commit_at = self._last_commit + self._commit_interval
                    hurry = (
                        self._flushing > 0
                        or self._prune_wanted
                        or now >= commit_at
                        or self._pending_rows * 4 >= self._max_pending
                    )
                    if not self._paused and has_work and hurry:
                        write = True
                    if not self._paused and (self._prune_wanted or now >= next_prune):
                        write = True
                    if write or check:
                        break
                    wake = min(next_prune, self._retry_at) if self._new_gaps else next_prune
                    wake = min(wake, next_check)
                    if backing_off:
                        wake = min(wake, self._backoff_until)
                    if has_work:
                        wake = min(wake, commit_at)
                    self._cond.wait(timeout=max(0.001, wake - now))
                if check:
                    self._check_wanted = False
                    self._busy = True
            if check:
                # Before taking the queue: what it holds goes to the file now at the path.
                next_check = time.monotonic() + self._check_interval
                try:
                    self._check_file()
                except Exception:  # a bug: keep the thread (and so the store) alive
                    log.exception("history writer error")
                finally:
                    with self._cond:
                        self._busy = False
                        self._cond.notify_all()
                if not write:
                    self._report_flaps()
                    continue
            with self._cond:
                batches = tuple(self._queue)
                self._queue.clear()
                spill, self._spill = self._spill, {}
                gaps = self._inflight_gaps = list(self._new_gaps)
                self._new_gaps.clear()
                self._inflight, self._inflight_spill = batches, spill
                seen = {stream: attrs.evolve(value) for stream, value in self._seen.items()}
                closing = self._closing
                self._busy = True
            self._requeued = False
            try:
                ok = self._write(batches, spill, tuple(gaps), seen, closing=closing)
                with self._cond:
                    self._inflight_gaps = []
                    if not ok and gaps:
                        self._new_gaps[:0] = gaps  # retry persisting them with the next write
                with self._cond:
                    caught_up = not self._queue
                # Retention runs once the queue is written (deletes would only delay the
                # blocks waiting), unless it is overdue by a whole interval.
                overdue = time.monotonic() >= next_prune + self._prune_interval
                due = self._prune_wanted or time.monotonic() >= next_prune
                if due and (caught_up or overdue):
                    self._prune_wanted = False
                    next_prune = time.monotonic() + self._prune_interval
                    self._prune(seen)
            except Exception:  # a bug: keep the thread (and so the store) alive
                log.exception("history writer error")
            finally:
                self._last_commit = time.monotonic()
                with self._cond:
                    self._inflight, self._inflight_spill = (), {}
                    if not self._requeued:
                        self._pending_rows -= sum(batch.rows for batch in batches)
                    self._busy = False
                    self._cond.notify_all()
            self._report_flaps()
            if closing:
                with self._cond:
                    if not self._queue and not self._spill:
                        return

    def _transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in one write transaction on the writer's connection."""
        conn = self._conn
        if conn is None:  # the path could not be opened again: a write that fails
            raise sqlite3.OperationalError(f"no history file: {self._no_file}")
        with self._db_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn)
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        return result

    def _write(
        self,
        batches: tuple[Batch, ...],
        spill: Mapping[_CandleKey, tuple[int, Candle]],
        gaps: tuple[Gap, ...],
        seen: Mapping[str, _Seen],
        *,
        closing: bool = False,
    ) -> bool:
        if not (batches or spill or gaps) and all(
            seen[stream].height <= self._persisted_seen.get(stream, -1) for stream in seen
        ):
            return True
        started = time.perf_counter()
        fills: list[tuple[Any, ...]] = []
        trades: list[tuple[Any, ...]] = []
        orders: list[tuple[Any, ...]] = []
        candles: dict[_CandleKey, tuple[Any, ...]] = {}
        written = dict(self._written)
        clocks = self._clocks
        for batch in batches:
            if isinstance(batch, FillsBatch):
                clock = clocks["fills"]
                fills.extend(fill_row(clock.next(f.time), user, f) for user, f in batch.fills)
                clock = clocks["trades"]
                trades.extend(trade_row(clock.next(t.time), t) for t in batch.trades)
                for candle in batch.candles:
                    candles[_candle_key(candle)] = candle_row(candle)
            else:
                clock = clocks["orders"]
                orders.extend(order_row(clock.next(o.time), o) for o in batch.orders)
            written[batch.stream] = max(written[batch.stream], batch.height)
        for _, candle in spill.values():
            candles[_candle_key(candle)] = candle_row(candle)
        meta: list[tuple[str, int]] = []
        for stream in (FILLS, STATUSES):
            meta.append((f"{stream}_height", written[stream]))
            meta.append((f"seen_{stream}_height", seen[stream].height))
            meta.append((f"seen_{stream}_time", seen[stream].time))

        def work(conn: sqlite3.Connection) -> None:
            if fills:
                conn.executemany(f"INSERT INTO fills ({FILL_COLUMNS}) VALUES ({_marks(21)})", fills)
            if trades:
                conn.executemany(
                    f"INSERT INTO trades ({TRADE_COLUMNS}) VALUES ({_marks(10)})", trades
                )
            if orders:
                conn.executemany(
                    f"INSERT OR REPLACE INTO orders ({ORDER_COLUMNS}) VALUES ({_marks(20)})", orders
                )
            if candles:
                conn.executemany(
                    f"INSERT OR REPLACE INTO candles ({CANDLE_COLUMNS}) VALUES ({_marks(10)})",
                    list(candles.values()),
                )
            if gaps:
                conn.executemany(
                    "INSERT INTO gaps (stream, reason, from_height, to_height, from_time, "
                    "to_time, rows) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [attrs.astuple(gap) for gap in gaps],
                )
            conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", meta)

        rows = len(fills) + len(trades) + len(orders) + len(candles)
        try:
            self._transaction(work)
        except sqlite3.Error as exc:
            self._write_failed(batches, spill, exc, closing=closing)
            return False
        self._written = written
        self._persisted_seen = {stream: seen[stream].height for stream in seen}
        with self._cond:
            stats = self._stats
            stats.transactions += 1
            stats.batches_written += len(batches)
            stats.rows_written += rows
            stats.write_seconds += time.perf_counter() - started
        self._retry_delay = 1.0
        if self._failing_since is not None and rows:
            now = time.monotonic()
            if self._flaps.recovery(now):
                log.warning(
                    "history writes work again (after %.0f s of failures)",
                    now - self._failing_since,
                )
            self._failing_since = None
        return True

    def _write_failed(
        self,
        batches: tuple[Batch, ...],
        spill: Mapping[_CandleKey, tuple[int, Candle]],
        exc: sqlite3.Error,
        *,
        closing: bool,
    ) -> None:
        """A transaction was refused. Within ``retry_for`` of failures (and not closing)
        its rows go back to the front of the queue — answers keep including them — and
        wait for the retry; after that they become a ``write-failed`` gap."""
        now = time.monotonic()
        text = f"{type(exc).__name__}: {exc}"
        since = self._failing_since if self._failing_since is not None else now
        keep = not closing and now - since < self._retry_for
        rows = sum(batch.rows for batch in batches)
        with self._cond:
            self._stats.write_failures += 1
            self._stats.last_error = text
            if keep:
                self._queue.extendleft(reversed(batches))
                for key, value in spill.items():
                    self._spill.setdefault(key, value)  # a newer state of a candle wins
                self._requeued = True
            else:
                for gap in _failed_gaps(batches):
                    self._record_gap(gap)
        self._retry_at = now + self._retry_delay
        self._retry_delay = min(2 * self._retry_delay, 30.0)
        # Kept rows wait for the retry; once given up on, new blocks are tried as they come.
        self._backoff_until = self._retry_at if keep else 0.0
        first = self._failing_since is None
        if not (first or (not keep and not self._gave_up_logged)):
            self._still_failing(text, now)
            return
        self._failing_since = since
        self._last_failure_log = now
        self._gave_up_logged = not keep
        if first and not self._flaps.failure(now):
            return  # soon after the last run of failures ended: counted, summed up later
        if keep:
            log.error(
                "history write failed (%s): %d rows kept and retried for up to %g s; "
                "the live feed continues",
                text,
                rows,
                self._retry_for,
            )
        elif first:
            log.error(
                "history write failed (%s): %d rows lost and recorded as a gap; "
                "the live feed continues, writes are retried with the next blocks",
                text,
                rows,
            )
        else:
            log.error(
                "history writes failed for %.0f s (%s): giving up on what they held, %d rows"
                " lost and recorded as a gap; later blocks are tried as they come",
                now - since,
                text,
                rows,
            )

    def _report_flaps(self, *, final: bool = False) -> None:
        """The line that sums up failures counted, not logged (at most once a minute)."""
        summary = self._flaps.summary(time.monotonic(), final=final)
        if summary is None:
            return
        with self._cond:
            total, text = self._stats.write_failures, self._stats.last_error
        log.error(
            "history writes failed intermittently: %d more times writes failed and %d times"
            " they worked again in the last %.0f s, not logged one by one (last error: %s;"
            " %d failed writes in all, /health history.write_failures) — a file damaged"
            " inside? (README: the history store)",
            summary.failures,
            summary.recoveries,
            summary.seconds,
            text,
            total,
        )

    def _still_failing(self, text: str, now: float) -> None:
        """Another failure of a run of them: logged at most once a minute."""
        if now - self._last_failure_log >= _FAILURE_LOG_INTERVAL:
            self._last_failure_log = now
            log.error(
                "history writes still failing (%s): %d failures so far",
                text,
                self._stats.write_failures,
            )

    # -- the file: still the one at the path? ----------------------------------------

    def _check_file(self) -> None:
        """On the writer thread: act on a file deleted, moved away or replaced, or on a
        lock file that went; try the path again while it could not be opened."""
        assert self.path is not None
        if self._conn is None:
            self._reopen()
            return
        assert self._file is not None
        try:
            change = file_change(self._file, file_id(self.path))
        except OSError as exc:  # cannot look (a directory's permissions): not a change
            log.debug("history: cannot check %s: %s", self.path, exc)
            return
        if change is not None:
            self._lose_file(change)
            return
        try:
            retaken = self._take_lock()
        except (HistoryError, OSError) as exc:
            # PATH.lock went, and another hlbook took a new one and opened this file:
            # two writers lose rows on both sides, so this one stops writing it.
            reason = exc.reason if isinstance(exc, HistoryError) else str(exc)
            self._close_file(reason, unlink=())
            log.error(
                "history store %s: its lock file was deleted while hlbook ran and cannot be"
                " taken again (%s): this hlbook stops writing it — writes fail and are"
                " retried; the file is opened again once the lock is free",
                self.path,
                reason,
            )
            return
        if retaken:
            log.warning(
                "history store %s: its lock file %s.lock was deleted or replaced while hlbook"
                " ran; taken again (until now a second hlbook could have opened the file)",
                self.path,
                self.path,
            )

    def _lose_file(self, change: str) -> None:
        """The path no longer holds the file written: close it, open the path again."""
        assert self.path is not None
        conn = self._conn
        assert conn is not None
        old: _FileState | None
        try:
            with self._db_lock:
                old = _read_state(conn)
            self._checkpoint_lost(conn)
        except sqlite3.Error as exc:
            log.debug("history: reading the lost file failed: %s", exc)
            old = None
        # The sidecars at the path that are the lost file's — compared while it is still
        # open, so that their inodes cannot have been reused — go too: SQLite would pair
        # them with the file opened at the path next (a log of another file's pages, a
        # shared-memory index that queries still reading the lost file map).
        mine = [
            suffix
            for suffix, known in self._sidecars.items()
            if known is not None and _holds(self.path + suffix, known)
        ]
        lost = _Lost(
            change,
            dict(self._written),
            {
                stream: (old.times(tables) if old is not None else None)
                for stream, tables in _STREAM_TABLES.items()
            },
            known=old is not None,
        )
        self._close_file(f"the file {lost.what} while hlbook ran", unlink=mine)
        with self._cond:
            self._stats.files_lost += 1
        self._lost = lost
        self._reopen(announce=lost.describe(self.path))

    def _checkpoint_lost(self, conn: sqlite3.Connection) -> None:
        """Copy the write-ahead log into the lost file itself: one moved away (an archive)
        is then complete without the log, which is named after the path and removed.

        A query reading since before the last commits holds the log's end back (each try
        waits up to the busy timeout): tried a few times, then said, since the file moved
        away would lack its last transactions."""
        busy, frames, copied = 0, 0, 0
        for attempt in range(_CHECKPOINT_TRIES):
            if attempt:
                time.sleep(0.5)
            with self._db_lock:
                busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if not busy and copied >= frames:
                return
        log.error(
            "history store %s: the file gone from the path lacks its last transactions (%d of"
            " %d log pages copied into it: a query kept reading); if it was moved away to keep"
            " it, it is incomplete",
            self.path,
            max(copied, 0),
            frames,
        )

    def _close_file(self, why: str, *, unlink: Sequence[str]) -> None:
        """Close the writer's connection and the readers'; the store has no file now."""
        assert self.path is not None
        self._no_file = why  # first: queries stop opening the path
        with self._readers_lock:
            self._generation += 1
            readers, self._readers = self._readers, []
        for reader in readers:
            reader.close()
        with self._db_lock:
            if self._conn is not None:
                self._conn.close()
            self._conn = None
        for suffix in unlink:
            with contextlib.suppress(OSError):
                os.unlink(self.path + suffix)
        self._file = None

    def _reopen(self, announce: str | None = None) -> None:
        """Open the path as at startup; then record what the lost file held as gaps.

        ``announce``: the loss just found, said in one line with the outcome.
        """
        assert self.path is not None
        path = self.path
        conn: sqlite3.Connection | None = None
        try:
            self._take_lock()  # first: the path may be another hlbook's by now
            opened = open_database(path)
            conn = opened.conn
            self._limit_size(conn)
            state = _read_state(conn)
            self._note_file()
        except (HistoryError, sqlite3.Error, OSError) as exc:
            if conn is not None:
                conn.close()
            reason = exc.reason if isinstance(exc, HistoryError) else f"cannot read it: {exc}"
            if announce is not None or reason != self._no_file:
                log.error(
                    "%s: cannot open a history store there now: %s — history writes fail"
                    " (kept and retried, then gaps) until it can; the path is tried again"
                    " every %g s",
                    announce or f"history store {path}",
                    reason,
                    self._check_interval,
                )
            self._no_file = reason
            return
        lost, self._lost = self._lost, None
        self._adopt(state)
        with self._cond:
            gaps = [] if lost is None else lost.gaps(state, self._seen)
            # The lost file's gaps went with it (its whole range is one now); those not
            # written yet are kept, for the new file.
            self._gaps = [*state.gaps, *self._new_gaps][-_MAX_GAPS_KEPT:]
            for gap in gaps:
                self._record_gap(gap)
            queued = [batch.height for batch in self._queue]
            start = min(queued) if queued else max(v.height for v in self._seen.values()) + 1
            self._cond.notify_all()
        with self._db_lock:
            self._conn = conn
        self._no_file = None
        # Rows kept while there was no file are tried now, not after the backoff (up to
        # 30 s) that writes failing for want of a file ran up; retry_for runs on.
        self._backoff_until = self._retry_at = 0.0
        self._retry_delay = 1.0
        line = _opening_line(path, opened.created, state, self.disk_bytes())
        if announce is None:
            log.warning("history store %s can be written again: %s", path, line)
            return
        assert lost is not None
        log.error(
            "%s; %s, recording from block %d on%s",
            announce,
            line,
            start,
            "; the lost range is a gap (/health history.gaps)" if gaps else "",
        )

    # -- retention -----------------------------------------------------------------

    def _prune(self, seen: Mapping[str, _Seen]) -> None:
        newest = max(value.time for value in seen.values())
        if newest <= 0 or self._conn is None:
            return
        cutoff = newest - self.retention_ms
        key = key_of(cutoff)
        deleted = 0
        try:
            for table in ("fills", "trades", "orders"):
                # fills: (user, id) is the key; the id index holds both, so this stays an
                # index range, like the rowid range of the other tables.
                row, cols = ("(user, id)", "user, id") if table == "fills" else ("id", "id")
                deleted += self._delete_chunks(
                    f"DELETE FROM {table} WHERE {row} IN (SELECT {cols} FROM {table} "
                    f"WHERE id < ? ORDER BY id LIMIT {_PRUNE_CHUNK})",
                    (key,),
                )
                if self._memory:
                    boundary = self._scalar(
                        f"SELECT id FROM {table} ORDER BY id DESC LIMIT 1 OFFSET ?",
                        (self._memory_rows,),
                    )
                    if boundary is not None:
                        deleted += self._delete_chunks(
                            f"DELETE FROM {table} WHERE {row} IN (SELECT {cols} FROM {table} "
                            f"WHERE id <= ? ORDER BY id LIMIT {_PRUNE_CHUNK})",
                            (boundary,),
                        )
            for interval in INTERVALS:
                deleted += self._prune_candles(interval, cutoff, cutoff)
                if self._memory:
                    per_interval = max(1, self._memory_rows // len(INTERVALS))
                    boundary = self._scalar(
                        "SELECT t FROM candles WHERE interval = ? ORDER BY t DESC LIMIT 1 OFFSET ?",
                        (interval, per_interval),
                    )
                    if boundary is not None:
                        # Only closed candles: an open one is still the current candle.
                        deleted += self._prune_candles(interval, boundary + 1, newest)
            deleted += self._delete_chunks("DELETE FROM gaps WHERE to_time < ?", (cutoff,))
        except sqlite3.Error as exc:
            log.warning("history retention delete failed (will retry): %s", exc)
        with self._cond:
            self._gaps = [gap for gap in self._gaps if gap.to_time >= cutoff]
            self._stats.pruned_rows += deleted

    def _scalar(self, sql: str, args: tuple[Any, ...]) -> Any:
        """The first column of the first row of ``sql`` on the writer's connection, or ``None``."""

        def work(conn: sqlite3.Connection) -> Any:
            row = conn.execute(sql, args).fetchone()
            return None if row is None else row[0]

        return self._transaction(work)

    def _prune_candles(self, interval: str, before: int, closed_before: int) -> int:
        return self._delete_chunks(
            "DELETE FROM candles WHERE (coin, interval, t) IN (SELECT coin, interval, t "
            "FROM candles WHERE interval = ? AND t < ? AND close_time < ? "
            f"LIMIT {_PRUNE_CHUNK})",
            (interval, before, closed_before),
        )

    def _delete_chunks(self, sql: str, args: tuple[Any, ...]) -> int:
        total = 0
        while True:
            count: int = self._transaction(lambda conn: conn.execute(sql, args).rowcount)
            total += count
            if count < _PRUNE_CHUNK:
                return total
            with self._cond:
                if self._queue:
                    # New blocks wait for us: finish the backlog after writing them.
                    self._prune_wanted = True
                    return total

    # -- control -------------------------------------------------------------------

    def request_file_check(self) -> None:
        """Check now (on the writer thread) that the path still holds the store's file,
        as every ``check_interval`` s; :meth:`flush` waits for it (no-op in memory)."""
        if not self._checks:
            return
        with self._cond:
            self._check_wanted = True
            self._cond.notify_all()

    def request_prune(self) -> None:
        """Enforce retention now (on the writer thread, after pending writes)."""
        with self._cond:
            self._prune_wanted = True
            self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted so far is written (or failed); ``False`` on timeout.

        Blocks the calling thread: not for the book task.
        """
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()
            try:
                return self._wait_written(timeout)
            finally:
                self._flushing -= 1

    def _wait_written(self, timeout: float | None) -> bool:
        # Caller holds the lock.
        return self._cond.wait_for(
            lambda: (
                not (
                    self._queue
                    or self._spill
                    or self._busy
                    or self._prune_wanted
                    or self._check_wanted
                    # Gaps wait for a write that works: not while writes fail.
                    or (self._new_gaps and self._failing_since is None)
                )
                or self._closed
            ),
            timeout,
        )

    def pause_writes(self) -> None:
        """Hold the writer between transactions (tests of the slow-disk policy; backups)."""
        with self._cond:
            self._paused = True

    def resume_writes(self) -> None:
        """Undo :meth:`pause_writes`."""
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def close(self, timeout: float = 30.0) -> None:
        """Write what is pending (for up to ``timeout`` s), stop the thread, close the file."""
        with self._cond:
            if self._closed:
                return
            self._closing = True
            self._paused = False
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("history writer did not finish within %.0f s; pending rows are lost", timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        if not self._thread.is_alive():
            self._report_flaps(final=True)
            with self._db_lock:
                if self._conn is not None:
                    self._conn.close()
            self._unlock()  # a writer still running keeps the file its own until exit

    def _unlock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def __enter__(self) -> "HistoryStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def statistics(self) -> HistoryStats:
        """A copy of the store's counters."""
        with self._cond:
            return attrs.evolve(self._stats, pending_rows=self._pending_rows)

    def gaps(self, stream: str | None = None) -> tuple[Gap, ...]:
        """Every known gap (of ``stream``, or all), oldest first, the one still open last."""
        with self._cond:
            found = list(self._gaps) + list(self._open_gaps.values())
        return tuple(gap for gap in found if stream is None or gap.stream == stream)

    def disk_bytes(self) -> int:
        """Bytes on disk: the database file and its write-ahead log (0 in memory)."""
        if self.path is None:
            return 0
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                total += os.path.getsize(self.path + suffix)
        return total

    # -- reading -------------------------------------------------------------------

    def pending_view(self) -> PendingView:
        """What is accepted but maybe not written, now (cheap: references, one lock)."""
        with self._cond:
            batches = (*self._inflight, *self._queue)
            candles = (
                {**self._inflight_spill, **self._spill}
                if self._spill or self._inflight_spill
                else {}
            )
            return PendingView(
                fills=tuple(b for b in batches if isinstance(b, FillsBatch)),
                statuses=tuple(b for b in batches if isinstance(b, StatusesBatch)),
                candles=candles,
                heights={stream: seen.height for stream, seen in self._seen.items()},
                gaps=tuple(self._gaps) + tuple(self._open_gaps.values()),
            )

    def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in one read transaction (a consistent snapshot)."""
        if self._memory:
            with self._db_lock:
                assert self._conn is not None  # in memory: closed only by close()
                return self._read_on(self._conn, work)
        with self._readers_lock:
            generation = self._generation
            conn = self._readers.pop() if self._readers else None
        if conn is None:
            conn = self._open_reader()
        try:
            result = self._read_on(conn, work)
        except BaseException:
            conn.close()
            raise
        with self._readers_lock:
            if (
                generation == self._generation  # not a reader of a file since closed
                and len(self._readers) < self._max_readers
                and not self._closed
            ):
                self._readers.append(conn)
                conn = None
        if conn is not None:
            conn.close()
        return result

    def _open_reader(self) -> sqlite3.Connection:
        assert self.path is not None
        missing = self._no_file
        if missing is not None:
            raise HistoryError(self.path, missing)
        # A new connection opens the path: it must hold the writer's file still, or the
        # query would read another file (and SQLite share one shared-memory index
        # between two). The writer finds out at its next check; ask for it now.
        try:
            here = file_id(self.path)
        except OSError:
            here = self._file  # cannot look: let SQLite say
        if here != self._file:
            self.request_file_check()
            raise HistoryError(
                self.path,
                "the file is not the one hlbook was writing (deleted or replaced while it"
                " ran); the path is being opened again",
            )
        return open_reader(self.path)

    def _read_on(self, conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
        try:
            conn.execute("BEGIN")
            try:
                return work(conn)
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise HistoryError(self.path, f"query failed: {exc}") from None

    def _window_gaps(self, view: PendingView, stream: str, start: int, end: int) -> tuple[Gap, ...]:
        return tuple(gap for gap in view.gaps if gap.stream == stream and gap.touches(start, end))

    def fills(
        self,
        user: str,
        *,
        start: int | None = None,
        end: int | None = None,
        limit: int = FILLS_LIMIT,
        newest_first: bool = True,
        aggregate: bool = False,
        view: PendingView | None = None,
    ) -> FillsAnswer:
        """``user``'s fills with ``start <= time <= end``, in the official shape.

        At most ``limit`` (after aggregation, with ``aggregate``), newest
        first or oldest first. ``user`` must be lower case (see
        :mod:`hlbook.history.requests`). Blocks: call it from a worker thread.
        """
        if view is None:
            view = self.pending_view()
        low = key_of(start) if start is not None else 0
        high = key_of(end + 1) - 1 if end is not None else _NO_END
        first = start if start is not None else 0
        last = end if end is not None else _NO_END
        packed = pack_hex(user)

        def read(conn: sqlite3.Connection) -> tuple[list[dict[str, Any]], int]:
            db_height = _meta_int(conn, f"{FILLS}_height")
            pending = [
                fill_wire(fill)
                for batch in view.fills
                if batch.height > db_height
                for who, fill in batch.fills
                if who == user and first <= fill.time <= last
            ]
            # Enough rows for the answer in one read (one more when aggregating, to see
            # that the last group is complete); later pages only if groups merged.
            wanted = max(1, limit - len(pending) + (1 if aggregate else 0))
            stored = self._iter_fills(conn, packed, low, high, newest_first, wanted)
            ordered: Iterator[dict[str, Any]]
            if newest_first:
                ordered = _chain(reversed(pending), stored)
            else:
                ordered = _chain(stored, iter(pending))
            if aggregate:
                found = aggregate_by_time(ordered, newest_first=newest_first, limit=limit)
            else:
                found = list(islice(ordered, limit))
            return found, db_height

        found, db_height = self._read(read)
        height = max(db_height, view.heights.get(FILLS, -1))
        # The window the answer covers: cut at the last fill returned when the limit cut it.
        window_start, window_end = first, last
        if len(found) >= limit:
            if newest_first:
                window_start = found[-1]["time"]
            else:
                window_end = found[-1]["time"]
        return FillsAnswer(
            found,
            None if height < 0 else height,
            self._window_gaps(view, FILLS, window_start, window_end),
        )

    def _iter_fills(
        self,
        conn: sqlite3.Connection,
        user: bytes | str,
        low: int,
        high: int,
        newest_first: bool,
        first_page: int,
    ) -> Iterator[dict[str, Any]]:
        order = "DESC" if newest_first else "ASC"
        page = first_page
        while low <= high:
            rows = conn.execute(
                f"SELECT {FILL_COLUMNS} FROM fills WHERE user = ? AND id BETWEEN ? AND ? "
                f"ORDER BY id {order} LIMIT ?",
                (user, low, high, page),
            ).fetchall()
            for row in rows:
                yield fill_from_row(row)
            if len(rows) < page:
                return
            page = _PAGE
            if newest_first:
                high = rows[-1][0] - 1
            else:
                low = rows[-1][0] + 1

    def candles(
        self,
        coin: str,
        interval: str,
        start: int,
        end: int | None = None,
        *,
        limit: int = CANDLES_LIMIT,
        view: PendingView | None = None,
    ) -> tuple[list[Candle], int | None, tuple[Gap, ...]]:
        """Candles of ``coin`` at ``interval`` overlapping ``[start, end]``, oldest first.

        The candle containing ``start`` is included. At most ``limit``: the
        newest of the range. Returns the candles, the height they are
        consistent with, and the gaps in the window. Blocks: use a thread.
        """
        if view is None:
            view = self.pending_view()
        low = candle_open(start, interval)
        high = end if end is not None else _NO_END

        def read(conn: sqlite3.Connection) -> tuple[dict[int, Candle], int]:
            db_height = _meta_int(conn, f"{FILLS}_height")
            rows = conn.execute(
                f"SELECT {CANDLE_COLUMNS} FROM candles WHERE coin = ? AND interval = ? "
                "AND t BETWEEN ? AND ? ORDER BY t DESC LIMIT ?",
                (coin, interval, low, high, limit),
            ).fetchall()
            return {row[2]: candle_from_row(row) for row in rows}, db_height

        found, db_height = self._read(read)
        newer: dict[int, tuple[int, Candle]] = {}
        pending = [
            (batch.height, candle) for batch in view.fills for candle in batch.candles
        ] + list(view.candles.values())
        for height, candle in pending:
            if (
                height > db_height
                and candle.coin == coin
                and candle.interval == interval
                and low <= candle.open_time <= high
            ):
                known = newer.get(candle.open_time)
                if known is None or height >= known[0]:
                    newer[candle.open_time] = (height, candle)
        for open_time, (_, candle) in newer.items():
            found[open_time] = candle
        result = [found[t] for t in sorted(found)][-limit:]
        height = max(db_height, view.heights.get(FILLS, -1))
        return (
            result,
            None if height < 0 else height,
            self._window_gaps(view, FILLS, low, high),
        )

    def finished_order(
        self,
        user: str,
        *,
        oid: int | None = None,
        cloid: str | None = None,
        view: PendingView | None = None,
    ) -> tuple[dict[str, Any] | None, int | None]:
        """The official ``orderStatus`` answer of ``user``'s finished order, or ``None``.

        Give ``oid`` or ``cloid`` (lower case). Returns the answer and the
        height it is consistent with. Blocks: use a thread.
        """
        if (oid is None) == (cloid is None):
            raise ValueError("give exactly one of oid and cloid")
        if view is None:
            view = self.pending_view()

        def read(conn: sqlite3.Connection) -> tuple[dict[str, Any] | None, int]:
            db_height = _meta_int(conn, f"{STATUSES}_height")
            for batch in reversed(view.statuses):
                if batch.height <= db_height:
                    break
                for finished in reversed(batch.orders):
                    order = finished.order
                    if finished.user == user and (
                        order.oid == oid if oid is not None else order.cloid == cloid
                    ):
                        return order_status_wire(order, finished.status, finished.time), db_height
            if oid is not None:
                rows = conn.execute(
                    f"SELECT {ORDER_COLUMNS} FROM orders WHERE oid = ?", (oid,)
                ).fetchall()
            else:
                assert cloid is not None
                rows = conn.execute(
                    f"SELECT {ORDER_COLUMNS} FROM orders WHERE cloid = ? ORDER BY id DESC",
                    (pack_hex(cloid),),
                ).fetchall()
            for row in rows:
                if order_user(row) == user:
                    return order_from_row(row), db_height
            return None, db_height

        found, db_height = self._read(read)
        height = max(db_height, view.heights.get(STATUSES, -1))
        return found, None if height < 0 else height

    def trades(
        self,
        coin: str,
        *,
        start: int | None = None,
        end: int | None = None,
        limit: int = 1000,
        view: PendingView | None = None,
    ) -> list[Trade]:
        """``coin``'s recorded trades with ``start <= time <= end``, newest first."""
        if view is None:
            view = self.pending_view()
        low = key_of(start) if start is not None else 0
        high = key_of(end + 1) - 1 if end is not None else _NO_END
        first = start if start is not None else 0
        last = end if end is not None else _NO_END

        def read(conn: sqlite3.Connection) -> list[Trade]:
            db_height = _meta_int(conn, f"{FILLS}_height")
            pending = [
                trade
                for batch in view.fills
                if batch.height > db_height
                for trade in batch.trades
                if trade.coin == coin and first <= trade.time <= last
            ]
            out = list(reversed(pending))[:limit]
            if len(out) < limit:
                rows = conn.execute(
                    f"SELECT {TRADE_COLUMNS} FROM trades WHERE coin = ? AND id BETWEEN ? AND ? "
                    "ORDER BY id DESC LIMIT ?",
                    (coin, low, high, limit - len(out)),
                ).fetchall()
                out.extend(trade_from_row(row) for row in rows)
            return out

        return self._read(read)


def _failed_gaps(batches: tuple[Batch, ...]) -> list[Gap]:
    """The ``write-failed`` gap of each stream whose rows ``batches`` lost."""
    lost: list[Gap] = []
    for stream in (FILLS, STATUSES):
        mine = [batch for batch in batches if batch.stream == stream]
        rows = sum(batch.rows for batch in mine)
        if mine and rows:
            first, last = mine[0], mine[-1]
            lost.append(
                Gap(stream, "write-failed", first.height, last.height, first.time, last.time, rows)
            )
    return lost


def _candle_key(candle: Candle) -> _CandleKey:
    return (candle.coin, candle.interval, candle.open_time)


def _marks(count: int) -> str:
    return ", ".join("?" * count)


def _meta_int(conn: sqlite3.Connection, key: str) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return -1 if row is None else int(row[0])


def _chain(first: Iterator[T], second: Iterator[T]) -> Iterator[T]:
    yield from first
    yield from second
