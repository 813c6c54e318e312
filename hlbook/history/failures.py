"""Which history write failures and recoveries get a log line (sans-I/O: time is an input).

A disk that refuses every write makes one run of failures: one line when it
starts, one when writes work again (the store's own "still failing" line, at
most once a minute, covers the time between). A file damaged inside makes
writes fail only *sometimes* — each transaction that touches a bad page fails,
the next one works — and one line per start and end of a run was two lines a
second. So: a run of failures that starts within ``quiet`` seconds of the end
of the previous one is *counted*, not logged, and so is its end (unless the
run itself lasted ``quiet`` seconds: an outage the log announced). What was
counted is reported in one line, :meth:`FailureLog.summary`, at most every
``every`` seconds, and at close.
"""

from typing import Final

import attrs

__all__ = ["FailureLog", "FlapSummary"]

QUIET: Final = 60.0
"""Seconds after writes work again within which a new failure is counted, not logged."""


@attrs.frozen
class FlapSummary:
    """What :class:`FailureLog` counted instead of logging, over ``seconds``."""

    failures: int
    """Runs of failures that started without a line."""
    recoveries: int
    """Ends of runs (writes worked again) without a line."""
    seconds: float
    """From the first event counted to the summary."""


class FailureLog:
    """Decides which starts and ends of runs of write failures are logged.

    Call :meth:`failure` when a run starts (the first failed write after one
    that worked), :meth:`recovery` when it ends, and :meth:`summary` from time
    to time (every few seconds) and at close; each says whether to log.
    """

    def __init__(self, *, quiet: float = QUIET, every: float = QUIET) -> None:
        self.quiet = quiet
        self.every = every
        self._last_recovery: float | None = None
        self._run_start: float | None = None
        self._run_logged = True
        self._failures = 0
        self._recoveries = 0
        self._counting_since: float | None = None

    def failure(self, now: float) -> bool:
        """A run of failures starts at ``now``; ``True``: log it."""
        self._run_start = now
        recent = self._last_recovery is not None and now - self._last_recovery < self.quiet
        self._run_logged = not recent
        if recent:
            self._count(now)
            self._failures += 1
        return not recent

    def recovery(self, now: float) -> bool:
        """The run ends at ``now`` (a write worked); ``True``: log it."""
        start = self._run_start
        self._last_recovery = now
        self._run_start = None
        if self._run_logged or start is None or now - start >= self.quiet:
            return True
        self._count(now)
        self._recoveries += 1
        return False

    def summary(self, now: float, *, final: bool = False) -> FlapSummary | None:
        """What was counted, once ``every`` s after the first of it (``final``: now);
        ``None`` if nothing was, or it is not time yet. Counting starts again."""
        since = self._counting_since
        if since is None or (not final and now - since < self.every):
            return None
        found = FlapSummary(self._failures, self._recoveries, now - since)
        self._failures = self._recoveries = 0
        self._counting_since = None
        return found

    def _count(self, now: float) -> None:
        if self._counting_since is None:
            self._counting_since = now
