"""Connections handed from the supervisor to its workers.

With several workers the supervisor alone accepts on the gateway's socket and passes each new
connection to the next worker in turn (SCM_RIGHTS over a datagram socket pair).  The gateway opens
its connections in bursts and keeps them for thousands of calls, so a worker accepting for itself
would often take a whole burst and leave the other workers idle.

A descriptor handed to a process that has no free one is dropped by the kernel (the message
arrives truncated), and that connection would be lost.  So a worker keeps a few descriptors in
reserve and gives the supervisor one credit per connection it has room for; the supervisor
deals only against credits.  A worker at its limit stops sending credits and gets no more
connections until it has room again; the supervisor keeps them or gives them to the others.
"""
import collections
import errno
import logging
import os
import socket

log = logging.getLogger("a6fast.server")


# Connections a new worker may be handed before its first credit comes back.
INITIAL_CREDITS = 4
# Descriptors a worker keeps free: given up just before a connection is received, so that one
# opened meanwhile by a plugin thread cannot leave the connection without a place to land.
RESERVE_FDS = 2
CREDIT = b"+"
# A connection a retiring worker gives back (after a reload), idle between two calls.
GIVEN_BACK = b"r"
# A new worker's word that its plugins loaded and it serves from now on.
READY = b"R"


class HandoffListener:
    """A worker's end: looks like a listening socket to the runner (``accept``, ``fileno``)."""

    def __init__(self, sock):
        self.sock = sock
        sock.setblocking(False)
        self.reserve = []
        self.owing = 0  # credits not sent yet: no descriptor to spare when they were due
        self._refill()

    def fileno(self):
        return self.sock.fileno()

    def _refill(self):
        while len(self.reserve) < RESERVE_FDS:
            try:
                self.reserve.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
            except OSError:
                return False
        return True

    def _release(self):
        while self.reserve:
            os.close(self.reserve.pop())

    def settle(self):
        """Send the credits owed if there is room again: True when none is owed."""
        if self.owing and self._refill():
            try:
                while self.owing:
                    self.sock.send(CREDIT)
                    self.owing -= 1
            except OSError:
                pass  # the supervisor is gone or its queue is full: tried again later
        return not self.owing

    def ready(self):
        """Tell the supervisor this worker serves from now on (blocking: sent once, at start)."""
        self.sock.setblocking(True)
        try:
            self.sock.send(READY)
        finally:
            self.sock.setblocking(False)

    def accept(self):
        if not self.settle():
            # No room here: a connection still on its way is passed straight back (through
            # the reserve) for another worker, never left waiting in this queue.
            self._bounce()
            raise OSError(errno.EMFILE, "out of file descriptors: no more connections taken "
                                        "until one closes")
        self._release()
        try:
            _, fds, flags, _ = socket.recv_fds(self.sock, 1, 1)
        except OSError as exc:
            self._refill()
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                raise BlockingIOError() from None
            raise
        self.owing += 1
        self.settle()
        if flags & socket.MSG_CTRUNC:
            # This worker is out of descriptors: the kernel dropped the connection it was handed.
            # Raised like accept() would, so that the runner says so and pauses its intake.
            for fd in fds:
                os.close(fd)
            raise OSError(errno.EMFILE, "out of file descriptors: a connection handed over by "
                                        "the supervisor was lost")
        if not fds:
            raise BlockingIOError()  # nothing came with it: no connection to serve
        return socket.socket(fileno=fds[0]), None

    def _bounce(self):
        while True:
            self._release()
            try:
                _, fds, _, _ = socket.recv_fds(self.sock, 1, 1)
            except OSError:
                self._refill()
                return
            for fd in fds:
                try:
                    socket.send_fds(self.sock, [GIVEN_BACK], [fd])
                except OSError as exc:
                    log.error("a connection that found no room could not be passed back: %s",
                              exc)
                finally:
                    os.close(fd)
            self._refill()
            if not fds:
                return

    def give_back(self, conn):
        """Return an idle connection to the supervisor, which deals it to a worker of the new
        generation; BlockingIOError when its queue is full (try again later)."""
        socket.send_fds(self.sock, [GIVEN_BACK], [conn.fileno()])

    def close(self):
        self._release()
        self.sock.close()


