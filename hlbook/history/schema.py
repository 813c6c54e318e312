"""The history database: its schema, its identity, and opening it safely.

A history file identifies itself twice: SQLite's header field
``application_id`` (:data:`APPLICATION_ID`, the bytes ``hlbk``) and a
``meta`` table holding ``application = hlbook-history`` and the
``schema_version`` (also in ``user_version``). Opening refuses, with a
:class:`~hlbook.errors.HistoryError` naming the path and the reason, and
without writing a byte:

* a path that is not a regular file (a directory, a device);
* a file that is not an SQLite database (SQLite's header is missing: corrupt,
  or another kind of file);
* an SQLite database of another program (another ``application_id``, or
  tables but no hlbook ``meta``);
* a schema newer than this hlbook reads (:data:`SCHEMA_VERSION`);
* a file SQLite reports as malformed while its schema and each table's newest
  rows are read (page-level damage elsewhere surfaces later, as logged write
  failures and query errors — the file is never rewritten or replaced).

Rows are keyed in time order: each time-ordered table's ``id`` is ``time_ms
<< 20 | sequence`` (see :class:`KeyClock`), so retention deletes and
time-range queries are key ranges, with no index on time. Fills are
clustered by ``(user, id)``: one user's fills are contiguous on disk.
"""

import contextlib
import fcntl
import os
import sqlite3
from pathlib import Path
from typing import Final
from urllib.parse import quote

import attrs

from hlbook.errors import HistoryError

__all__ = [
    "APPLICATION_ID",
    "APPLICATION_NAME",
    "SCHEMA_VERSION",
    "KeyClock",
    "OpenedDatabase",
    "key_of",
    "open_database",
    "open_reader",
    "time_of",
]

APPLICATION_ID: Final = 0x686C626B
"""SQLite ``application_id`` of a history file: ``b"hlbk"``."""

APPLICATION_NAME: Final = "hlbook-history"

SCHEMA_VERSION: Final = 1

_KEY_SHIFT: Final = 20
"""Rows per millisecond a key can tell apart (about a million)."""

_SQLITE_HEADER: Final = b"SQLite format 3\x00"

_TABLES: Final = ("meta", "fills", "orders", "trades", "candles", "gaps")

_DDL: Final = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value ANY) WITHOUT ROWID;

-- One row per fill, as the node wrote it. id = time << 20 | sequence. Clustered by
-- user: a user's fills in time order are neighbours on disk, so userFills reads a few
-- pages, not one page per fill.
CREATE TABLE fills (
    user BLOB NOT NULL,
    id INTEGER NOT NULL,
    coin TEXT NOT NULL,
    px TEXT NOT NULL,
    sz TEXT NOT NULL,
    side TEXT NOT NULL,
    time INTEGER NOT NULL,
    start_position TEXT NOT NULL,
    dir TEXT NOT NULL,
    closed_pnl TEXT NOT NULL,
    hash BLOB NOT NULL,
    oid INTEGER NOT NULL,
    crossed INTEGER NOT NULL,
    fee TEXT NOT NULL,
    tid INTEGER NOT NULL,
    fee_token TEXT NOT NULL,
    twap_id INTEGER,
    cloid BLOB,
    liquidation TEXT,
    builder_fee TEXT,
    deployer_fee TEXT,
    PRIMARY KEY (user, id)
) WITHOUT ROWID;
-- Time order across users: retention deletes.
CREATE INDEX fills_id ON fills (id);

-- The latest recorded status of each finished order. id = status time << 20 | sequence.
CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    oid INTEGER NOT NULL UNIQUE,
    user BLOB NOT NULL,
    cloid BLOB,
    status TEXT NOT NULL,
    status_time INTEGER NOT NULL,
    coin TEXT NOT NULL,
    side TEXT NOT NULL,
    limit_px TEXT NOT NULL,
    sz TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    orig_sz TEXT NOT NULL,
    trigger_condition TEXT NOT NULL,
    is_trigger INTEGER NOT NULL,
    trigger_px TEXT NOT NULL,
    children TEXT,
    is_position_tpsl INTEGER NOT NULL,
    reduce_only INTEGER NOT NULL,
    order_type TEXT NOT NULL,
    tif TEXT
);
CREATE INDEX orders_cloid ON orders (cloid) WHERE cloid IS NOT NULL;

