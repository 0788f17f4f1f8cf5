"""The log limiter a peer's bad frames go through: at most ``burst`` lines a period, the rest
counted and summed up in one line when the period ends (its clock given, so no time passes)."""
import logging

from a6fast.server.loglimit import LogLimiter


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def limiter(caplog):
    clock = Clock()
    scheduled = []
    limit = LogLimiter(logging.getLogger("a6fast.test.loglimit"), "warnings about bad frames",
                       burst=3, period=1.0, clock=clock,
                       schedule=lambda delay, fn: scheduled.append((delay, fn)))
    caplog.set_level(logging.WARNING, logger="a6fast.test.loglimit")
    return limit, clock, scheduled


def messages(caplog):
    return [record.getMessage() for record in caplog.records]


def test_at_most_burst_lines_a_period_and_one_line_counting_the_rest(caplog):
    limit, clock, scheduled = limiter(caplog)
    for n in range(10):
        limit.warning("bad frame %d", n)
    assert messages(caplog) == ["bad frame 0", "bad frame 1", "bad frame 2"]
    # the count is logged when the period ends, by the loop's timer: one timer for all seven
    assert [delay for delay, _ in scheduled] == [1.0]
    clock.now += 1.0
    scheduled[0][1]()
    assert messages(caplog)[3:] == [
        "7 more warnings about bad frames suppressed (at most 3 logged per 1s)"]
    assert limit.suppressed_total == 7


def test_a_new_period_lets_burst_lines_through_again(caplog):
    limit, clock, scheduled = limiter(caplog)
    for n in range(5):
        limit.warning("first %d", n)
    clock.now += 0.5  # still the first period
    limit.warning("still first")
    clock.now += 0.5  # the second begins: the count of the first comes before its lines
    for n in range(5):
        limit.warning("second %d", n)
    assert messages(caplog) == [
        "first 0", "first 1", "first 2",
        "3 more warnings about bad frames suppressed (at most 3 logged per 1s)",
        "second 0", "second 1", "second 2"]
    assert limit.suppressed_total == 5


def test_without_a_timer_the_count_comes_with_the_next_line_let_through(caplog):
    clock = Clock()
    limit = LogLimiter(logging.getLogger("a6fast.test.loglimit"), "errors", burst=1,
                       period=2.0, clock=clock)
    caplog.set_level(logging.WARNING, logger="a6fast.test.loglimit")
    limit.error("one")
    limit.error("two")
    limit.error("three")
    clock.now += 2.0
    limit.error("four")
    assert messages(caplog) == ["one", "2 more errors suppressed (at most 1 logged per 2s)",
                                "four"]
