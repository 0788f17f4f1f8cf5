"""The conf store: tokens, de-duplication by key, expiry, bounds, sharing between workers."""
import os

import pytest

from a6fast.errors import UnknownPlugin
from a6fast.server.confstore import ConfStore
from a6fast.server.shared import SharedConfs
from a6fast.server import tokens as tokens_mod
from a6fast.server.tokens import LANE_BITS, StateError, StateFile, TokenLanes


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


def lanes_in(tmp_path, clock=lambda: 1000.0):
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700, exist_ok=True)
    return TokenLanes(StateFile(str(state_dir / "tokens")), clock=clock)


@pytest.fixture
def store(tmp_path):
    clock = Clock()
    s = ConfStore(lanes_in(tmp_path).source(0, reserve=True), prepare, expire=3600, max_confs=100, clock=clock)
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
    first = lanes_in(tmp_path)
    issued = {first.source(lane).next() for lane in (0, 1) for _ in range(10)}
    first.close()
    second = lanes_in(tmp_path)  # a restart: the earlier run's reservation is never handed out again
    again = {second.source(lane).next() for lane in (0, 1) for _ in range(10)}
    assert not issued & again


def test_a_crash_after_any_token_loses_no_reservation(tmp_path):
    lanes = lanes_in(tmp_path)
    source = lanes.source(3, reserve=True)
    issued = {source.next() for _ in range(tokens_mod.RESERVE_AHEAD + 10)}  # past one reservation
    # no close(): what the state file says now is all the next run has
    again = {lanes_in(tmp_path).source(3).next() for _ in range(50)}
    assert not issued & again


def test_lanes_never_collide_whatever_the_state_says(tmp_path):
    lanes = lanes_in(tmp_path)
    sources = [lanes.source(lane) for lane in range(8)]
    seen = [sources[i % 8].next() for i in range(4000)]
    assert len(set(seen)) == 4000
    assert {token & ((1 << LANE_BITS) - 1) for token in seen} == set(range(8))


def test_a_lane_taken_over_by_a_restarted_worker_goes_on_where_it_stopped(tmp_path):
    lanes = lanes_in(tmp_path)
    before = {lanes.source(2).next() for _ in range(100)}
    after = {lanes.source(2).next() for _ in range(100)}  # the restarted worker's source
    assert not before & after


def test_a_lane_at_its_reservation_fails_closed(tmp_path):
    lanes = lanes_in(tmp_path)
    source = lanes.source(1)  # nobody moves the reservation ahead
    for _ in range(lanes.reserved):
        source.next()
    with pytest.raises(tokens_mod.TokensExhausted):
        source.next()


def test_token_zero_is_never_issued(tmp_path):
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700)
    (state_dir / "tokens").write_text("%d\n" % (tokens_mod.SEQUENCE_SPAN - 2))
    (state_dir / "tokens").chmod(0o600)
    lanes = TokenLanes(StateFile(str(state_dir / "tokens")))
    assert 0 not in [lanes.source(0).next() for _ in range(6)]


def test_state_file_symlink_is_refused(tmp_path):
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700)
    target = tmp_path / "target"
    target.write_text("keep")
    os.symlink(target, state_dir / "tokens")
    with pytest.raises(StateError, match="not a regular file"):
        StateFile(str(state_dir / "tokens"))
    assert target.read_text() == "keep"


def test_without_state_sequences_start_from_the_clock(tmp_path):
    early = TokenLanes(None, clock=lambda: 1000.0)
    late = TokenLanes(None, clock=lambda: 1000.0 + 10)
    early_tokens = {early.source(0).next() for _ in range(tokens_mod.CLOCK_RATE * 10)}
    assert not early_tokens & {late.source(0).next() for _ in range(100)}


def test_token_prepared_by_one_worker_is_valid_on_another(tmp_path):
    shared = SharedConfs.create()
    try:
        lanes = lanes_in(tmp_path)
        one = ConfStore(lanes.source(0), prepare, shared=shared)
        two = ConfStore(lanes.source(1), prepare, shared=shared)
        token = one.put("route#1", [("stop", "{}")])
        assert two.get(token, 1.0) == ("chain", (("stop", "{}"),))
        assert two.put("route#1", [("stop", "{}")]) == token
        assert two.get(token + 12345, 1.0) is None
    finally:
        shared.remove()
    assert not os.path.exists(shared.dir)


def test_thousands_of_restarts_handing_out_one_token_each_never_repeat_one(tmp_path):
    seen = set()
    for _ in range(3000):  # a runner in a restart loop under a service manager
        lanes = lanes_in(tmp_path)
        token = lanes.source(0, reserve=True).next()
        assert token not in seen
        seen.add(token)
        lanes.close()


def test_a_lower_value_never_replaces_a_higher_one_in_a_shared_state_file(tmp_path):
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700)
    state = StateFile(str(state_dir / "tokens"))
    state.write(5000)
    state.write(10)  # another runner of the same user, further behind
    assert state.read() == 5000
