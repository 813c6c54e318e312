"""Write failures that come and go are counted and summed up, not logged two lines a second:
the decisions with explicit time (FailureLog), and the store on a real SQLite file whose
writes fail every other transaction."""

import logging
from pathlib import Path

import pytest
from history_support import T0, make_block, record, trade_fills
from test_history_store import blocks

from hlbook.history import HistoryRecorder, HistoryStore
from hlbook.history.failures import FailureLog, FlapSummary


def test_a_run_of_failures_and_its_end_are_logged() -> None:
    flaps = FailureLog(quiet=60, every=60)
    assert flaps.failure(100.0)
    assert flaps.recovery(130.0)
    assert flaps.summary(1000.0, final=True) is None  # nothing was held back


def test_failures_soon_after_a_recovery_are_counted_and_summed_up_once_a_minute() -> None:
    # The operator's case: a damaged page fails one transaction, the next one works,
    # for ten minutes. It was ~140 lines a minute.
    flaps = FailureLog(quiet=60, every=60)
    lines = 0
    summaries: list[FlapSummary] = []
    failures = 0
    now = 0.0
    while now < 600:
        failures += 1
        lines += flaps.failure(now)
        lines += flaps.recovery(now + 0.2)
        found = flaps.summary(now + 0.3)
        if found is not None:
            summaries.append(found)
        now += 0.43
    assert lines == 2  # the first failure and its recovery
    assert 9 <= len(summaries) <= 10  # one a minute
    assert all(59 <= s.seconds <= 61 for s in summaries)
    last = flaps.summary(now, final=True)
    assert last is not None
    summaries.append(last)
    assert sum(s.failures for s in summaries) == failures - 1
    assert sum(s.recoveries for s in summaries) == failures - 1
    assert flaps.summary(now + 1000, final=True) is None


def test_a_failure_a_quiet_minute_after_the_last_recovery_is_logged_again() -> None:
    flaps = FailureLog(quiet=60, every=60)
    assert flaps.failure(0.0)
    assert flaps.recovery(1.0)
    assert not flaps.failure(30.0)  # within the minute
    assert not flaps.recovery(31.0)
    assert flaps.failure(91.5)  # a minute after the last recovery
    assert flaps.recovery(92.0)
    summary = flaps.summary(92.0)
    assert summary == FlapSummary(failures=1, recoveries=1, seconds=62.0)


def test_the_end_of_a_long_outage_is_logged_even_if_its_start_was_counted() -> None:
    # The run started soon after a recovery (counted), then lasted: the store's "still
    # failing" lines told of it, so its end is logged too.
    flaps = FailureLog(quiet=60, every=60)
    assert flaps.failure(0.0)
    assert flaps.recovery(1.0)
    assert not flaps.failure(2.0)
    assert flaps.recovery(300.0)
    assert flaps.summary(300.0) == FlapSummary(failures=1, recoveries=0, seconds=298.0)


def test_nothing_is_summed_up_before_its_minute_unless_final() -> None:
    flaps = FailureLog(quiet=60, every=60)
    flaps.failure(0.0)
    flaps.recovery(1.0)
    flaps.failure(2.0)
    flaps.recovery(3.0)
    assert flaps.summary(61.0) is None
    assert flaps.summary(62.0) == FlapSummary(failures=1, recoveries=1, seconds=60.0)
    assert not flaps.failure(62.5)  # counting starts again
    assert not flaps.recovery(62.7)
    assert flaps.summary(63.0) is None
    assert flaps.summary(63.0, final=True) == FlapSummary(failures=1, recoveries=1, seconds=0.5)


def test_a_store_whose_writes_fail_every_other_time_logs_two_lines_and_a_summary(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Real SQLITE_FULL (max_bytes caps the file): each big block's transaction fails, each
    # small one's works. retry_for=0: a failed transaction is a gap at once (unchanged).
    caplog.set_level(logging.WARNING, logger="hlbook.history")
    path = tmp_path / "history.sqlite"
    cycles = 8
    with HistoryStore(path, max_bytes=96 * 1024, retry_for=0) as store:
        recorder = HistoryRecorder(store)
        record(recorder, blocks(20))
        assert store.flush(10)
        for i in range(cycles):
            height, when = 200 + 2 * i, T0 + 10_000 + 140 * i
            big = [f for t in range(300) for f in trade_fills(10_000 * (i + 1) + t, when)]
            for block in (
                make_block(height, when, fills=big),
                make_block(height + 1, when + 70, fills=trade_fills(900_000 + i, when + 70)),
            ):
                store.pause_writes()  # one transaction per block
                record(recorder, [block])
                store.resume_writes()
                assert store.flush(10)
        stats = store.statistics()
        # Every failure is still counted, and is still a write-failed gap.
        assert stats.write_failures == cycles
        assert [g.reason for g in store.gaps()] == ["write-failed"] * cycles
    text = [r.getMessage() for r in caplog.records]
    assert len([line for line in text if "history write failed" in line]) == 1, text
    assert len([line for line in text if "history writes work again" in line]) == 1, text
    [summary] = [line for line in text if "failed intermittently" in line]
    assert f"{cycles - 1} more times writes failed and {cycles - 1} times they worked" in summary
    assert "full" in summary  # the last error
