"""The conf store: PrepareConf results kept under their ``conf_token`` (tokens.py says how
tokens are made so that one never names two confs).
"""
import collections
import logging
import time

log = logging.getLogger("a6fast.server")


class Conf:
    __slots__ = ("token", "key", "entries", "chain", "last_used", "touch_after", "shared_touch",
                 "calls")

    def __init__(self, token, key, entries, chain, now):
        self.token = token
        self.key = key
        self.entries = entries
        self.chain = chain
        self.last_used = now
        # the LRU order need not be finer than a second: a use before this is not recorded
        self.touch_after = now + 1.0
        self.shared_touch = now
        self.calls = 0  # HTTPReqCall/HTTPRespCall served with this conf (live counters)


class ConfStore:
    """Chains by token, least recently used first; bounded; kept ``expire`` s after last use.

    ``prepare(entries, key)`` parses a conf into its chain (raising ConfError).  With ``shared``
    (several worker processes), every new conf is also published there, and a token this process
    has not seen is looked up there before it is called unknown.
    """

    def __init__(self, tokens, prepare, expire=3600.0, max_confs=10000, clock=time.monotonic,
                 shared=None):
        self.tokens = tokens
        self.prepare = prepare
        self.expire = expire
        self.max_confs = max_confs
        self.clock = clock
        self.shared = shared
        self._by_token = collections.OrderedDict()
        # find(token): the Conf stored here under ``token``, or None, with no use counted: the
        # hot path (Connection.on_frame) counts the call, calls touch() and load() itself; a bound
        # dict.get, as a method would cost a frame per call
        self.find = self._by_token.get
        self._by_key = {}
        self.evicted_early = 0
        self.dropped_calls = {}  # plugin name -> calls of the confs no longer stored
        self.dropped_conf_calls = 0  # the calls of the confs no longer stored

    def replace_all(self, prepare):
        """Forget every conf and prepare new ones with ``prepare`` (a reload)."""
        self.prepare = prepare
        for conf in list(self._by_token.values()):
            self._drop(conf, early=False)

    def calls_by_plugin(self):
        """Calls per plugin name: those of every conf stored now or dropped before."""
        out = dict(self.dropped_calls)
        for conf in list(self._by_token.values()):
            if conf.calls:
                for name in getattr(conf.chain, "names", ()):
                    out[name] = out.get(name, 0) + conf.calls
        return out

    def calls(self):
        """HTTPReqCall/HTTPRespCall calls served with every conf, stored now or dropped before."""
        return self.dropped_conf_calls + sum(conf.calls for conf in list(self._by_token.values()))

    def __len__(self):
        return len(self._by_token)

    def put(self, key, entries):
        """Store the conf and return its token; the same ``key`` with the same entries
        gets its token back (parsed once)."""
        now = self.clock()
        if key is not None:
            conf = self._by_key.get(key)
            if conf is not None and conf.entries == entries and conf.token in self._by_token:
                self.touch(conf, now)
                return conf.token
            if self.shared is not None:
                token = self.shared.token_of(key, entries)
                if token is not None and self.get(token, now, 0) is not None:
                    return token
        chain = self.prepare(entries, key)
        conf = self._add(self.tokens.next(), key, entries, chain, now)
        if self.shared is not None:
            self.shared.publish(conf.token, key, entries)
        return conf.token

    def get(self, token, now, call=1):
        """The chain for ``token``, or None; a hit counts as a use, and as ``call`` calls."""
        conf = self._by_token.get(token)
        if conf is None:
            conf = self.load(token, now)
            if conf is None:
                return None
        elif now > conf.touch_after:
            self.touch(conf, now)
        conf.calls += call
        return conf.chain

    def touch(self, conf, now):
        """``conf`` was used at ``now``: the most recently used from now on."""
        conf.last_used = now
        conf.touch_after = now + 1.0
        self._by_token.move_to_end(conf.token)
        if self.shared is not None and now - conf.shared_touch > 60.0:
            conf.shared_touch = now
            self.shared.touch(conf.token)

    def load(self, token, now):
        """The conf another worker stored under ``token``, prepared here and kept from now on;
        None when there is no such conf (or no shared store), or it does not prepare here."""
        if self.shared is None:
            return None
        found = self.shared.load(token)
        if found is None:
            return None
        key, entries = found
        try:
            chain = self.prepare(entries, key)
        except BaseException:  # noqa: B902  another worker accepted it; here it is just unknown
            log.exception("conf_token %d from another worker does not prepare here", token)
            return None
        return self._add(token, key, entries, chain, now)

    def _add(self, token, key, entries, chain, now):
        self.sweep(now)
        while len(self._by_token) >= self.max_confs:
            self._drop(next(iter(self._by_token.values())), early=True)
        conf = Conf(token, key, entries, chain, now)
        self._by_token[token] = conf
        if key is not None:
            self._by_key[key] = conf
        return conf

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
        self.dropped_conf_calls += conf.calls
        if conf.calls:
            for name in getattr(conf.chain, "names", ()):
                self.dropped_calls[name] = self.dropped_calls.get(name, 0) + conf.calls
        if conf.key is not None and self._by_key.get(conf.key) is conf:
            del self._by_key[conf.key]
        if early:
            self.evicted_early += 1
            if self.evicted_early == 1 or self.evicted_early % 1000 == 0:
                log.warning("conf store full (%d confs): dropped the least recently used before "
                            "its expiry (%d so far); the gateway will prepare it again",
                            self.max_confs, self.evicted_early)
