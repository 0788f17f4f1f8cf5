"""The runner's own loop: dispatch, timers, thread hand-offs, and surviving a failing handler."""
import logging
import socket
import threading
import time

from a6fast.futures import ThreadPool, run_blocking
from a6fast.server.loop import Loop

from faultkit import wait_until


def test_a_handler_that_raises_does_not_stop_the_loop(caplog):
    loop = Loop()
    bad_r, bad_w = socket.socketpair()
    good_r, good_w = socket.socketpair()
    served = []

    def bad(events):
        bad_r.recv(100)
        raise RuntimeError("a bug in one connection")

    def good(events):
        served.append(good_r.recv(100))

    loop.add_reader(bad_r.fileno(), bad)
    loop.add_reader(good_r.fileno(), good)
    bad_w.send(b"x")
    good_w.send(b"y")
    deadline = time.monotonic() + 5
    with caplog.at_level(logging.ERROR, logger="a6fast.server"):
        loop.run(lambda: bool(served) or time.monotonic() > deadline)
    loop.close()
    assert served == [b"y"]
    assert "a bug in one connection" in caplog.text


def test_a_handler_raising_key_error_is_logged_as_a_bug_and_the_loop_goes_on(caplog):
    loop = Loop()
    bad_r, bad_w = socket.socketpair()
    good_r, good_w = socket.socketpair()
    served = []

    def bad(events):
        bad_r.recv(100)
        raise KeyError("a bug, not a removed fd")

    loop.add_reader(bad_r.fileno(), bad)
    loop.add_reader(good_r.fileno(), lambda events: served.append(good_r.recv(100)))
    bad_w.send(b"x")
    good_w.send(b"y")
    deadline = time.monotonic() + 5
    with caplog.at_level(logging.ERROR, logger="a6fast.server"):
        loop.run(lambda: bool(served) and "a bug" in caplog.text or time.monotonic() > deadline)
    loop.close()
    assert served == [b"y"]
    assert "internal error serving a connection" in caplog.text and "a bug" in caplog.text


def test_a_key_error_from_a_handler_that_removed_its_own_fd_is_still_logged(caplog):
    loop = Loop()
    r, w = socket.socketpair()
    ran = []

    def closes_then_fails(events):
        r.recv(100)
        loop.remove(r.fileno())
        ran.append(1)
        raise KeyError("a bug after closing")

    loop.add_reader(r.fileno(), closes_then_fails)
    w.send(b"x")
    deadline = time.monotonic() + 5
    with caplog.at_level(logging.ERROR, logger="a6fast.server"):
        loop.run(lambda: bool(ran) or time.monotonic() > deadline)
    loop.close()
    assert ran and "a bug after closing" in caplog.text


def test_a_handler_removing_another_fd_ready_in_the_same_turn_keeps_it_from_running(caplog):
    loop = Loop()
    pairs = [socket.socketpair() for _ in range(2)]
    ran = []

    def handler(index):
        def on(events):
            pairs[index][0].recv(100)
            ran.append(index)
            loop.remove(pairs[1 - index][0].fileno())
        return on

    for index, (r, w) in enumerate(pairs):
        loop.add_reader(r.fileno(), handler(index))
        w.send(b"x")
    deadline = time.monotonic() + 5
    with caplog.at_level(logging.ERROR, logger="a6fast.server"):
        loop.run(lambda: bool(ran) or time.monotonic() > deadline)
        loop.call_later(0.05, lambda: None)  # one more turn: the removed fd is never served
        later = time.monotonic() + 0.2
        loop.run(lambda: time.monotonic() > later)
    loop.close()
    assert len(ran) == 1
    assert "internal error" not in caplog.text


