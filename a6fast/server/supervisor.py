"""Several worker processes on one socket: the parent starts them, restarts one that dies,
replaces them all on SIGHUP (a reload) without dropping a connection or a call, and stops them
all on SIGTERM/SIGINT within the gateway's grace period.

Only the supervisor accepts on the gateway's socket; it deals each connection to a worker that
has said it is ready (its plugins loaded) and has room (handoff.py).  A reload checks the new
plugin code apart first, then starts a new generation of workers; only when every one of them is
ready is the old generation told to leave (SIGUSR1), and the old workers hand their connections
back, idle between two calls, to be dealt to the new ones.
"""
import logging
import os
import select
import signal
import time

from .handoff import Dispatcher, HandoffListener
from .plugins import (PluginCheck, PluginWatch, die_with_parent, load_plugins,
                      log_refused_reload)
from .stats import RunnerCounts
from .tokens import LANES
from .worker import EarlySignals, serve_worker

log = logging.getLogger("a6fast.server")

SWEEP_SECONDS = 60.0
# How often the token reservation is moved ahead of the workers (tokens.py), at least.
TURN_SECONDS = 0.1
# A worker that does not say it is ready within this long after its start is given up on.
READY_SECONDS = 60.0
# A worker whose plugins do not load exits with this status (its errors are in the log).
PLUGINS_FAILED_STATUS = 3


class _Generation:
    """The workers a reload starts: they replace the serving ones once all are ready."""

    def __init__(self, names):
        self.names = names
        self.workers = {}  # pid -> slot
        self.deadline = time.monotonic() + READY_SECONDS


