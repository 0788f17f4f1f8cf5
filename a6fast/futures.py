"""Minimal futures and tasks for the runner's own loop (not asyncio: this is the hot path).

A plugin coroutine awaits a ``Future`` (an ExtraInfo answer, a thread's result); a ``Task``
drives the coroutine and resumes it when that future is done.  All of this happens on the loop's
thread; other threads hand results over through the loop (``call_soon_threadsafe``).
"""

import collections
import concurrent.futures
import threading

_PENDING, _DONE, _CANCELLED = 0, 1, 2


class CancelledError(BaseException):
    """Thrown into a task whose call was abandoned (deadline passed, connection closed)."""


class Future:
    """A result that arrives later, on the loop thread."""

    __slots__ = ("_state", "_result", "_exception", "_callbacks")

    def __init__(self):
        self._state = _PENDING
        self._result = None
        self._exception = None
        self._callbacks = []

    def done(self):
        return self._state != _PENDING

    def cancelled(self):
        return self._state == _CANCELLED

    def result(self):
        if self._state == _CANCELLED:
            raise CancelledError()
        if self._state == _PENDING:
            raise RuntimeError("result() of a pending Future")
        if self._exception is not None:
            raise self._exception
        return self._result

    def exception(self):
        return self._exception

    def add_done_callback(self, fn):
        if self._state != _PENDING:
            fn(self)
        else:
            self._callbacks.append(fn)

    def _finish(self, state):
        self._state = state
        callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            fn(self)

    def set_result(self, value):
        if self._state == _PENDING:
            self._result = value
            self._finish(_DONE)

    def set_exception(self, exc):
        if self._state == _PENDING:
            self._exception = exc
            self._finish(_DONE)

    def cancel(self):
        if self._state != _PENDING:
            return False
        self._finish(_CANCELLED)
        return True

    def __await__(self):
        if self._state == _PENDING:
            yield self
        return self.result()


class Task(Future):
    """Drives a coroutine that awaits ``Future`` objects; is itself the future of its result."""

    __slots__ = ("_coro", "_waiting")

    def __init__(self, coro):
        super().__init__()
        self._coro = coro
        self._waiting = None
        self._step(None, None)

    def _step(self, value, exc):
        try:
            if exc is None:
                awaited = self._coro.send(value)
            else:
                awaited = self._coro.throw(exc)
        except StopIteration as stop:
            self.set_result(stop.value)
            return
        except BaseException as error:  # noqa: B902  the plugin's failure is the task's result
            if isinstance(error, CancelledError):
                Future.cancel(self)
            else:
                self.set_exception(error)
            return
        if not isinstance(awaited, Future):
            self._coro.close()
            self.set_exception(TypeError(
                "a plugin awaited %r; only a6fast awaitables (request.var(), request.body(), "
                "a6fast.run_blocking()) can be awaited" % (awaited,)))
            return
        self._waiting = awaited
        awaited.add_done_callback(self._wakeup)

    def _wakeup(self, future):
        if self._state != _PENDING:
            return
        self._waiting = None
        if future.cancelled():
            self._step(None, CancelledError())
        elif future._exception is not None:
            self._step(None, future._exception)
        else:
            self._step(future._result, None)

    def cancel(self):
        """Abandon the call: the coroutine is closed, the awaited future cancelled."""
        if self._state != _PENDING:
            return False
        waiting, self._waiting = self._waiting, None
        try:
            self._coro.close()
        except BaseException:  # noqa: B902  a plugin refusing to close must not break the loop
            pass
        Future.cancel(self)
        if waiting is not None:
            waiting.cancel()
        return True


def run(coro):
    """Run ``coro`` until it first waits: its result, or a ``Task`` still pending."""
    try:
        awaited = coro.send(None)
    except StopIteration as stop:
        return stop.value
    task = Task.__new__(Task)
    Future.__init__(task)
    task._coro = coro
    task._waiting = None
    if not isinstance(awaited, Future):
        coro.close()
        raise TypeError("a plugin awaited %r, which is not an a6fast awaitable" % (awaited,))
    task._waiting = awaited
    awaited.add_done_callback(task._wakeup)
    return task