def test_more_ready_fds_than_one_poll_takes_are_all_served():
    from a6fast.server.loop import MAX_EVENTS
    loop = Loop()
    pairs = [socket.socketpair() for _ in range(3 * MAX_EVENTS + 1)]
    served = set()

    def handler(index):
        def on(events):
            pairs[index][0].recv(100)
            served.add(index)
        return on

    for index, (r, w) in enumerate(pairs):
        loop.add_reader(r.fileno(), handler(index))
        w.send(b"x")
    deadline = time.monotonic() + 5
    loop.run(lambda: len(served) == len(pairs) or time.monotonic() > deadline)
    loop.close()
    assert served == set(range(len(pairs)))


def test_timers_fire_in_order_and_cancelled_ones_do_not():
    loop = Loop()
    fired = []
    loop.call_later(0.05, lambda: fired.append("b"))
    loop.call_later(0.01, lambda: fired.append("a"))
    loop.call_later(0.02, lambda: fired.append("x")).cancel()
    deadline = time.monotonic() + 5
    loop.run(lambda: len(fired) == 2 or time.monotonic() > deadline)
    loop.close()
    assert fired == ["a", "b"]


def test_blocking_work_runs_in_a_thread_and_resolves_on_the_loop():
    loop = Loop()
    results = []

    def start():
        future = run_blocking(lambda: time.sleep(0.05) or 42)
        future.add_done_callback(lambda f: results.append(f.result()))

    loop.call_soon(start)
    deadline = time.monotonic() + 5
    loop.run(lambda: bool(results) or time.monotonic() > deadline)
    loop.close()
    assert results == [42]


def test_a_burst_of_blocking_work_runs_on_as_many_threads_as_it_needs():
    import threading

    from a6fast.futures import ThreadPool

    ready = []
    pool = ThreadPool(8, lambda fn, *args: ready.append((fn, args)))
    first = pool.submit(lambda: None, ())  # one thread made, then idle
    deadline = time.monotonic() + 10
    while pool._idle != 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    together = threading.Barrier(8, timeout=10)
    futures = [pool.submit(together.wait, ()) for _ in range(8)]
    deadline = time.monotonic() + 20
    while len(ready) < 9 and time.monotonic() < deadline:
        time.sleep(0.005)
    results = [args for fn, args in ready if fn.__name__ == "set_result"]
    assert len(results) == 9, ready  # all 8 met at the barrier: they ran at once
    pool.shutdown()
    assert first and futures


def test_a_thread_that_cannot_start_leaves_the_pool_working(monkeypatch):
    import threading

    from a6fast.futures import ThreadPool

    done = []
    pool = ThreadPool(4, lambda fn, *args: done.append(fn.__name__))
    pool.submit(time.sleep, (0.2,))  # a thread exists, busy
    real_start = threading.Thread.start

    def fail_once(self):
        monkeypatch.setattr(threading.Thread, "start", real_start)
        raise RuntimeError("can't start new thread")
    monkeypatch.setattr(threading.Thread, "start", fail_once)
    pool.submit(lambda: None, ())  # runs on the thread that exists
    deadline = time.monotonic() + 10
    while len(done) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert done == ["set_result", "set_result"]
    pool.shutdown()
def test_work_submitted_while_an_idle_thread_is_still_waking_gets_a_thread_of_its_own():
    # Two pieces of work that can only finish together (a barrier of two), submitted while the
    # pool's one idle thread has been told to wake but has not yet run: the second must get a
    # new thread, not wait behind the first for one that never comes free.  The pool's lock is
    # made reentrant and held across both submits, so that the idle thread cannot wake between.
    done = []
    pool = ThreadPool(4, lambda fn, *args: done.append((fn.__name__, args)))
    pool._lock = threading.Condition(threading.RLock())
    pool.submit(lambda: None, ())
    assert wait_until(lambda: pool._idle == 1, 10)
    both = threading.Barrier(2)
    with pool._lock:
        pool.submit(both.wait, (10,))
        pool.submit(both.wait, (10,))
    assert wait_until(lambda: len(done) == 3, 20)
    pool.shutdown()
    assert [name for name, _ in done[1:]] == ["set_result", "set_result"], done
    assert sorted(args for _, args in done[1:]) == [(0,), (1,)]