class Dispatcher:
    """The supervisor's side: one socket pair per worker slot, connections dealt out in turn."""

    def __init__(self):
        self.ends = {}  # slot -> the supervisor's end
        self.credits = {}  # slot -> connections its worker has room for
        self.ready = set()  # slots whose worker said its plugins loaded: only they are dealt to
        self.retired = set()  # slots of workers leaving after a reload: dealt nothing more
        self._turn = 0
        # accepted while every worker's queue was full: handed over before anything new is accepted
        self.waiting = collections.deque()

    def pair(self, slot):
        """A new pair for ``slot`` (a new or restarted worker): the worker's end to hand over."""
        old = self.ends.pop(slot, None)
        if old is not None:
            old.close()
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        mine.setblocking(False)
        self.ends[slot] = mine
        self.credits[slot] = INITIAL_CREDITS
        self.ready.discard(slot)
        self.retired.discard(slot)
        return theirs

    def retire(self, slot):
        self.retired.add(slot)

    def drop(self, slot):
        """The worker of ``slot`` is gone: take what it sent last, then forget its pair."""
        if slot in self.ends:
            self._collect(slot)
            self.ends.pop(slot).close()
            del self.credits[slot]
        self.ready.discard(slot)
        self.retired.discard(slot)

    def is_ready(self, slot):
        return slot in self.ready

    def fds(self):
        return [end.fileno() for end in self.ends.values()]

    def collect_all(self):
        for slot in list(self.ends):
            self._collect(slot)

    def close_all(self):
        for end in self.ends.values():
            end.close()
        self.ends.clear()
        self.credits.clear()
        self.ready.clear()
        self.retired.clear()
        while self.waiting:
            self.waiting.popleft().close()

    def accept_and_deal(self, listener):
        """Accept what is waiting on ``listener`` and give each connection to a worker, until the
        workers' queues are full: then the rest wait in the listen backlog."""
        if not self.deal_waiting():
            return
        for _ in range(64):
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.error("cannot accept a connection: %s", exc)
                return
            if not self.deal(conn):
                self.waiting.append(conn)
                return
            conn.close()  # the worker has its own descriptor now

    def deal_waiting(self):
        """Hand over the connections no worker could take before; True when none is left."""
        waiting = self.waiting
        while waiting:
            if not self.deal(waiting[0]):
                return False
            waiting.popleft().close()
        return True

    def _collect(self, slot):
        """Read what the worker of ``slot`` sent: credits, and connections it gives back."""
        end = self.ends[slot]
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(end, 64, 4)
            except OSError:
                return  # nothing more (or that worker is gone: its pair is replaced when it is)
            if not data and not fds:
                return
            if fds:
                for fd in fds:
                    self.waiting.append(socket.socket(fileno=fd))
            elif data == READY:
                self.ready.add(slot)
            elif data:
                self.credits[slot] += data.count(CREDIT)

    def deal(self, conn):
        slots = sorted(slot for slot in self.ready if slot not in self.retired)
        for _ in range(len(slots)):  # (none: kept waiting until a worker starts)
            slot = slots[self._turn % len(slots)]
            self._turn += 1
            if not self.credits[slot]:
                self._collect(slot)
                if not self.credits[slot]:
                    continue  # no room in that worker now
            try:
                socket.send_fds(self.ends[slot], [b"c"], [conn.fileno()])
                self.credits[slot] -= 1
                return True
            except BlockingIOError:
                pass  # its queue is full (net.unix.max_dgram_qlen, often 10): the next one
            except OSError as exc:  # that worker is gone: the next one takes it
                log.warning("worker slot %d cannot take a connection: %s", slot, exc)
        return False
