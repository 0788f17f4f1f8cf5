"""The runner's event loop: epoll (or the platform's selector), timers, a wake-up pipe for
results coming back from worker threads, and the thread pool for blocking plugins.

Deliberately smaller than asyncio: one dispatch per ready fd, no protocol objects, no handles
for calls that finish at once.
"""
import collections
import heapq
import logging
import os
import select
import selectors
import signal
import threading
import time
from ..futures import ThreadPool, set_offload

log = logging.getLogger("a6fast.server")

READ = 1
WRITE = 4
# Ready fds taken per poll: epoll's buffer is then allocated by Python's small-object allocator
# (32 events of 12 bytes; the default, 1023, costs a malloc and free of 12 KiB per turn); more
# ready fds are served on the next turns.
MAX_EVENTS = 32

if hasattr(select, "epoll"):
    _EV_READ, _EV_WRITE = select.EPOLLIN, select.EPOLLOUT
    _EV_ERR = select.EPOLLERR | select.EPOLLHUP
else:  # pragma: no cover  (macOS, BSD)
    _EV_READ, _EV_WRITE, _EV_ERR = READ, WRITE, 0


class _SelectorPoller:  # pragma: no cover  (used where epoll is missing)
    """The subset of select.epoll the loop uses, over selectors.DefaultSelector."""

    def __init__(self):
        self._sel = selectors.DefaultSelector()

    def register(self, fd, events):
        self._sel.register(fd, self._mask(events))

    def modify(self, fd, events):
        self._sel.modify(fd, self._mask(events))

    def unregister(self, fd):
        self._sel.unregister(fd)

    def poll(self, timeout=-1, maxevents=-1):
        out = []
        for key, mask in self._sel.select(None if timeout < 0 else timeout):
            ev = (READ if mask & selectors.EVENT_READ else 0) | (WRITE if mask & selectors.EVENT_WRITE else 0)
            out.append((key.fd, ev))
        return out

    def close(self):
        self._sel.close()

    @staticmethod
    def _mask(events):
        return (selectors.EVENT_READ if events & READ else 0) | (selectors.EVENT_WRITE if events & WRITE else 0)


class Timer:
    __slots__ = ("when", "callback", "cancelled")

    def __init__(self, when, callback):
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self):
        self.cancelled = True

    def __lt__(self, other):
        return self.when < other.when


class Loop:
    """Dispatches ready file descriptors to their handlers; runs timers and thread hand-offs."""

    def __init__(self, threads=32):
        self.poller = select.epoll() if hasattr(select, "epoll") else _SelectorPoller()
        self.handlers = {}
        self.now = time.monotonic()
        self._timers = []
        self._ready = collections.deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.add_reader(self._wake_r, self._drain_wakeups)
        self._threads = threads
        self._pool = None
        self._loop_thread = None
        # run() asks until() after each turn only while this is true: a worker clears it until
        # a stop or a reload begins (nothing else ends its loop), saving a call per turn
        self.watch_until = True

    # file descriptors -------------------------------------------------------------------------
    def add_reader(self, fd, handler):
        """``handler(events)`` is called when ``fd`` is readable (or has an error)."""
        self.handlers[fd] = handler
        self.poller.register(fd, _EV_READ)

    def set_events(self, fd, read, write):
        self.poller.modify(fd, (_EV_READ if read else 0) | (_EV_WRITE if write else 0))

    def remove(self, fd):
        if self.handlers.pop(fd, None) is not None:
            try:
                self.poller.unregister(fd)
            except (OSError, ValueError, KeyError):
                pass

    # timers and callbacks ---------------------------------------------------------------------
    def call_later(self, delay, callback):
        timer = Timer(time.monotonic() + delay, callback)
        heapq.heappush(self._timers, timer)
        return timer

    def call_soon(self, callback, *args):
        self._ready.append((callback, args))

    def call_soon_threadsafe(self, callback, *args):
        self._ready.append((callback, args))  # deque.append is atomic
        try:
            os.write(self._wake_w, b"\0")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups already

    def _drain_wakeups(self, events):
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    # threads ----------------------------------------------------------------------------------
    def run_in_thread(self, fn, args):
        """Run ``fn(*args)`` in the pool; a Future, resolved on the loop thread, gets the result."""
        if self._pool is None:
            self._pool = ThreadPool(self._threads, self.call_soon_threadsafe)
        return self._pool.submit(fn, args)

    def threads_overdue(self):
        """Plugin threads still running work of an abandoned call."""
        return 0 if self._pool is None else self._pool.overdue()

    def in_loop_thread(self):
        return threading.current_thread() is self._loop_thread

    # signals ----------------------------------------------------------------------------------
    def on_signal(self, signum, callback):
        """Run ``callback()`` on the loop when ``signum`` arrives (the handler only wakes the loop)."""
        signal.signal(signum, lambda s, f: self.call_soon_threadsafe(callback))

    # running ----------------------------------------------------------------------------------
    def run(self, until):
        """Serve until ``until()`` is true (asked after each turn while ``watch_until``)."""
        self._loop_thread = threading.current_thread()
        set_offload(self.run_in_thread)
        poll = self.poller.poll
        handlers = self.handlers
        ready = self._ready
        timers = self._timers
        monotonic = time.monotonic
        try:
            while not (self.watch_until and until()):
                if ready:
                    timeout = 0
                elif timers:
                    # from the clock read after the last turn: a timer may fire a turn's work late
                    timeout = timers[0].when - self.now
                    if timeout < 0:
                        timeout = 0
                else:
                    timeout = 1.0
                try:
                    events = poll(timeout, MAX_EVENTS)
                except InterruptedError:
                    events = ()
                for fd, ev in events:
                    try:
                        handler = handlers[fd]
                    except KeyError:
                        continue  # removed by an earlier handler of this turn
                    try:
                        handler(ev)
                    except Exception:  # noqa: BLE001  a bug serving one connection must not end them all
                        log.exception("internal error serving a connection")
                self.now = now = monotonic()
                while timers and timers[0].when <= now:
                    timer = heapq.heappop(timers)
                    if not timer.cancelled:
                        self._guard(timer.callback, ())
                if ready:
                    for _ in range(len(ready)):
                        callback, args = ready.popleft()
                        self._guard(callback, args)
        finally:
            set_offload(None)

    @staticmethod
    def _guard(callback, args):
        try:
            callback(*args)
        except Exception:  # noqa: BLE001  one bad callback must not stop every connection
            log.exception("internal error in a loop callback")

    def close(self):
        if self._pool is not None:
            self._pool.shutdown()
        self.remove(self._wake_r)
        os.close(self._wake_r)
        os.close(self._wake_w)
        self.poller.close()
