"""Rate limits for log lines a peer (or a plugin failing on every call) can trigger once per frame.

A gateway gone wrong, or anyone who can reach the socket, may send thousands of bad frames a
second; each is still answered, but only the first ``burst`` of each second are logged, then one
line says how many more there were.
"""
import logging
import time


class LogLimiter:
    """At most ``burst`` lines per ``period`` seconds through ``logger``; the rest are counted.

    The count of suppressed lines is logged when the period ends: by ``schedule(delay, fn)``
    (the loop's ``call_later``) when given, else with the next line that gets through.
    """

    __slots__ = ("logger", "what", "burst", "period", "clock", "schedule", "_window_end", "_count",
                 "_suppressed", "_flush_pending", "suppressed_total")

    def __init__(self, logger, what, burst=20, period=1.0, clock=time.monotonic, schedule=None):
        self.logger = logger
        self.what = what
        self.burst = burst
        self.period = period
        self.clock = clock
        self.schedule = schedule
        self._window_end = 0.0
        self._count = 0
        self._suppressed = 0
        self._flush_pending = False
        self.suppressed_total = 0

    def log(self, level, msg, *args, exc_info=None, extra=None):
        now = self.clock()
        if now >= self._window_end:
            self.flush()
            self._window_end = now + self.period
            self._count = 0
        if self._count < self.burst:
            self._count += 1
            self.logger.log(level, msg, *args, exc_info=exc_info, extra=extra)
            return
        self._suppressed += 1
        self.suppressed_total += 1
        if self.schedule is not None and not self._flush_pending:
            self._flush_pending = True
            self.schedule(max(0.0, self._window_end - now), self._scheduled_flush)

    def warning(self, msg, *args, extra=None):
        self.log(logging.WARNING, msg, *args, extra=extra)

    def error(self, msg, *args, exc_info=None, extra=None):
        self.log(logging.ERROR, msg, *args, exc_info=exc_info, extra=extra)

    def _scheduled_flush(self):
        self._flush_pending = False
        self.flush()

    def flush(self):
        """Log how many lines were suppressed since the last such line, if any."""
        if self._suppressed:
            self.logger.warning("%d more %s suppressed (at most %d logged per %gs)",
                                self._suppressed, self.what, self.burst, self.period)
            self._suppressed = 0


def clip(text, limit=120):
    """A peer-chosen string as logged: repr'd, its first ``limit`` characters only."""
    if text is None or len(text) <= limit:
        return repr(text)
    return "%r... (%d characters)" % (text[:limit], len(text))
