"""The log throttle: the first occurrence at once, then a count at most once per interval."""

from hlbook.throttle import Report, Throttle


def test_the_first_at_once_then_counts_at_most_once_an_interval() -> None:
    throttle = Throttle(60.0)
    assert throttle.tick(0.0) is None  # nothing happened
    assert throttle.occurred(10.0, "a") == Report(1, "a", None)
    assert throttle.occurred(20.0, "b") is None
    assert throttle.occurred(30.0, "c", count=5) is None
    assert throttle.tick(69.9) is None
    assert throttle.tick(70.0) == Report(6, "c", 60.0)  # the latest detail, the count since
    assert throttle.tick(200.0) is None  # nothing since
    assert throttle.occurred(300.0, "d") == Report(1, "d", 230.0)  # an interval passed: at once
