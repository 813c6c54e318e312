"""The history store on real SQLite files: restarts, bad files, failures, retention, slow disks."""

import json
import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from history_support import ALICE, BOB, CAROL, T0, finished, make_block, record, trade_fills

from hlbook.errors import HistoryError
from hlbook.history import (
    FILLS,
    STATUSES,
    FillsBatch,
    HistoryRecorder,
    HistoryStore,
)
from hlbook.history.schema import APPLICATION_ID, SCHEMA_VERSION
from hlbook.model import Block

ROOT = Path(__file__).resolve().parent.parent
MINUTE = 60_000
DAY = 86_400_000


def blocks(count: int, *, start_height: int = 100, start: int = T0, step: int = 70) -> list[Block]:
    """``count`` blocks, each with one ALICE-buys-from-BOB trade and one canceled order."""
    return [
        make_block(
            start_height + i,
            start + i * step,
            fills=trade_fills(1000 + start_height + i, start + i * step, px=f"{100 + i % 7}.0"),
            statuses=[finished(5000 + start_height + i, time=start + i * step)],
        )
        for i in range(count)
    ]


def open_store(path: Path | None, **options: object) -> HistoryStore:
    return HistoryStore(path, **options)  # type: ignore[arg-type]


# -- restart ---------------------------------------------------------------------


