"""The conf store: PrepareConf results kept under their ``conf_token``.

A token must never name another conf while the gateway may still hold it (it caches tokens for
APISIX_CONF_EXPIRE_TIME seconds, also across a restart of a runner started by hand), so tokens
come from a high-water mark persisted in a small state file, reserved a block at a time.
"""
import collections
import fcntl
import logging
import os
import time

log = logging.getLogger("a6fast.server")

TOKEN_BLOCK = 1 << 16
_UINT32 = 1 << 32


class TokenSource:
    """Hands out conf tokens that no earlier run (nor another worker) has handed out.

    The state file holds the next unreserved token.  Several processes may share it: each
    reservation takes a lock.  Without a usable state file, tokens start from the clock in
    milliseconds, which is still unique unless the earlier run issued more than 1000 per second.
    """

    def __init__(self, state_file=None, block=TOKEN_BLOCK):
        self.state_file = state_file
        self.block = block
        self._next = 0
        self._end = 0

    def next(self):
        if self._next == self._end:
            self._next, self._end = self._reserve()
        token = self._next
        self._next += 1
        return token % _UINT32 or self.next()  # 0 is skipped: it looks like "no token"

    def _reserve(self):
        clock = int(time.time() * 1000)
        if self.state_file is not None:
            try:
                return self._reserve_in_file(clock)
            except OSError as exc:
                log.warning("conf token state file %s unusable (%s); tokens start from the clock",
                            self.state_file, exc)
                self.state_file = None
        start = max(clock, self._end)
        return start, start + self.block

    def _reserve_in_file(self, clock):
        fd = os.open(self.state_file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.read(fd, 64).strip()
            try:
                start = int(raw)
            except ValueError:
                start = clock
            start = max(start, self._end)
            end = start + self.block
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            os.write(fd, b"%d\n" % end)
            return start, end
        finally:
            os.close(fd)


class Conf:
    __slots__ = ("token", "key", "entries", "chain", "last_used")

    def __init__(self, token, key, entries, chain, now):
        self.token = token
        self.key = key
        self.entries = entries
        self.chain = chain
        self.last_used = now


class ConfStore:
    """Chains by token, least recently used first; bounded; kept ``expire`` s after last use."""

    def __init__(self, tokens, expire=3600.0, max_confs=10000, clock=time.monotonic):
        self.tokens = tokens
        self.expire = expire
        self.max_confs = max_confs
        self.clock = clock
        self._by_token = collections.OrderedDict()
        self._by_key = {}
        self.evicted_early = 0

    def __len__(self):
        return len(self._by_token)

    def put(self, key, entries, make_chain):
        """Store the conf and return its token; the same ``key`` with the same entries
        gets its token back.  ``make_chain()`` parses the conf (only when it is new)."""
        now = self.clock()
        if key is not None:
            conf = self._by_key.get(key)
            if conf is not None and conf.entries == entries and conf.token in self._by_token:
                conf.last_used = now
                self._by_token.move_to_end(conf.token)
                return conf.token
        chain = make_chain()
        self.sweep(now)
        while len(self._by_token) >= self.max_confs:
            self._drop(next(iter(self._by_token.values())), early=True)
        conf = Conf(self.tokens.next(), key, entries, chain, now)
        self._by_token[conf.token] = conf
        if key is not None:
            self._by_key[key] = conf
        return conf.token

    def get(self, token, now):
        """The chain for ``token``, or None; a hit counts as a use."""
        conf = self._by_token.get(token)
        if conf is None:
            return None
        if conf.last_used != now:
            conf.last_used = now
            self._by_token.move_to_end(token)
        return conf.chain

    def sweep(self, now=None):
        """Forget confs unused for longer than ``expire`` seconds."""
        if now is None:
            now = self.clock()
        limit = now - self.expire
        while self._by_token:
            conf = next(iter(self._by_token.values()))
            if conf.last_used >= limit:
                break
            self._drop(conf, early=False)

    def _drop(self, conf, early):
        del self._by_token[conf.token]
        if conf.key is not None and self._by_key.get(conf.key) is conf:
            del self._by_key[conf.key]
        if early:
            self.evicted_early += 1
            if self.evicted_early == 1 or self.evicted_early % 1000 == 0:
                log.warning("conf store full (%d confs): dropped the least recently used before "
                            "its expiry (%d so far); the gateway will prepare it again",
                            self.max_confs, self.evicted_early)