-- One row per trade (the two fills of a tid). id = time << 20 | sequence.
CREATE TABLE trades (
    id INTEGER PRIMARY KEY,
    coin TEXT NOT NULL,
    side TEXT NOT NULL,
    px TEXT NOT NULL,
    sz TEXT NOT NULL,
    time INTEGER NOT NULL,
    hash BLOB NOT NULL,
    tid INTEGER NOT NULL,
    buyer BLOB NOT NULL,
    seller BLOB NOT NULL
);
CREATE INDEX trades_coin ON trades (coin);

-- Every candle with at least one trade (the current one is rewritten as it changes).
CREATE TABLE candles (
    coin TEXT NOT NULL,
    interval TEXT NOT NULL,
    t INTEGER NOT NULL,
    close_time INTEGER NOT NULL,
    o TEXT NOT NULL,
    c TEXT NOT NULL,
    h TEXT NOT NULL,
    l TEXT NOT NULL,
    v TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (coin, interval, t)
) WITHOUT ROWID;
-- Per interval in time order: retention deletes, and the current candles at a restart.
CREATE INDEX candles_interval ON candles (interval, t);

-- What the store knows it does not have (dropped, failed, hlbook not running).
CREATE TABLE gaps (
    id INTEGER PRIMARY KEY,
    stream TEXT NOT NULL,
    reason TEXT NOT NULL,
    from_height INTEGER NOT NULL,
    to_height INTEGER NOT NULL,
    from_time INTEGER NOT NULL,
    to_time INTEGER NOT NULL,
    rows INTEGER NOT NULL
);
"""


MAX_TIME_MS: Final = (1 << (63 - _KEY_SHIFT)) - 1
"""The latest time a row key can hold (in the year 2248): requests are clamped to it."""


def key_of(time_ms: int) -> int:
    """The smallest row key for ``time_ms``."""
    return time_ms << _KEY_SHIFT


def time_of(key: int) -> int:
    """The time (ms) a row key stands for."""
    return key >> _KEY_SHIFT


class KeyClock:
    """Hands out strictly increasing row keys ``time << 20 | sequence``.

    A key never goes below the previous one, so rows stay in insertion order
    even if a time repeats or (it should not) goes backwards.
    """

    def __init__(self, last: int = 0) -> None:
        self.last = last

    def next(self, time_ms: int) -> int:
        """The key for a row at ``time_ms``."""
        key = time_ms << _KEY_SHIFT
        if key <= self.last:
            key = self.last + 1
        self.last = key
        return key


def _configure(conn: sqlite3.Connection, *, writer: bool) -> None:
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA temp_store = MEMORY")
    if writer:
        # NORMAL in WAL mode: commits need no fsync; a power cut may lose the
        # last transactions but never corrupts the file.
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA journal_size_limit = 67108864")
        conn.execute("PRAGMA cache_size = -32000")


def _check_existing(conn: sqlite3.Connection, where: str) -> None:
    """Raise unless ``conn`` holds an hlbook history this version can use."""
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = [
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
        ).fetchall()
    ]
    if app_id != APPLICATION_ID:
        listed = ", ".join(tables[:8]) + (", …" if len(tables) > 8 else "")
        raise HistoryError(
            where,
            f"an SQLite database of another program (application_id {app_id:#x}, "
            f"tables: {listed or 'none'}); refusing to touch it — choose another --history path",
        )
    if version > SCHEMA_VERSION:
        raise HistoryError(
            where,
            f"written by a newer hlbook (schema version {version}; this one reads up to "
            f"{SCHEMA_VERSION}); upgrade hlbook or choose another --history path",
        )
    missing = [name for name in _TABLES if name not in tables]
    if missing:
        raise HistoryError(where, f"damaged hlbook history: table(s) {missing} are missing")
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    if meta.get("application") != APPLICATION_NAME:
        raise HistoryError(where, "damaged hlbook history: its meta table does not name hlbook")
    if meta.get("schema_version") != version:
        raise HistoryError(
            where,
            f"damaged hlbook history: schema version {meta.get('schema_version')!r} in meta, "
            f"{version} in the header",
        )
    if version < SCHEMA_VERSION:  # pragma: no cover - there is no older schema yet
        raise HistoryError(where, f"schema version {version} has no migration")
    # Touch each table's newest rows: damage on those pages shows up now, not mid-run.
    for table in ("fills", "orders", "trades", "gaps"):
        conn.execute(f"SELECT * FROM {table} ORDER BY id DESC LIMIT 1").fetchall()
    conn.execute("SELECT * FROM candles ORDER BY coin DESC LIMIT 1").fetchall()


def _create(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        for statement in _DDL.split(";\n"):
            if statement.strip():
                conn.execute(statement)
        conn.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?)",
            [("application", APPLICATION_NAME), ("schema_version", SCHEMA_VERSION)],
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def lock_writer(path: str) -> int:
    """Make this the only writer of the history file ``path``; the lock's descriptor.

    Two writers of one file (two hlbooks given the same ``--history``, or two
    snapshot paths in one directory) collide on every row's key and lose rows
    on both sides. The lock is ``flock`` on ``PATH.lock`` beside the file: one
    per open, so a second store in the same process is refused too, and the
    kernel lets go of it when a process dies. Not on the database file itself:
    closing any other descriptor of it would drop SQLite's own POSIX locks.
    Close the descriptor after the database.
    """
    lock_path = f"{path}.lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise HistoryError(path, f"cannot open {lock_path}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = ""
        with contextlib.suppress(OSError):
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        os.close(fd)
        raise HistoryError(
            path,
            f"in use by another hlbook (pid {holder or 'unknown'}, holding {lock_path}): "
            "give each hlbook its own --history file",
        ) from None
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


@attrs.frozen
class OpenedDatabase:
    """The writer's connection to a history, and whether opening it created the history."""

    conn: sqlite3.Connection
    created: bool
    """The file was absent or empty: a new history (its schema written just now)."""