class Supervisor:
    def __init__(self, options, registry, sock, lanes, shared, early, stats=None):
        self.options = options
        self.registry = registry  # None: each worker imports the plugins itself
        self.sock = sock
        self.lanes = lanes  # conf token lanes: a worker's slot is its lane
        self.shared = shared
        self.early = early  # a SIGTERM/SIGINT that came before run()
        self.stats = stats  # the --stats socket: answered here from the workers' snapshots
        # workers restarted and reloads done: in the stats and metrics
        self.counts = stats.counts if stats is not None else RunnerCounts()
        self.workers = {}  # pid -> slot of the serving generation (slot = conf token lane)
        self.retiring = {}  # pid -> slot of the workers of an earlier generation, leaving
        self.vacant = []  # slots whose worker could not be started yet (fork failed)
        self.dispatcher = Dispatcher()
        self.stop_asked = False
        self.reload_asked = False
        self.check = None  # the PluginCheck of a reload under way
        self.incoming = None  # the _Generation a reload started, until it is ready
        self.reload_failures = 0
        self._restarts = []
        self._wake_r = self._wake_w = None

    # workers ------------------------------------------------------------------------------------
    def spawn(self, slot):
        """Start a worker in ``slot``: its pid, or None when no process can be made now."""
        parent = os.getpid()
        theirs = self.dispatcher.pair(slot)
        try:
            pid = os.fork()
        except OSError as exc:
            log.error("cannot start a worker: %s", exc)
            self.dispatcher.drop(slot)
            theirs.close()
            return None
        if pid == 0:  # the worker (SIGUSR1, "leave", is blocked until its loop handles it)
            self._run_worker(parent, slot, theirs)
        theirs.close()
        log.info("worker %d started (slot %d)", pid, slot)
        return pid

    def _run_worker(self, parent, slot, theirs):
        status = 1
        try:
            # the supervisor's handlers only set its own flags: until the loop handles them, a
            # SIGTERM here (the parent died, too) is the default death, as nothing is served yet
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, signal.SIG_DFL)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.set_wakeup_fd(-1)
            die_with_parent(parent)
            for fd in (self._wake_r, self._wake_w):
                os.close(fd)
            if self.check is not None:
                os.close(self.check.fd)
            # only the supervisor accepts; a worker holding the listener would keep a dead
            # runner's socket looking alive
            self.sock.close()
            self.dispatcher.close_all()
            registry = self.registry
            if registry is None:
                registry = load_plugins(self.options, quiet=True)
                if registry.errors:
                    for path, line, message in registry.errors:
                        log.error("worker not started: %s:%d: %s", path, line, message)
                    status = PLUGINS_FAILED_STATUS
                    return
            early = EarlySignals()
            early.install(reload=False)  # the supervisor reloads
            listener = HandoffListener(theirs)
            listener.ready()
            status = serve_worker(self.options, registry, listener, self.lanes.source(slot),
                                  self.shared, early, stats=self.stats)
        except BaseException:  # noqa: B902  the worker must never return into the parent's code
            log.exception("worker %d failed", os.getpid())
        finally:
            if os.getppid() != parent:
                # the supervisor was killed: no one else removes the confs it shared
                self.shared.remove()
            logging.shutdown()
            os._exit(status)

    def _busy_slots(self):
        busy = set(self.workers.values()) | set(self.retiring.values()) | set(self.vacant)
        if self.incoming is not None:
            busy |= set(self.incoming.workers.values())
        return busy

    # the loop -----------------------------------------------------------------------------------
    def run(self):
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.stop_asked = self.early.stop_asked
        self.reload_asked = self.early.reload_asked

        def on_stop(signum, frame):
            self.stop_asked = True

        def on_reload(signum, frame):
            self.reload_asked = True

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGCHLD, lambda s, f: None)
        signal.signal(signal.SIGHUP, on_reload)
        # SIGUSR1 tells a worker to leave after a reload: blocked here, so that a worker is
        # born with it blocked and gets it only once its loop handles it
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
        signal.set_wakeup_fd(self._wake_w)
        for slot in range(self.options.workers):
            if self.stop_asked:
                break  # a SIGTERM while the workers start: no more of them
            pid = self.spawn(slot)
            if pid is None:
                self.vacant.append(slot)
            else:
                self.workers[pid] = slot
        if self.stats is not None:
            self.stats.use_worker_files()
        stats_sock = self.stats.fileno() if self.stats is not None and self.stats.sock else None
        watch = PluginWatch(self.options.plugin_dirs) if self.options.reload_on_change else None
        next_sweep = time.monotonic() + SWEEP_SECONDS
        self.sock.setblocking(False)
        # The first connections wait in the listen backlog until every worker is ready (or a
        # deadline passed): a burst dealt to the first one ready would stay with it for good.
        starting_until = time.monotonic() + READY_SECONDS
        while not self.stop_asked:
            if starting_until is not None and (
                    all(self.dispatcher.is_ready(slot) for slot in self.workers.values())
                    or time.monotonic() >= starting_until):
                starting_until = None
            # While connections accepted earlier wait for a worker to take them, the listener is
            # left alone (new ones wait in its backlog) and the hand-over is tried every 5 ms.
            full = not self.dispatcher.deal_waiting()
            readers = [self._wake_r] + self.dispatcher.fds()
            if not full and starting_until is None:
                readers.append(self.sock.fileno())
            if stats_sock is not None:
                readers.append(stats_sock)
            if self.check is not None:
                readers.append(self.check.fd)
            try:
                ready, _, _ = select.select(readers, [], [], 0.005 if full else TURN_SECONDS)
            except InterruptedError:
                ready = ()
            # what the workers said: credits, "ready", connections given back
            self.dispatcher.collect_all()
            if self.sock.fileno() in ready and starting_until is None:
                self.dispatcher.accept_and_deal(self.sock)
            if stats_sock is not None and stats_sock in ready:
                self.stats.serve()
            self._drain_wakeups()
            self.lanes.reserve()
            self._reap()
            self._fill_vacant()
            if watch is not None and watch.changed():
                self.reload_asked = True
            self._advance_reload()
            if time.monotonic() >= next_sweep:
                self.shared.sweep(self.options.conf_expire, self.options.max_confs)
                next_sweep = time.monotonic() + SWEEP_SECONDS
        return self.shutdown()

    def _drain_wakeups(self):
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass

    # reloads ------------------------------------------------------------------------------------
    def _advance_reload(self):
        """One step of a reload: check the new code apart, start a generation, switch."""
        if self.check is not None:
            if not self.check.poll():
                return
            report, self.check = self.check.result, None
            if report["errors"]:
                log_refused_reload(report["errors"])
                self._refuse("the plugins on disk do not load")
                return
            self._start_generation(report["names"])
            return
        if self.incoming is not None:
            self._switch_when_ready()
            return
        if not self.reload_asked:
            return
        if self.registry is not None:
            self.reload_asked = False
            log.warning("reload asked, but this runner was given its plugins ready-made; ignored")
            return
        if self.retiring and len(self._busy_slots()) + self.options.workers > LANES:
            return  # the workers of an earlier reload are still leaving: this one waits
        self.reload_asked = False
        self.check = PluginCheck(self.options)

    def _start_generation(self, names):
        generation = _Generation(names)
        free = [slot for slot in range(LANES) if slot not in self._busy_slots()]
        for slot in free[:self.options.workers]:
            pid = self.spawn(slot)
            if pid is None:
                self.incoming = generation
                self._abandon_generation("a new worker could not be started")
                return
            generation.workers[pid] = slot
        self.incoming = generation

    def _switch_when_ready(self):
        generation = self.incoming
        if not all(self.dispatcher.is_ready(slot) for slot in generation.workers.values()):
            if time.monotonic() >= generation.deadline:
                self._abandon_generation("the new workers did not start within %gs"
                                         % READY_SECONDS)
            return
        old = self.workers
        self.workers = dict(generation.workers)
        self.incoming = None
        for pid, slot in old.items():
            self.retiring[pid] = slot
            self.dispatcher.retire(slot)
            try:
                os.kill(pid, signal.SIGUSR1)
            except ProcessLookupError:
                pass
        self.counts.reloads += 1
        log.info("reloaded (plugins: %s): %d new worker(s) serving; %d leaving once their calls "
                 "are done", ", ".join(generation.names) or "none", len(self.workers), len(old))

    def _abandon_generation(self, why):
        generation, self.incoming = self.incoming, None
        for pid, slot in generation.workers.items():
            self.retiring[pid] = slot  # reaped like the leaving ones
            self.dispatcher.retire(slot)
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        self._refuse(why)

    def _refuse(self, why):
        self.reload_failures += 1
        log.error("reload refused: %s; the running workers keep serving the code they have", why)

    # dead workers -------------------------------------------------------------------------------
    def _reap(self):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = self.retiring.pop(pid, None)
            if slot is not None:
                self.dispatcher.drop(slot)
                if status:
                    log.warning("leaving worker %d exited (%s)", pid, _describe(status))
                continue
            if self.incoming is not None and pid in self.incoming.workers:
                self.dispatcher.drop(self.incoming.workers.pop(pid))
                self._abandon_generation("a new worker exited (%s)" % _describe(status))
                continue
            slot = self.workers.pop(pid, None)
            if slot is None:
                continue  # a plugin check's child
            self.dispatcher.drop(slot)
            if not self.stop_asked:
                log.error("worker %d exited (%s); starting another", pid, _describe(status))
                self.counts.restarts += 1
                self.vacant.append(slot)

    def _fill_vacant(self):
        while self.vacant and not self.stop_asked:
            if not self._throttle():
                return
            slot = self.vacant[0]
            pid = self.spawn(slot)
            if pid is None:
                return  # tried again on a later turn
            self.vacant.pop(0)
            self.workers[pid] = slot

    def _throttle(self):
        """A worker dying at once after every start must not become a fork loop: at most 5
        starts in 10 s, then one a second."""
        now = time.monotonic()
        self._restarts = [t for t in self._restarts if now - t < 10.0]
        if len(self._restarts) >= 5 and now - self._restarts[-1] < 1.0:
            return False
        self._restarts.append(now)
        return True

    # stopping -----------------------------------------------------------------------------------
    def shutdown(self):
        if self.check is not None:
            self.check.kill()
            self.check = None
        if self.incoming is not None:
            self.workers.update(self.incoming.workers)
            self.incoming = None
        log.info("stopping %d worker(s)", len(self.workers))
        self.sock.close()
        self.dispatcher.close_all()
        self.workers.update(self.retiring)
        self.retiring.clear()
        for pid in list(self.workers):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 0.95
        while self.workers and time.monotonic() < deadline:
            self._reap_quietly()
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

    def _reap_quietly(self):
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.workers.pop(pid, None)


def _describe(status):
    if os.WIFSIGNALED(status):
        return "killed by signal %d" % os.WTERMSIG(status)
    code = os.waitstatus_to_exitcode(status)
    if code == PLUGINS_FAILED_STATUS:
        return "its plugins did not load"
    return "status %d" % code
