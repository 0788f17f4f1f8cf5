"""Connections handed from the supervisor to its workers.

With several workers the supervisor alone accepts on the gateway's socket and passes each new
connection to the next worker in turn (SCM_RIGHTS over a datagram socket pair).  The gateway opens
its connections in bursts and keeps them for thousands of calls, so a worker accepting for itself
would often take a whole burst and leave the other workers idle.
"""
import collections
import errno
import logging
import os
import socket

log = logging.getLogger("a6fast.server")


class HandoffListener:
    """A worker's end: looks like a listening socket to the runner (``accept``, ``fileno``)."""

    def __init__(self, sock):
        self.sock = sock
        sock.setblocking(False)

    def fileno(self):
        return self.sock.fileno()

    def accept(self):
        try:
            _, fds, flags, _ = socket.recv_fds(self.sock, 1, 1)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                raise BlockingIOError() from None
            raise
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

    def close(self):
        self.sock.close()


class Dispatcher:
    """The supervisor's side: one socket pair per worker slot, connections dealt out in turn."""

    def __init__(self):
        self.ends = {}  # slot -> the supervisor's end
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
        return theirs

    def close_all(self):
        for end in self.ends.values():
            end.close()
        self.ends.clear()
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

    def deal(self, conn):
        slots = sorted(self.ends)
        for _ in range(len(slots)):
            slot = slots[self._turn % len(slots)]
            self._turn += 1
            try:
                socket.send_fds(self.ends[slot], [b"c"], [conn.fileno()])
                return True
            except BlockingIOError:
                pass  # its queue is full (net.unix.max_dgram_qlen, often 10): the next one
            except OSError as exc:  # that worker is gone: the next one takes it
                log.warning("worker slot %d cannot take a connection: %s", slot, exc)
        return False
