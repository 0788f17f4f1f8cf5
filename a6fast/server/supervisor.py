"""Several worker processes on one socket: the parent starts them, restarts one that dies, and
stops them all on SIGTERM/SIGINT within the gateway's grace period."""
import ctypes
import json
import logging
import os
import sys
import select
import signal
import time

from .handoff import Dispatcher, HandoffListener
from .stats import RunnerCounts

log = logging.getLogger("a6fast.server")

SWEEP_SECONDS = 60.0
# How often the token reservation is moved ahead of the workers (tokens.RESERVE_AHEAD).
RESERVE_SECONDS = 0.1


class Supervisor:
    def __init__(self, options, registry, sock, lanes, shared, stats=None):
        self.options = options
        self.registry = registry  # None: each worker imports the plugins itself
        self.sock = sock
        self.lanes = lanes  # conf token lanes: a worker's slot is its lane
        self.shared = shared
        self.stats = stats  # the --stats socket: answered here from the workers' snapshots
        # workers restarted and reloads (a reload adds 1 to counts.reloads): in the stats and
        # metrics
        self.counts = stats.counts if stats is not None else RunnerCounts()
        self.workers = {}  # pid -> slot
        self.stopping = False
        self._restarts = []
        self.dispatcher = Dispatcher()

    def spawn(self, slot):
        parent = os.getpid()
        theirs = self.dispatcher.pair(slot)
        pid = os.fork()
        if pid == 0:  # the worker
            status = 1
            try:
                _die_with_parent(parent)
                signal.set_wakeup_fd(-1)
                os.close(self._wake_r)
                os.close(self._wake_w)
                # only the supervisor accepts; a worker holding the listener would keep a dead
                # runner's socket looking alive
                self.sock.close()
                self.dispatcher.close_all()
                from . import load_plugins, run_worker

                registry = self.registry
                if registry is None:
                    # the supervisor's check already logged what fails to load
                    plugins_log = logging.getLogger("a6fast.plugins")
                    plugins_log.disabled = True
                    try:
                        registry = load_plugins(self.options)
                    finally:
                        plugins_log.disabled = False
                status = run_worker(self.options, registry, HandoffListener(theirs),
                                    self.lanes.source(slot), self.shared, stats=self.stats)
            except BaseException:  # noqa: B902  the worker must never return into the parent's code
                log.exception("worker %d failed", os.getpid())
            finally:
                if os.getppid() != parent:
                    # the supervisor was killed: no one else removes the confs it shared
                    self.shared.remove()
                logging.shutdown()
                os._exit(status)
        theirs.close()
        self.workers[pid] = slot
        log.info("worker %d started (slot %d)", pid, slot)

    def run(self):
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        from . import _early_stop, _ignore_sighup

        flags = {"stop": bool(_early_stop)}

        def on_stop(signum, frame):
            flags["stop"] = True

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGCHLD, lambda s, f: None)
        signal.signal(signal.SIGHUP, _ignore_sighup)
        signal.set_wakeup_fd(self._wake_w)
        for slot in range(self.options.workers):
            self.spawn(slot)
        next_sweep = time.monotonic() + SWEEP_SECONDS
        self.sock.setblocking(False)
        readers = [self._wake_r, self.sock.fileno()]
        if self.stats is not None:
            self.stats.use_worker_files()
            if self.stats.sock is not None:
                readers.append(self.stats.fileno())
        while not flags["stop"]:
            # While connections accepted earlier wait for a worker to take them, the listener is
            # left alone (new ones wait in its backlog) and the hand-over is tried every 5 ms.
            full = not self.dispatcher.deal_waiting()
            try:
                ready, _, _ = select.select(readers[:1] + readers[2:] if full else readers, [], [],
                                            0.005 if full else RESERVE_SECONDS)
            except InterruptedError:
                ready = ()
            if self.sock.fileno() in ready:
                self.dispatcher.accept_and_deal(self.sock)
            if self.stats is not None and self.stats.fileno() in ready:
                self.stats.serve()
            self._drain()
            self.lanes.reserve()
            self._reap(restart=not flags["stop"])
            if time.monotonic() >= next_sweep:
                self.shared.sweep(self.options.conf_expire, self.options.max_confs)
                next_sweep = time.monotonic() + SWEEP_SECONDS
        return self.shutdown()

    def _drain(self):
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def _reap(self, restart):
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = self.workers.pop(pid, None)
            if slot is None:
                continue
            if restart:
                log.error("worker %d exited (%s); starting another", pid, _describe(status))
                self.counts.restarts += 1
                self._throttle()
                self.spawn(slot)

    def _throttle(self):
        # a worker dying at once after every start must not become a fork loop
        now = time.monotonic()
        self._restarts = [t for t in self._restarts if now - t < 10.0] + [now]
        if len(self._restarts) > 5:
            time.sleep(1.0)

    def shutdown(self):
        log.info("stopping %d worker(s)", len(self.workers))
        self.sock.close()
        self.dispatcher.close_all()
        for pid in list(self.workers):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 0.95
        while self.workers and time.monotonic() < deadline:
            self._reap(restart=False)
            time.sleep(0.01)
        for pid in list(self.workers):
            log.warning("worker %d did not stop in time; killing it", pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        while self.workers:
            try:
                pid, _ = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            self.workers.pop(pid, None)
        os.close(self._wake_r)
        os.close(self._wake_w)
        return 0


def check_plugins_apart(options):
    """Import the plugins once in a throw-away child, for the start-up report (load errors are
    logged there): their names, or None if the child failed.  The supervisor itself imports no
    plugin module, so nothing a module starts at import is made before the workers fork."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(read_end)
            from . import load_plugins

            names = load_plugins(options).names()
            with os.fdopen(write_end, "w") as out:
                json.dump(names, out)
            status = 0
        except BaseException:  # noqa: B902  the child must never return into the parent's code
            log.exception("checking the plugins failed")
        finally:
            logging.shutdown()
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        raw = pipe.read()
    os.waitpid(pid, 0)
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _die_with_parent(parent):
    """The gateway SIGKILLs only the runner it started: its workers must not live on, holding the
    socket.  Linux tells a child when its parent dies; elsewhere workers poll (see run_worker)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl
        os._exit(0)


def _describe(status):
    if os.WIFSIGNALED(status):
        return "killed by signal %d" % os.WTERMSIG(status)
    return "status %d" % os.waitstatus_to_exitcode(status)