def open_database(path: str | os.PathLike[str] | None) -> OpenedDatabase:
    """Open (creating if new) the history at ``path``; ``None``: a private in-memory one.

    Returns the writer's connection (autocommit; transactions are explicit),
    in WAL mode for a file, and whether it created the history. Raises
    :class:`~hlbook.errors.HistoryError` (path and reason) for anything that
    is not this hlbook's history.
    """
    if path is None:
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        _configure(conn, writer=True)
        _create(conn)
        return OpenedDatabase(conn, created=True)
    file = Path(path)
    where = str(file)
    if file.exists() and not file.is_file():
        raise HistoryError(where, "not a regular file (a directory or a device)")
    if file.exists() and file.stat().st_size > 0:
        try:
            with file.open("rb") as handle:
                header = handle.read(len(_SQLITE_HEADER))
        except OSError as exc:
            raise HistoryError(where, f"cannot read it: {exc.strerror or exc}") from None
        if header != _SQLITE_HEADER:
            raise HistoryError(
                where,
                "not an SQLite database (corrupt, or another kind of file); "
                "refusing to overwrite it — move it away or choose another --history path",
            )
    try:
        conn = sqlite3.connect(where, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise HistoryError(where, f"cannot open it: {exc}") from None
    try:
        _configure(conn, writer=True)
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        created = tables == 0 and app_id == 0
        if created:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise HistoryError(where, f"cannot use write-ahead logging (journal mode {mode})")
            _create(conn)
        else:
            _check_existing(conn, where)
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise HistoryError(where, f"cannot use write-ahead logging (journal mode {mode})")
    except HistoryError:
        conn.close()
        raise
    except sqlite3.OperationalError as exc:
        # Not the file's fault: the disk is full, the directory read-only, the file locked.
        conn.close()
        raise HistoryError(where, f"cannot open it for writing: {exc}") from None
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise HistoryError(where, f"corrupt or unreadable SQLite database: {exc}") from None
    return OpenedDatabase(conn, created)


def open_reader(path: str) -> sqlite3.Connection:
    """A connection for query threads to the history file at ``path``: it never writes.

    Nor creates: a query while the file is missing (deleted while hlbook runs)
    fails instead of leaving an empty file where the writer looks for its own.
    """
    try:
        conn = sqlite3.connect(
            f"file:{quote(path)}?mode=rw", uri=True, isolation_level=None, check_same_thread=False
        )
        _configure(conn, writer=False)
        conn.execute("PRAGMA query_only = ON")
    except sqlite3.Error as exc:
        raise HistoryError(path, f"cannot open it for reading: {exc}") from None
    return conn