def run_in_pool(pool, call_soon_threadsafe, fn, args):
    """Run ``fn(*args)`` on ``pool``; the returned Future is resolved on the loop, through
    ``call_soon_threadsafe``, with the result or the exception."""
    future = Future()

    def work():
        try:
            result = fn(*args)
        except BaseException as exc:  # noqa: B902  handed to whoever awaits the future
            call_soon_threadsafe(future.set_exception, exc)
        else:
            call_soon_threadsafe(future.set_result, result)

    pool.submit(work)
    return future


class ThreadPool:
    """Threads for blocking hooks, whose queued work goes when its call is abandoned.

    ``submit`` returns a Future resolved on the loop.  Cancelling that Future (the call's
    deadline passed, its connection closed) takes the work out of the queue if no thread has
    started it: with a downstream that hangs, the queue holds at most the calls in flight, and
    nothing runs later for a call answered long before.  A thread still running abandoned work
    is counted (``overdue()``).
    """

    def __init__(self, size, call_soon_threadsafe, name="a6fast-plugin"):
        self.size = size
        self._call_soon_threadsafe = call_soon_threadsafe
        self._name = name
        self._lock = threading.Condition(threading.Lock())
        self._queue = collections.OrderedDict()  # key -> (future, fn, args)
        self._running = {}  # thread ident -> the future of the work it runs
        self._threads = []
        self._idle = 0
        self._next_key = 0
        self._closed = False

    def submit(self, fn, args):
        future = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the thread pool is shut down")
            key = self._next_key
            self._next_key = key + 1
            self._queue[key] = (future, fn, args)
            if self._idle:
                self._lock.notify()
            # A thread told to wake stays counted idle until it runs: more work queued than idle
            # threads means some would wait for a thread already claimed.
            if len(self._queue) > self._idle and len(self._threads) < self.size:
                thread = threading.Thread(target=self._work, daemon=True,
                                          name="%s-%d" % (self._name, len(self._threads)))
                self._threads.append(thread)
                thread.start()
        future.add_done_callback(lambda done: done.cancelled() and self._unqueue(key))
        return future

    def _unqueue(self, key):
        with self._lock:
            self._queue.pop(key, None)

    def queued(self):
        """Work waiting for a thread."""
        return len(self._queue)

    def overdue(self):
        """Threads still running work whose call was abandoned."""
        with self._lock:
            return sum(1 for future in self._running.values() if future.cancelled())

    def _work(self):
        me = threading.get_ident()
        lock = self._lock
        while True:
            with lock:
                while not self._queue and not self._closed:
                    self._idle += 1
                    lock.wait()
                    self._idle -= 1
                if self._closed:
                    return
                _, (future, fn, args) = self._queue.popitem(last=False)
                self._running[me] = future
            try:
                result = fn(*args)
            except BaseException as exc:  # noqa: B902  handed to whoever awaits the future
                self._call_soon_threadsafe(future.set_exception, exc)
            else:
                self._call_soon_threadsafe(future.set_result, result)
            finally:
                with lock:
                    del self._running[me]
                fn = args = None

    def shutdown(self):
        """Queued work is dropped; running work is left to finish (threads are daemons)."""
        with self._lock:
            self._closed = True
            self._queue.clear()
            self._lock.notify_all()


def wait_from_thread(call_soon_threadsafe, start, timeout):
    """From a worker thread: run ``start()`` on the loop (it returns a Future) and block until
    that future is done; its result, its exception, or CancelledError (cancelled, timed out)."""
    result = concurrent.futures.Future()

    def begin():
        try:
            future = start()
        except BaseException as exc:  # noqa: B902  handed back to the waiting thread
            result.set_exception(exc)
            return

        def transfer(done):
            if done.cancelled():
                result.set_exception(CancelledError())
            elif done.exception() is not None:
                result.set_exception(done.exception())
            else:
                result.set_result(done.result())
        future.add_done_callback(transfer)

    call_soon_threadsafe(begin)
    try:
        return result.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        raise CancelledError() from None


_offload = None


def set_offload(submit):
    """Install ``submit(fn, args) -> Future``: how blocking work leaves the loop (the loop sets it)."""
    global _offload
    _offload = submit


def run_blocking(fn, *args):
    """Run ``fn(*args)`` in a worker thread; await the returned future for its result.

    For plugins that must block (an HTTP call to an auth service, a database query) without
    stopping every other call: ``result = await a6fast.run_blocking(requests.get, url)``.
    """
    if _offload is None:
        raise RuntimeError("run_blocking() needs a running a6fast loop")
    return _offload(fn, args)
