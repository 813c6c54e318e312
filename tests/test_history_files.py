"""The history file taken away under a running store (real files, real SQLite): deleted,
moved away, replaced by another program's file or by an hlbook history, its lock file
deleted; and the line that says whether a store was created or resumed."""

import logging
import os
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from history_support import ALICE, T0, record
from test_history_store import blocks

from hlbook.errors import HistoryError
from hlbook.history import FILLS, STATUSES, HistoryRecorder, HistoryStore


def remove_all(path: Path) -> None:
    """``rm PATH*``: the file, its write-ahead log, its shared-memory index, its lock."""
    for suffix in ("", "-wal", "-shm", ".lock"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def loss_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if "while hlbook ran" in r.getMessage() and r.levelno == logging.ERROR
    ]


@pytest.mark.parametrize("how", ["the file", "all its files"])
def test_a_file_deleted_under_a_running_store_is_made_again_and_the_loss_is_a_gap(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    # SQLite had gone on writing into the deleted inode: the disk space was never freed,
    # and after a restart everything recorded since the deletion was gone.
    caplog.set_level(logging.INFO, logger="hlbook.history")
    path = tmp_path / "history.sqlite"
    with HistoryStore(path) as store:
        recorder = HistoryRecorder(store)
        record(recorder, blocks(10))
        assert store.flush(10)
        if how == "the file":
            path.unlink()
        else:
            remove_all(path)
        store.request_file_check()  # what the writer does every check_interval
        assert store.flush(10)
        assert path.is_file()
        assert Path(f"{path}.lock").is_file()
        with pytest.raises(HistoryError, match="in use by another hlbook"):
            HistoryStore(path)  # the lock is held again: one writer still
        record(recorder, blocks(5, start_height=110, start=T0 + 10 * 70))
        assert store.flush(10)
        assert len(store.fills(ALICE).fills) == 5
        stats = store.statistics()
        assert stats.files_lost == 1
        assert stats.gaps == 2
        gaps = store.gaps()
        assert [(g.stream, g.reason) for g in gaps] == [(FILLS, "deleted"), (STATUSES, "deleted")]
        assert [(g.from_height, g.to_height) for g in gaps] == [(0, 109), (0, 109)]
        assert gaps[0].from_time == T0
        assert gaps[0].to_time == T0 + 9 * 70
        assert store.fills(ALICE, start=0, end=T0 + 100).gaps == (gaps[0],)  # in answers
    [line] = loss_lines(caplog)
    assert f"history store {path} was deleted or moved away while hlbook ran" in line
    assert "blocks up to 109" in line
    assert f"created new history store {path}, recording from block 110 on" in line
    assert "the lost range is a gap" in line
    # A restart finds what was recorded since, and the gaps.
    with HistoryStore(path) as again:
        assert again.opened.startswith(f"resuming history store {path} at block 114 (")
        assert len(again.fills(ALICE).fills) == 5
        assert again.gaps() == gaps


def test_the_writer_finds_a_deleted_file_by_itself_and_a_restart_finds_what_followed(
    tmp_path: Path,
) -> None:
    # Only what an operator does: delete the file, wait, restart.
    path = tmp_path / "history.sqlite"
    with HistoryStore(path) as store:
        recorder = HistoryRecorder(store)
        record(recorder, blocks(3))
        assert store.flush(10)
        remove_all(path)
        deadline = time.monotonic() + 30  # the writer looks every second
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert path.is_file()
        record(recorder, blocks(4, start_height=103, start=T0 + 210))
        assert store.flush(10)
    with HistoryStore(path) as again:
        assert len(again.fills(ALICE).fills) == 4
        assert again.last_seen(FILLS) == (106, T0 + 6 * 70)


def test_a_file_moved_away_is_complete_where_it_went(tmp_path: Path) -> None:
    # Its last transactions were in PATH-wal, named after the old path: checkpointed into
    # the file before it is let go, or the moved file lacks them.
    path = tmp_path / "history.sqlite"
    moved = tmp_path / "archive.sqlite"
    with HistoryStore(path) as store:
        recorder = HistoryRecorder(store)
        record(recorder, blocks(10))
        assert store.flush(10)
        path.rename(moved)
        store.request_file_check()
        assert store.flush(10)
        record(recorder, blocks(2, start_height=110, start=T0 + 700))
        assert store.flush(10)
        assert len(store.fills(ALICE).fills) == 2
        assert not Path(f"{moved}-wal").exists()
    with sqlite3.connect(moved) as archive:  # on its own, no -wal beside it
        assert archive.execute("SELECT count(*) FROM fills").fetchone()[0] == 20
    with HistoryStore(moved) as archived:
        assert len(archived.fills(ALICE).fills) == 10


def test_another_programs_file_put_in_its_place_is_not_touched_and_writes_wait(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="hlbook.history")
    path = tmp_path / "history.sqlite"
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, amount TEXT)")
    with HistoryStore(path, commit_interval=0.01) as store:
        recorder = HistoryRecorder(store)
        record(recorder, blocks(10))
        assert store.flush(10)
        path.rename(tmp_path / "mine.sqlite")
        other.rename(path)
        before = path.read_bytes()
        store.request_file_check()
        assert store.flush(10)
        # Recorded meanwhile: kept (retried: writes fail, there is no file to write).
        record(recorder, blocks(5, start_height=110, start=T0 + 700))
        with pytest.raises(HistoryError, match="another program"):
            store.fills(ALICE)
        deadline = time.monotonic() + 30
        while store.statistics().write_failures == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert store.statistics().write_failures >= 1
        assert path.read_bytes() == before
        [line] = loss_lines(caplog)
        assert "was replaced by another file" in line
        assert "cannot open a history store there now: an SQLite database of another" in line
        # The operator moves it away: the path is opened again at the next check.
        path.unlink()
        store.request_file_check()
        assert store.flush(30)
        assert len(store.fills(ALICE).fills) == 5  # the kept rows, nothing lost
        assert [g.reason for g in store.gaps()] == ["replaced", "replaced"]
    assert any(
        f"history store {path} can be written again: created new history store" in r.getMessage()
        for r in caplog.records
    )


