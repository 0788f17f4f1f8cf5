"""Several worker processes on one socket: the parent starts them, restarts one that dies,
replaces them all on SIGHUP (a reload) without dropping a connection or a call, and stops them
all on SIGTERM/SIGINT within the gateway's grace period."""
import ctypes
import json
import logging
import os
import sys
import select
import signal
import time

from .handoff import Dispatcher, HandoffListener
from .tokens import LANES

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
        self.workers = {}  # pid -> slot (a slot is also the worker's conf token lane)
        self.retiring = {}  # pid -> slot of the workers of an earlier generation, leaving
        self._restarts = []
        self.dispatcher = Dispatcher()
        self.restarts = 0  # workers that died and were replaced
        self.reloads = 0  # reloads done (SIGHUP, or --reload seeing a change)
        self.reload_failures = 0  # reloads refused because the new plugin code did not load

    def spawn(self, slot):
        parent = os.getpid()
        theirs = self.dispatcher.pair(slot)
        pid = os.fork()
        if pid == 0:  # the worker (SIGUSR1, "leave", is blocked until its loop handles it)
            status = 1
            try:
                # Until run_worker's loop handles them, a SIGTERM/SIGINT (the parent's death, or
                # its stop while the plugins import) is kept for run_worker: the handler this
                # process inherited would set the parent's flag, and the signal would be lost.
                from . import _early_stop

                for signum in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(signum, lambda s, f: _early_stop.append(s))
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
        from . import _early_stop

        flags = {"stop": bool(_early_stop), "reload": False}

        def on_stop(signum, frame):
            flags["stop"] = True

        def on_reload(signum, frame):
            flags["reload"] = True

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGCHLD, lambda s, f: None)
        signal.signal(signal.SIGHUP, on_reload)
        # SIGUSR1 tells a worker to leave after a reload: blocked here, so that a worker is
        # born with it blocked and gets it only once its loop handles it
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
        signal.set_wakeup_fd(self._wake_w)
        for slot in range(self.options.workers):
            if flags["stop"]:
                break  # a SIGTERM while the workers start: no more of them
            self.spawn(slot)
        if self.stats is not None:
            self.stats.use_worker_files()
        watch = PluginWatch(self.options.plugin_dirs) if self.options.reload_on_change else None
        next_sweep = time.monotonic() + SWEEP_SECONDS
        self.sock.setblocking(False)
        while not flags["stop"]:
            # While connections accepted earlier wait for a worker to take them, the listener is
            # left alone (new ones wait in its backlog) and the hand-over is tried every 5 ms.
            full = not self.dispatcher.deal_waiting()
            readers = [self._wake_r] + self.dispatcher.retired_fds()
            if not full:
                readers.append(self.sock.fileno())
            if self.stats is not None:
                readers.append(self.stats.fileno())
            try:
                ready, _, _ = select.select(readers, [], [], 0.005 if full else RESERVE_SECONDS)
            except InterruptedError:
                ready = ()
            self.dispatcher.collect_retired()  # connections given back by leaving workers
            if self.sock.fileno() in ready:
                self.dispatcher.accept_and_deal(self.sock)
            if self.stats is not None and self.stats.fileno() in ready:
                self.stats.serve()
            self._drain()
            self.lanes.reserve()
            self._reap(restart=not flags["stop"])
            if watch is not None and watch.changed():
                flags["reload"] = True
            if flags["reload"] and not flags["stop"]:
                flags["reload"] = False
                self.reload()
            if time.monotonic() >= next_sweep:
                self.shared.sweep(self.options.conf_expire, self.options.max_confs)
                next_sweep = time.monotonic() + SWEEP_SECONDS
        return self.shutdown()

    def reload(self):
        """Start a new generation of workers with the plugin code as it is on disk now, and let
        the old one leave: each old worker takes no new connection, finishes its calls and gives
        every connection back, idle between two calls, to be dealt to the new workers."""
        if self.registry is not None:
            log.warning("reload asked, but this runner was given its plugins ready-made; ignored")
            return
        report = check_plugins_apart(self.options)
        if report is None or report["errors"]:
            for path, line, message in report["errors"] if report else ():
                log.error("reload refused: %s:%d: %s", path, line, message)
            self.reload_failures += 1
            log.error("reload refused: the plugins on disk do not load (see above); the running "
                      "workers keep serving the code they have")
            return
        free = [slot for slot in range(LANES)
                if slot not in self.workers.values() and slot not in self.retiring.values()]
        if len(free) < self.options.workers:
            self.reload_failures += 1
            log.error("reload refused: the workers of an earlier reload are still leaving")
            return
        old = dict(self.workers)
        for slot in free[:self.options.workers]:
            self.spawn(slot)
        for pid, slot in old.items():
            del self.workers[pid]
            self.retiring[pid] = slot
            self.dispatcher.retire(slot)
            try:
                os.kill(pid, signal.SIGUSR1)
            except ProcessLookupError:
                pass
        self.reloads += 1
        log.info("reloaded (plugins: %s): %d new worker(s); %d leaving once their calls are "
                 "done", ", ".join(report["names"]) or "none", self.options.workers, len(old))

    def _drain(self):
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def _reap(self, restart):
        while self.workers or self.retiring:
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
            slot = self.workers.pop(pid, None)
            if slot is None:
                continue
            if restart:
                log.error("worker %d exited (%s); starting another", pid, _describe(status))
                self.restarts += 1
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
        self.workers.update(self.retiring)
        self.retiring.clear()
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
    """Import the plugins once in a throw-away child:
    ``{"names": [...], "errors": [(file, line, message), ...]}``, or None if the child itself
    failed.  The supervisor imports no plugin module, so nothing a module starts at import is
    made before the workers fork, and a reload imports the code as it is on disk."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(read_end)
            from . import load_plugins

            registry = load_plugins(options, quiet=True)
            with os.fdopen(write_end, "w") as out:
                json.dump({"names": registry.names(), "errors": registry.errors}, out)
            status = 0
        except BaseException:  # noqa: B902  the child must never return into the parent's code
            log.exception("checking the plugins failed")
        finally:
            logging.shutdown()
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        raw = pipe.read()
    while True:
        try:
            os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
        except ChildProcessError:
            break
    try:
        report = json.loads(raw)
    except ValueError:
        return None
    report["errors"] = [tuple(error) for error in report["errors"]]
    return report


class PluginWatch:
    """``--reload``: notices a change of the plugin files (their names, sizes, mtimes), polled
    at most once a second."""

    def __init__(self, directories):
        self.directories = list(directories)
        self._seen = self._scan()
        self._next = time.monotonic() + 1.0

    def _scan(self):
        seen = {}
        for directory in self.directories:
            try:
                names = os.listdir(directory)
            except OSError:
                continue
            for name in names:
                if name.endswith(".py"):
                    try:
                        st = os.stat(os.path.join(directory, name))
                    except OSError:
                        continue
                    seen[os.path.join(directory, name)] = (st.st_size, st.st_mtime_ns)
        return seen

    def changed(self):
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + 1.0
        seen = self._scan()
        if seen == self._seen:
            return False
        self._seen = seen
        log.info("plugin files changed: reloading")
        return True


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