def test_restart_with_the_same_file_returns_what_was_recorded(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    with open_store(path) as store:
        recorder = HistoryRecorder(store)
        record(recorder, blocks(30))
        assert store.flush(10)
        fills_before = store.fills(ALICE).fills
        candles_before = store.candles("BTC", "1m", T0)[0]
        order_before = store.finished_order(ALICE, oid=5100)[0]
        current = recorder.current_candle("BTC", "1h")
    assert len(fills_before) == 30
    assert fills_before[0]["tid"] == 1129  # newest first
    assert order_before is not None

    with open_store(path) as store:
        assert store.fills(ALICE).fills == fills_before
        assert store.candles("BTC", "1m", T0)[0] == candles_before
        assert store.finished_order(ALICE, oid=5100)[0] == order_before
        assert store.last_seen(FILLS) == (129, T0 + 29 * 70)
        # The recorder resumes the current candles, and ignores blocks it already has.
        recorder = HistoryRecorder(store)
        assert recorder.current_candle("BTC", "1h") == current
        record(recorder, blocks(30))  # the same blocks again: nothing recorded twice
        record(recorder, blocks(1, start_height=130, start=T0 + 30 * 70))
        assert store.flush(10)
        assert len(store.fills(ALICE).fills) == 31
        hour = recorder.current_candle("BTC", "1h")
        assert current is not None
        assert hour is not None
        assert hour.trades == current.trades + 1
        assert store.gaps() == ()


def test_a_new_file_identifies_itself(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    open_store(path).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    assert meta["application"] == "hlbook-history"
    assert meta["schema_version"] == SCHEMA_VERSION
    conn.close()


# -- files that are not ours -----------------------------------------------------


def refused(path: Path, *words: str) -> HistoryError:
    before = path.read_bytes() if path.is_file() else None
    with pytest.raises(HistoryError) as caught:
        HistoryStore(path)
    error = caught.value
    assert error.path == str(path)
    assert str(path) in str(error)
    for word in words:
        assert word in error.reason
    if before is not None:
        assert path.read_bytes() == before, "the refused file was modified"
    return error


def test_one_file_has_one_writer(tmp_path: Path) -> None:
    # Two writers of one file collided on every row's key and lost rows on both sides.
    path = tmp_path / "history.sqlite"
    with open_store(path) as first:
        with pytest.raises(HistoryError, match=rf"in use by another hlbook \(pid {os.getpid()}"):
            open_store(path)
        record(HistoryRecorder(first), blocks(3))  # the first one is untouched and writes
        assert first.flush(10)
    with open_store(path) as again:  # closed: the file is free
        assert len(again.fills(ALICE).fills) == 3


def test_a_writer_that_dies_leaves_the_file_free(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    script = textwrap.dedent(
        f"""
        import os, sys
        from hlbook.history import HistoryStore
        store = HistoryStore({str(path)!r})
        print("open", flush=True)
        sys.stdin.readline()
        os._exit(9)  # no close: the kernel lets go of the lock
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    assert child.stdin is not None
    assert child.stdout.readline() == "open\n"
    with pytest.raises(HistoryError, match=rf"pid {child.pid}"):
        open_store(path)
    child.stdin.close()
    assert child.wait(timeout=30) == 9
    open_store(path).close()


def test_a_file_that_is_not_sqlite_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    path.write_bytes(b"this is somebody's notes, not a database\n" * 100)
    refused(path, "not an SQLite database")


def test_a_truncated_history_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    with open_store(path) as store:
        record(HistoryRecorder(store), blocks(50))
    data = path.read_bytes()
    path.write_bytes(data[:10])
    refused(path, "not an SQLite database")


def test_a_history_with_damaged_pages_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    with open_store(path) as store:
        record(HistoryRecorder(store), blocks(400))
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 6 * page
    # Overwrite everything after the schema page: the tables' pages are garbage now.
    data[page:] = bytes((i * 7 + 3) % 251 for i in range(len(data) - page))
    path.write_bytes(bytes(data))
    refused(path, "corrupt")


def test_another_programs_sqlite_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, amount TEXT)")
    conn.execute("INSERT INTO invoices (amount) VALUES ('12.50')")
    conn.commit()
    conn.close()
    error = refused(path, "another program", "invoices")
    assert "--history" in error.reason


def test_a_newer_schema_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    open_store(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    refused(path, "newer hlbook", f"schema version {SCHEMA_VERSION + 1}")


def test_paths_that_cannot_hold_a_file(tmp_path: Path) -> None:
    refused(tmp_path, "not a regular file")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(HistoryError, match="cannot open it") as caught:
        HistoryStore(blocker / "history.sqlite")
    assert caught.value.path == str(blocker / "history.sqlite")


# -- failing disks -----------------------------------------------------------------


def test_a_full_disk_is_logged_counted_and_kept_as_a_gap(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="hlbook.history")
    path = tmp_path / "history.sqlite"
    # max_bytes caps the file with SQLite's max_page_count: a real SQLITE_FULL.
    # retry_for=0: no retries, each failed transaction is a gap at once (see below for them).
    with open_store(path, max_bytes=96 * 1024, retry_for=0) as store:
        recorder = HistoryRecorder(store)
        record(recorder, blocks(20))
        assert store.flush(10)
        assert store.statistics().write_failures == 0
        big = [
            make_block(
                120 + i,
                T0 + 10_000 + i * 70,
                fills=[f for t in range(300) for f in trade_fills(10_000 * i + t, T0 + 10_000)],
            )
            for i in range(5)
        ]
        for block in big:
            store.pause_writes()  # one failing transaction per block
            record(recorder, [block])
            store.resume_writes()
            assert store.flush(10)
        stats = store.statistics()
        assert stats.write_failures >= 1
        assert "full" in stats.last_error
        gaps = store.gaps(FILLS)
        assert gaps
        assert all(gap.reason == "write-failed" for gap in gaps)
        assert sum(gap.rows for gap in gaps) > 0
        # What was written still answers, and the answer names the gap.
        answer = store.fills(ALICE)
        assert len(answer.fills) >= 20
        assert answer.gaps
        # The thread survived: small writes go on being tried (and logged once, not per block).
        assert store._thread.is_alive()
    failures = [r for r in caplog.records if "history write failed" in r.getMessage()]
    assert len(failures) == 1


def test_a_write_refused_for_a_while_loses_nothing_and_answers_never_shrink(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Another program holding a write lock (a backup, sqlite3 in a shell): the rows of the
    # refused transactions stay queued and answered, and are written once the lock goes.
    caplog.set_level(logging.WARNING, logger="hlbook.history")
    path = tmp_path / "history.sqlite"
    with open_store(path, commit_interval=0.01) as store:
        recorder = HistoryRecorder(store)
        record(recorder, blocks(5))
        assert store.flush(10)
        other = sqlite3.connect(path, timeout=0)
        other.execute("BEGIN EXCLUSIVE")
        record(recorder, blocks(10, start_height=105, start=T0 + 5 * 70))
        counts = []
        deadline = time.monotonic() + 30  # a write waits out SQLite's busy_timeout (5 s)
        while store.statistics().write_failures < 1 and time.monotonic() < deadline:
            counts.append(len(store.fills(ALICE).fills))
            time.sleep(0.05)
        assert store.statistics().write_failures >= 1
        counts.append(len(store.fills(ALICE).fills))
        other.rollback()
        other.close()
        assert store.flush(30)
        counts.append(len(store.fills(ALICE).fills))
        assert counts == sorted(counts)  # no answered fill vanished
        assert counts[-1] == 15
        assert store.gaps() == ()
        assert store.statistics().rows_dropped == 0
    text = [r.getMessage() for r in caplog.records]
    assert any("rows kept and retried" in line for line in text), text
    assert any("history writes work again" in line for line in text), text


def test_a_write_refused_longer_than_retry_for_becomes_a_gap(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    with open_store(path, commit_interval=0.01, retry_for=0.5) as store:
        recorder = HistoryRecorder(store)
        other = sqlite3.connect(path, timeout=0)
        other.execute("BEGIN EXCLUSIVE")
        record(recorder, blocks(3))
        deadline = time.monotonic() + 20
        while not store.gaps(FILLS) and time.monotonic() < deadline:
            time.sleep(0.05)
        other.rollback()
        other.close()
        assert store.flush(30)
        (gap,) = store.gaps(FILLS)
        assert gap.reason == "write-failed"
        assert (gap.from_height, gap.to_height) == (100, 102)


_FSIZE_SCRIPT = textwrap.dedent(
    """
    import json, logging, os, resource, sys
    logging.basicConfig()  # hlbook's records reach stderr only through the program's logging
    sys.path.insert(0, sys.argv[2])
    from history_support import T0, make_block, record, trade_fills
    from hlbook.history import HistoryRecorder, HistoryStore

    path = sys.argv[1]
    store = HistoryStore(path, retry_for=0)
    recorder = HistoryRecorder(store)
    record(recorder, [make_block(1, T0, fills=trade_fills(1, T0))])
    assert store.flush(10)
    # The operating system refuses to grow any file past its current size + 8 KiB.
    limit = max(os.path.getsize(path), os.path.getsize(path + "-wal")) + 8192
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    for height in range(2, 12):
        fills = [f for t in range(200) for f in trade_fills(height * 1000 + t, T0 + height)]
        record(recorder, [make_block(height, T0 + height, fills=fills)])
        store.flush(10)
    stats = store.statistics()
    answer = store.fills("0x1624a8af8b91cc781586b4d7a33b8e693dc11015")
    print(json.dumps({
        "failures": stats.write_failures, "error": stats.last_error,
        "alive": store._thread.is_alive(), "fills": len(answer.fills),
        "gaps": [g.reason for g in store.gaps()],
    }))
    store.close(timeout=5)
    """
)


def test_the_os_refusing_writes_degrades_without_raising(tmp_path: Path) -> None:
    # RLIMIT_FSIZE makes the kernel fail writes with EFBIG (Python ignores SIGXFSZ):
    # a real disk-full condition even as root. Isolated in a child process.
    result = subprocess.run(
        [sys.executable, "-c", _FSIZE_SCRIPT, str(tmp_path / "h.sqlite"), str(ROOT / "tests")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["failures"] >= 1, report
    assert report["alive"]
    assert report["fills"] >= 1
    assert "write-failed" in report["gaps"]
    assert "history write failed" in result.stderr


# -- retention ---------------------------------------------------------------------


def test_retention_deletes_old_rows_and_keeps_recent_ones(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    with open_store(path, retention_ms=7 * DAY, prune_interval=3600) as store:
        recorder = HistoryRecorder(store)
        # One block every 12 hours for 10 days.
        record(recorder, blocks(21, start=T0, step=DAY // 2))
        assert store.flush(10)
        assert len(store.fills(ALICE).fills) == 21
        store.request_prune()
        assert store.flush(10)
        newest = T0 + 20 * DAY // 2
        cutoff = newest - 7 * DAY
        kept = store.fills(ALICE).fills
        assert [f["time"] >= cutoff for f in kept] == [True] * len(kept)
        assert len(kept) == 15  # 7 days of 12-hour blocks, both ends included
        assert len(store.trades("BTC")) == 15
        assert store.finished_order(ALICE, oid=5100)[0] is None  # the oldest order is gone
        assert store.finished_order(ALICE, oid=5120)[0] is not None
        minutes = store.candles("BTC", "1m", 0)[0]
        assert minutes
        assert min(c.open_time for c in minutes) >= cutoff - MINUTE
        months = store.candles("BTC", "1M", 0)[0]
        assert len(months) == 1  # still open: kept
        assert store.statistics().pruned_rows > 0
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM fills").fetchone()[0] == 30  # both sides


# -- the slow-disk policy -----------------------------------------------------------


def test_a_stalled_writer_bounds_memory_and_records_a_counted_gap(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="hlbook.history")
    path = tmp_path / "history.sqlite"
    with open_store(path, max_pending_rows=200) as store:
        recorder = HistoryRecorder(store)
        record(recorder, blocks(5))
        assert store.flush(10)
        store.pause_writes()  # the disk "stalls"
        stalled = blocks(300, start_height=105, start=T0 + 5 * 70)
        record(recorder, stalled)
        stats = store.statistics()
        # Each block queues 2 fills + 1 trade + 14 candles + 1 order: 18 rows.
        assert stats.pending_rows <= 200
        assert stats.batches_dropped > 0
        assert stats.rows_dropped > 0
        (gap,) = store.gaps(FILLS)
        assert gap.reason == "dropped"
        assert gap.to_height == 404
        # Queries already know: the answer includes what is queued and names the gap.
        answer = store.fills(ALICE)
        assert answer.height == 404
        assert answer.gaps == (gap,)
        queued = len(answer.fills) - 5
        assert 0 < queued < 300
        # Candles lose nothing: dropped blocks' candle updates were coalesced.
        assert store.candles("BTC", "1d", T0)[0] == [recorder.current_candle("BTC", "1d")]
        store.resume_writes()
        assert store.flush(10)
        # A later block is accepted again and closes the gap, which is persisted.
        record(recorder, blocks(1, start_height=405, start=T0 + 305 * 70))
        assert store.flush(10)
        closed = store.gaps(FILLS)
        assert len(closed) == 1
        assert closed[0].rows == gap.rows
        assert sum(g.rows for g in store.gaps()) == store.statistics().rows_dropped
        assert store.candles("BTC", "1d", T0)[0] == [recorder.current_candle("BTC", "1d")]
        assert len(store.fills(ALICE).fills) == 5 + queued + 1
    with open_store(path) as store:
        assert [g.reason for g in store.gaps()] == ["dropped", "dropped"]  # fills and statuses
        assert store.fills(ALICE).gaps == store.gaps(FILLS)
    drops = [r for r in caplog.records if "dropping" in r.getMessage()]
    assert len(drops) == 2  # once per stream, not once per block


def test_answers_include_accepted_unwritten_blocks_exactly_once(tmp_path: Path) -> None:
    with open_store(tmp_path / "h.sqlite") as store:
        recorder = HistoryRecorder(store)
        record(recorder, blocks(3))
        assert store.flush(10)
        store.pause_writes()
        record(recorder, blocks(4, start_height=103, start=T0 + 3 * 70))
        pending = store.fills(ALICE)
        view = store.pending_view()
        assert len(pending.fills) == 7
        assert store.finished_order(ALICE, oid=5106)[0] is not None
        store.resume_writes()
        assert store.flush(10)
        # The same view, now that its batches are written: no duplicate.
        assert store.fills(ALICE, view=view).fills == pending.fills
        assert store.fills(ALICE).fills == pending.fills


# -- the in-memory window -------------------------------------------------------------


def test_memory_window_answers_like_a_file_and_stays_bounded(tmp_path: Path) -> None:
    with open_store(None, memory_rows=50) as memory, open_store(tmp_path / "h.sqlite") as disk:
        for store in (memory, disk):
            record(HistoryRecorder(store), blocks(40))
            assert store.flush(10)
        assert memory.fills(ALICE) == disk.fills(ALICE)
        assert memory.candles("BTC", "1m", T0) == disk.candles("BTC", "1m", T0)
        assert memory.finished_order(ALICE, oid=5120) == disk.finished_order(ALICE, oid=5120)
        assert memory.disk_bytes() == 0
        record(HistoryRecorder(memory), blocks(100, start_height=140, start=T0 + 40 * 70))
        memory.request_prune()
        assert memory.flush(10)
        kept = memory.fills(ALICE, limit=1000).fills
        # 50 fill rows in all (both sides of each trade): ALICE's newest 25.
        assert len(kept) == 25
        assert kept[0]["tid"] == 1239
        assert len(memory.trades("BTC", limit=1000)) == 50


# -- queries ------------------------------------------------------------------------


def test_fills_by_time_pages_oldest_first_and_reversed(tmp_path: Path) -> None:
    with open_store(tmp_path / "h.sqlite") as store:
        recorder = HistoryRecorder(store)
        record(recorder, blocks(4500, step=10))
        assert store.flush(30)
        first = store.fills(ALICE, start=0, newest_first=False).fills
        assert len(first) == 2000
        assert [f["time"] for f in first] == sorted(f["time"] for f in first)
        assert first[0]["time"] == T0
        second = store.fills(ALICE, start=first[-1]["time"] + 1, newest_first=False).fills
        assert second[0]["time"] == first[-1]["time"] + 10
        newest = store.fills(ALICE, start=0, newest_first=True).fills
        assert newest[0]["time"] == T0 + 4499 * 10
        assert len(newest) == 2000
        window = store.fills(ALICE, start=T0 + 100, end=T0 + 200, newest_first=False).fills
        assert [f["time"] for f in window] == [T0 + 100 + 10 * i for i in range(11)]
        assert store.fills(BOB, start=T0 + 100, end=T0 + 100).fills[0]["side"] == "A"
        assert store.fills(CAROL).fills == []


def test_aggregated_recent_fills_count_aggregated_fills(tmp_path: Path) -> None:
    with open_store(tmp_path / "h.sqlite") as store:
        recorder = HistoryRecorder(store)
        sweeps = [
            make_block(
                10 + i,
                T0 + i,
                fills=[
                    f
                    for maker in range(3)
                    for f in trade_fills(
                        100 * i + maker,
                        T0 + i,
                        taker_oid=9000 + i,
                        maker_oid=maker,
                        hash=f"0x{i:064x}",  # one transaction per sweep
                    )
                ],
            )
            for i in range(5)
        ]
        record(recorder, sweeps)
        assert store.flush(10)
        assert len(store.fills(ALICE).fills) == 15
        merged = store.fills(ALICE, aggregate=True, limit=2).fills
        assert [(f["oid"], f["sz"]) for f in merged] == [(9004, "3.0"), (9003, "3.0")]
        # The makers (BOB, resting) are not combined.
        assert len(store.fills(BOB, aggregate=True).fills) == 15


def test_candle_snapshot_range_and_limit(tmp_path: Path) -> None:
    with open_store(tmp_path / "h.sqlite") as store:
        recorder = HistoryRecorder(store, intervals=["1m"])
        start = (T0 // MINUTE) * MINUTE
        record(recorder, blocks(5200, start=start + 30_000, step=MINUTE))
        assert store.flush(30)
        candles, height, gaps = store.candles("BTC", "1m", 0)
        assert len(candles) == 5000
        assert candles[-1].open_time == start + 5199 * MINUTE  # the newest 5000
        assert [c.open_time for c in candles] == sorted(c.open_time for c in candles)
        assert (height, gaps) == (5299, ())
        # The candle containing startTime is included; endTime bounds open times.
        inside = store.candles("BTC", "1m", start + 10 * MINUTE + 5, start + 12 * MINUTE)[0]
        assert [c.open_time for c in inside] == [start + m * MINUTE for m in (10, 11, 12)]
        assert store.candles("ETH", "1m", 0)[0] == []


def test_finished_orders_by_oid_and_cloid(tmp_path: Path) -> None:
    cloid = "0x0000000000000000000651158682c804"
    with open_store(tmp_path / "h.sqlite") as store:
        recorder = HistoryRecorder(store)
        record(
            recorder,
            [
                make_block(
                    1,
                    T0,
                    statuses=[
                        finished(1, "triggered", time=T0, isTrigger=False, cloid=cloid),
                        finished(2, "badAloPxRejected", time=T0),
                        finished(3, "open", time=T0),
                        finished(4, "open", time=T0, isTrigger=True, triggerPx="90.0"),
                    ],
                ),
                make_block(
                    2,
                    T0 + 70,
                    statuses=[finished(1, "filled", time=T0 + 70, sz="0.0", cloid=cloid)],
                ),
            ],
        )
        assert store.flush(10)
        answer, height = store.finished_order(ALICE, oid=1)
        assert height == 2
        assert answer is not None
        assert answer["order"]["status"] == "filled"  # the latest status replaced triggered
        assert answer["order"]["statusTimestamp"] == T0 + 70
        assert answer["order"]["order"]["cloid"] == cloid
        assert store.finished_order(ALICE, cloid=cloid)[0] == answer
        assert store.finished_order(BOB, oid=1)[0] is None  # someone else's oid
        assert store.finished_order(BOB, cloid=cloid)[0] is None
        assert store.finished_order(ALICE, oid=2)[0] is None  # rejections are not kept
        assert store.finished_order(ALICE, oid=3)[0] is None  # resting: the book answers
        waiting = store.finished_order(ALICE, oid=4)[0]
        assert waiting is not None
        assert waiting["order"]["status"] == "open"
        with pytest.raises(ValueError, match="exactly one"):
            store.finished_order(ALICE)


def test_queries_run_while_the_writer_writes(tmp_path: Path) -> None:
    errors: list[BaseException] = []
    with open_store(tmp_path / "h.sqlite") as store:
        recorder = HistoryRecorder(store)
        record(recorder, blocks(10))
        store.flush(10)
        done = threading.Event()

        def reader() -> None:
            try:
                last = 0
                while not done.is_set():
                    count = len(store.fills(ALICE, limit=5000).fills)
                    assert count >= last  # never goes back
                    last = count
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=reader) for _ in range(3)]
        for thread in threads:
            thread.start()
        record(recorder, blocks(600, start_height=110, start=T0 + 700))
        assert store.flush(30)
        done.set()
        for thread in threads:
            thread.join(10)
        assert len(store.fills(ALICE, limit=5000).fills) == 610
    assert errors == []


def test_a_bug_in_one_batch_does_not_stop_the_writer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with open_store(tmp_path / "h.sqlite") as store:
        store.submit(FillsBatch(1, T0, fills=[("not", "a fill")]))  # type: ignore[list-item]
        assert store.flush(10)
        record(HistoryRecorder(store), blocks(3))
        assert store.flush(10)
        assert len(store.fills(ALICE).fills) == 3
    assert any("history writer error" in r.getMessage() for r in caplog.records)


def test_statuses_stream_heights_are_separate(tmp_path: Path) -> None:
    with open_store(tmp_path / "h.sqlite") as store:
        recorder = HistoryRecorder(store)
        record(recorder, blocks(3))
        assert store.last_seen(STATUSES) == (102, T0 + 140)
        assert store.last_seen(FILLS) == (102, T0 + 140)


# -- a store that cannot answer ----------------------------------------------------------


def _damage_fills_pages(path: Path) -> None:
    """Overwrite part of every other leaf page of the fills table (header intact)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        pages = [
            row[0]
            for row in conn.execute(
                "SELECT pageno FROM dbstat WHERE name = 'fills' AND pagetype = 'leaf'"
            )
        ]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    assert len(pages) > 2
    with open(path, "r+b") as file:
        for page in pages[::2]:
            file.seek((page - 1) * size + 200)
            file.write(b"\xde\xad\xbe\xef" * 200)


async def test_a_damaged_file_is_a_503_and_one_log_line_not_a_traceback_per_request(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from hlbook.history.queries import HistoryQueries
    from hlbook.info.base import InfoError
    from hlbook.info.history import UNAVAILABLE, answer_or_error

    caplog.set_level(logging.ERROR, logger="hlbook.history")
    path = tmp_path / "history.sqlite"
    with open_store(path) as store:
        record(HistoryRecorder(store), blocks(400))
        assert store.flush(10)
    _damage_fills_pages(path)
    with open_store(path) as store:
        queries = HistoryQueries(store)
        for _ in range(3):
            with pytest.raises(InfoError) as caught:
                await answer_or_error(queries.user_fills, {"type": "userFills", "user": ALICE})
            assert (caught.value.status, caught.value.code) == (503, "historyUnavailable")
            assert caught.value.msg == UNAVAILABLE  # no path for remote clients
    lines = [r for r in caplog.records if "queries fail until it is repaired" in r.getMessage()]
    assert len(lines) == 1
    assert str(path) in lines[0].getMessage()
    assert lines[0].exc_info is None
