"""The conf store: tokens, de-duplication by key, expiry, bounds, sharing between workers."""
import os

import pytest

from a6fast.errors import UnknownPlugin
from a6fast.server.confstore import ConfStore, TokenSource
from a6fast.server.shared import SharedConfs


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def prepare(entries, key):
    for name, _ in entries:
        if name == "unknown":
            raise UnknownPlugin(name)
    return ("chain", tuple(entries))


@pytest.fixture
def store(tmp_path):
    clock = Clock()
    s = ConfStore(TokenSource(str(tmp_path / "tokens")), prepare, expire=3600, max_confs=100, clock=clock)
    s.clock_obj = clock
    return s


def test_new_conf_gets_a_fresh_token_and_its_chain(store):
    token = store.put("route#1", [("stop", "{}")])
    assert token != 0
    assert store.get(token, store.clock_obj.now) == ("chain", (("stop", "{}"),))


def test_same_key_same_conf_gets_its_token_back(store):
    a = store.put("route#1", [("stop", "{}")])
    assert store.put("route#1", [("stop", "{}")]) == a


def test_same_key_other_conf_gets_another_token(store):
    a = store.put("route#1", [("stop", "{}")])
    b = store.put("route#1", [("stop", '{"status": 401}')])
    assert a != b
    assert store.get(a, store.clock_obj.now) is not None  # the old one stays until it expires


def test_unknown_plugin_raises_and_stores_nothing(store):
    with pytest.raises(UnknownPlugin):
        store.put("route#1", [("unknown", "{}")])
    assert len(store) == 0


def test_conf_is_kept_for_expire_seconds_after_last_use(store):
    clock = store.clock_obj
    token = store.put("k", [("stop", "{}")])
    clock.now += 3000
    assert store.get(token, clock.now) is not None  # a use
    clock.now += 3000  # 6000 s after prepare, 3000 s after last use
    store.sweep(clock.now)
    assert store.get(token, clock.now) is not None
    clock.now += 3601
    store.sweep(clock.now)
    assert store.get(token, clock.now) is None


def test_store_is_bounded_dropping_least_recently_used(store):
    clock = store.clock_obj
    tokens = [store.put("k%d" % i, [("stop", str(i))]) for i in range(100)]
    store.get(tokens[0], clock.now + 5)  # most recently used now
    store.put("k-new", [("stop", "new")])
    assert len(store) == 100
    assert store.get(tokens[0], clock.now + 6) is not None
    assert store.get(tokens[1], clock.now + 6) is None
    assert store.evicted_early == 1


def test_tokens_are_never_reused_across_restarts(tmp_path):
    state = str(tmp_path / "tokens")
    first = [TokenSource(state, block=4).next() for _ in range(1)]
    a = TokenSource(state, block=4)
    issued = {a.next() for _ in range(10)}
    b = TokenSource(state, block=4)  # a restart: the earlier run's blocks are never handed out again
    assert not issued & {b.next() for _ in range(10)}
    assert not set(first) & issued


def test_token_sources_sharing_a_state_file_never_collide(tmp_path):
    state = str(tmp_path / "tokens")
    a, b = TokenSource(state, block=3), TokenSource(state, block=3)
    seen = [a.next() if i % 2 else b.next() for i in range(50)]
    assert len(set(seen)) == 50


def test_token_zero_is_never_issued(tmp_path):
    state = tmp_path / "tokens"
    state.write_text("%d\n" % ((1 << 32) - 2))
    source = TokenSource(str(state), block=8)
    assert 0 not in [source.next() for _ in range(6)]


def test_state_file_symlink_is_not_followed(tmp_path):
    target = tmp_path / "target"
    target.write_text("keep")
    os.symlink(target, tmp_path / "tokens")
    source = TokenSource(str(tmp_path / "tokens"))
    assert source.next() != 0
    assert target.read_text() == "keep"


def test_token_prepared_by_one_worker_is_valid_on_another(tmp_path):
    shared = SharedConfs.create()
    try:
        state = str(tmp_path / "tokens")
        one = ConfStore(TokenSource(state), prepare, shared=shared)
        two = ConfStore(TokenSource(state), prepare, shared=shared)
        token = one.put("route#1", [("stop", "{}")])
        assert two.get(token, 1.0) == ("chain", (("stop", "{}"),))
        assert two.put("route#1", [("stop", "{}")]) == token
        assert two.get(token + 12345, 1.0) is None
    finally:
        shared.remove()
    assert not os.path.exists(shared.dir)