def test_an_hlbook_history_put_in_its_place_is_resumed(tmp_path: Path) -> None:
    # A backup put back while hlbook runs: the store goes on with it, as a restart would,
    # and what only the replaced file held is a gap.
    path = tmp_path / "history.sqlite"
    backup = tmp_path / "backup.sqlite"
    with HistoryStore(path) as store:
        recorder = HistoryRecorder(store)
        record(recorder, blocks(10))
        assert store.flush(10)
        with sqlite3.connect(path) as live, sqlite3.connect(backup) as copy:
            live.backup(copy)
        record(recorder, blocks(10, start_height=110, start=T0 + 700))
        assert store.flush(10)
        shutil.copy(backup, tmp_path / "put-back.sqlite")
        os.replace(tmp_path / "put-back.sqlite", path)
        store.request_file_check()
        assert store.flush(10)
        record(recorder, blocks(1, start_height=120, start=T0 + 1400))
        assert store.flush(10)
        assert len(store.fills(ALICE).fills) == 11  # the backup's 10 and the new one
        fills_gap, statuses_gap = store.gaps()
        assert (fills_gap.reason, fills_gap.from_height, fills_gap.to_height) == (
            "replaced",
            110,
            119,
        )
        assert fills_gap.from_time > T0 + 9 * 70  # after what the backup holds
        assert statuses_gap.stream == STATUSES


def test_a_deleted_lock_file_is_taken_again(tmp_path: Path) -> None:
    # Without it a second hlbook could open the same file: two writers collide on keys.
    path = tmp_path / "history.sqlite"
    with HistoryStore(path) as store:
        Path(f"{path}.lock").unlink()
        store.request_file_check()
        assert store.flush(10)
        assert Path(f"{path}.lock").is_file()
        with pytest.raises(HistoryError, match="in use by another hlbook"):
            HistoryStore(path)
        record(HistoryRecorder(store), blocks(2))
        assert store.flush(10)
        assert len(store.fills(ALICE).fills) == 2
        assert store.statistics().files_lost == 0


def test_a_second_writer_that_took_the_lock_meanwhile_stops_this_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="hlbook.history")
    path = tmp_path / "history.sqlite"
    with HistoryStore(path, commit_interval=0.01) as first:
        recorder = HistoryRecorder(first)
        record(recorder, blocks(3))
        assert first.flush(10)
        Path(f"{path}.lock").unlink()
        second = HistoryStore(path)  # the lock file was gone: nothing stopped it
        first.request_file_check()
        assert first.flush(10)
        assert any("stops writing it" in r.getMessage() for r in caplog.records)
        with pytest.raises(HistoryError, match="in use by another hlbook"):
            first.fills(ALICE)
        second.close()
        first.request_file_check()  # the lock is free: the same file, resumed
        assert first.flush(10)
        record(recorder, blocks(2, start_height=103, start=T0 + 210))
        assert first.flush(10)
        assert len(first.fills(ALICE).fills) == 5
        assert first.statistics().files_lost == 0
        assert first.gaps() == ()


