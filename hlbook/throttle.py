"""How often to log something that can happen many times a second (sans-I/O).

The first occurrence is logged at once, then at most one line per interval, saying
how many happened since the last line and what the latest one was. The caller passes
the time (any monotonic clock) and formats the line.
"""

import attrs

__all__ = ["Report", "Throttle"]


@attrs.frozen
class Report:
    """What to log now: ``count`` occurrences since the last line, ``seconds`` after it
    (``None``: this is the first line), and the latest one's ``detail``."""

    count: int
    detail: str
    seconds: float | None


class Throttle:
    """The first occurrence at once, then at most one :class:`Report` per ``interval``.

    Feed it :meth:`occurred` for each occurrence and :meth:`tick` now and then, so that
    a count never waits for the next occurrence to be logged.
    """

    def __init__(self, interval: float = 60.0) -> None:
        self.interval = interval
        self._reported_at: float | None = None
        self._count = 0
        self._detail = ""

    def occurred(self, now: float, detail: str, count: int = 1) -> Report | None:
        """``count`` occurrences at ``now``, the latest described by ``detail``; the report
        due now, if any."""
        self._count += count
        self._detail = detail
        return self.tick(now)

    def tick(self, now: float) -> Report | None:
        """The report due at ``now`` for occurrences not reported yet, if any."""
        if not self._count:
            return None
        since = self._reported_at
        if since is not None and now - since < self.interval:
            return None
        report = Report(self._count, self._detail, None if since is None else now - since)
        self._reported_at = now
        self._count = 0
        return report