def test_the_opening_says_whether_the_store_was_created_or_resumed(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    with HistoryStore(path) as store:
        assert store.opened == f"created new history store {path}"
    with HistoryStore(path) as store:
        assert store.opened.startswith(f"resuming history store {path} (nothing recorded")
        record(HistoryRecorder(store), blocks(20))
    with HistoryStore(path) as store:
        line = store.opened
    assert line.startswith(f"resuming history store {path} at block 119 (block time ")
    assert "rows from 2026-05-05 17:39:13 UTC" in line
    assert "kB; 0 gaps)" in line
    remove_all(path)
    with HistoryStore(path) as store:  # the file went while hlbook was stopped
        assert store.opened == f"created new history store {path}"


def test_queries_while_the_file_is_deleted_again_and_again_fail_cleanly_or_answer(
    tmp_path: Path,
) -> None:
    # Readers of the old file are still open while the new one is made beside its
    # sidecars: no crash (a shared-memory index truncated under a mapping is SIGBUS), no
    # error but the store's own, and the answers of the file that is there at the end.
    path = tmp_path / "history.sqlite"
    errors: list[BaseException] = []
    answered = 0
    with HistoryStore(path, check_interval=0.01, commit_interval=0.005) as store:
        recorder = HistoryRecorder(store)
        record(recorder, blocks(50))
        assert store.flush(10)
        done = threading.Event()

        def reader() -> None:
            # Until it has answered once after the deletions end (on a loaded machine every
            # query during them may fail, cleanly), for at most a minute.
            nonlocal answered
            give_up = time.monotonic() + 60
            while time.monotonic() < give_up:
                ending = done.is_set()
                try:
                    store.fills(ALICE, limit=5000)
                    answered += 1
                    if ending:
                        return
                except HistoryError:
                    time.sleep(0.001)
                except BaseException as exc:
                    errors.append(exc)
                    return

        threads = [threading.Thread(target=reader) for _ in range(3)]
        for thread in threads:
            thread.start()
        height = 150
        for _ in range(8):
            remove_all(path)
            record(recorder, blocks(10, start_height=height, start=T0 + height * 70))
            height += 10
            deadline = time.monotonic() + 30
            while not path.exists() and time.monotonic() < deadline:
                time.sleep(0.005)
        done.set()
        for thread in threads:
            thread.join(30)
        record(recorder, blocks(1, start_height=height, start=T0 + height * 70))
        assert store.flush(30)
        final = store.fills(ALICE, limit=5000).fills
        assert final
        assert final[0]["time"] == T0 + height * 70
    assert errors == []
    assert answered >= len(threads)  # each, at least once the file stays
    with HistoryStore(path) as again:  # the file at the path is whole
        assert again.fills(ALICE, limit=5000).fills == final


def test_writes_that_go_on_failing_are_one_gap_per_stream_not_one_per_attempt(
    tmp_path: Path,
) -> None:
    # The directory is gone: the path cannot be opened again, every write fails, and each
    # given-up transaction adds to the gap of its stream instead of a gap of its own
    # (several a second had piled up in memory, each inserted again at every attempt).
    folder = tmp_path / "history"
    folder.mkdir()
    with HistoryStore(folder / "h.sqlite", retry_for=0.3, check_interval=0.1) as store:
        recorder = HistoryRecorder(store)
        shutil.rmtree(folder)
        start = time.monotonic()
        height = 100
        while time.monotonic() - start < 2.5:  # several retry_for periods given up
            record(recorder, blocks(1, start_height=height, start=T0 + height * 70))
            height += 1
            time.sleep(0.02)
        stats = store.statistics()
        gaps = [gap for gap in store.gaps() if gap.reason == "write-failed"]
        assert stats.gaps == len(gaps) == 2, gaps  # fills and statuses, one each
        assert {gap.stream for gap in gaps} == {FILLS, STATUSES}
        # From the first block not in the deleted file (the writer may have put one or two
        # there before its check saw it go) to one of the last given up.
        assert all(gap.from_height <= 110 < 130 < gap.to_height for gap in gaps), gaps


def test_a_file_moved_away_during_a_long_query_is_still_complete(tmp_path: Path) -> None:
    # A query reading since before the last commits holds the log's end back longer than
    # the busy timeout (5 s): the checkpoint is tried again once it ends, instead of the
    # log being removed with the file's last transactions in it.
    path, moved = tmp_path / "history.sqlite", tmp_path / "archive.sqlite"
    with HistoryStore(path) as store:
        recorder = HistoryRecorder(store)
        record(recorder, blocks(10))
        assert store.flush(10)
        inside = threading.Event()

        def slow(conn: sqlite3.Connection) -> int:
            found: int = conn.execute("SELECT count(*) FROM fills").fetchone()[0]
            inside.set()
            time.sleep(5.5)  # in its read transaction all along
            return found

        reader = threading.Thread(target=store._read, args=(slow,))
        reader.start()
        assert inside.wait(10)
        record(recorder, blocks(5, start_height=110, start=T0 + 10 * 70))  # after its start
        assert store.flush(10)
        path.rename(moved)
        store.request_file_check()
        assert store.flush(30)
        reader.join(10)
    with sqlite3.connect(f"file:{moved}?mode=ro", uri=True) as archive:
        assert archive.execute("SELECT count(*) FROM fills").fetchone()[0] == 30  # 15 trades
