"""The plugin layer through Chain.call_request/call_response, as the server drives it: codec
objects decoded from gateway frames, answers decoded the way the gateway reads them."""
import json
import logging
import queue
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given, settings, strategies as st

import a6fast
from a6fast import compat, futures, gateway
from a6fast.chain import _blame, blamed_plugin
from a6fast.errors import ConfError, UnknownPlugin
from a6fast.futures import Future
from a6fast.protocol import (ACTION_NONE, ACTION_REWRITE, ACTION_STOP, INFO_REQ_BODY,
                             INFO_RESP_BODY, INFO_VAR, RPC_HTTP_REQ_CALL, RPC_HTTP_RESP_CALL)
from a6fast.registry import Registry


# ---------------------------------------------------------------------------------------------
# A stand-in for the server: a loop running callbacks on the test thread, a thread offload,
# and a call context answering ExtraInfo from tables.

class Loop:
    def __init__(self):
        self.thread = threading.get_ident()
        self.pending = queue.Queue()

    def call_soon_threadsafe(self, fn, *args):
        self.pending.put((fn, args))

    def settle(self, answer, timeout=10.0):
        """Run callbacks until ``answer`` (a frame or a Future of one) is ready."""
        if not isinstance(answer, Future):
            return answer
        while not answer.done():
            fn, args = self.pending.get(timeout=timeout)
            fn(*args)
        return answer.result()


class Ctx:
    """The call's context: ExtraInfo answers come later, through the loop, like the gateway's."""

    def __init__(self, loop, vars=None, req_body=None, resp_body=None):
        self.loop = loop
        self.vars = vars or {}
        self.bodies = {INFO_REQ_BODY: req_body, INFO_RESP_BODY: resp_body}
        self.asked = []

    def _result(self, info_type, name):
        self.asked.append((info_type, name))
        if info_type == INFO_VAR:
            return self.vars.get(name)
        return self.bodies[info_type]

    def extra_info(self, info_type, name=None):
        assert threading.get_ident() == self.loop.thread, "extra_info() off the loop thread"
        future = Future()
        self.loop.call_soon_threadsafe(future.set_result, self._result(info_type, name))
        return future

    def extra_info_blocking(self, info_type, name=None):
        assert threading.get_ident() != self.loop.thread, "extra_info_blocking() on the loop"
        return self._result(info_type, name)


@pytest.fixture
def loop():
    loop = Loop()
    pool = ThreadPoolExecutor(4)

    def submit(fn, args):
        future = Future()

        def work():
            try:
                value = fn(*args)
            except BaseException as exc:  # noqa: B902  handed to the awaiting chain
                loop.call_soon_threadsafe(future.set_exception, exc)
            else:
                loop.call_soon_threadsafe(future.set_result, value)
        pool.submit(work)
        return future

    futures.set_offload(submit)
    yield loop
    futures.set_offload(None)
    pool.shutdown(wait=True)


@pytest.fixture
def isolated_imports():
    """Put sys.meta_path, sys.path and sys.modules back as they were: the apisix shims, any
    ``apisix`` module and the loaded plugin files go."""
    meta_path, path, modules = sys.meta_path[:], sys.path[:], set(sys.modules)
    yield
    compat.uninstall()
    sys.meta_path[:] = meta_path
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        if name == "apisix" or name.startswith(("apisix.", "a6fast_plugin_")):
            del sys.modules[name]


@pytest.fixture
def ctx(loop):
    return Ctx(loop, vars={"remote_addr": b"10.0.0.7", "route_id": b"r1",
                           "http_x": "caf\u00e9".encode()},
               req_body=b"\xffbody", resp_body=b"upstream")


def http_req(codec, id=7, conf_token=1, method="GET", path="/p", src_ip="10.0.0.7", args=None,
             headers=None):
    frame = gateway.encode_http_req_call_req(id, conf_token, method, path, src_ip, args, headers)
    return codec.decode_http_req_call(frame[4:])


def http_resp(codec, id=7, conf_token=1, status=200, headers=None):
    frame = gateway.encode_http_resp_call_req(id, conf_token, status, headers)
    return codec.decode_http_resp_call(frame[4:])


def req_answer(frame):
    assert type(frame) is bytes and frame[0] == RPC_HTTP_REQ_CALL
    return gateway.decode_http_req_call_resp(frame[4:])


def resp_answer(frame):
    assert type(frame) is bytes and frame[0] == RPC_HTTP_RESP_CALL
    return gateway.decode_http_resp_call_resp(frame[4:])


def chain_of(*plugins, conf=None):
    """A chain of the given plugin objects, each with conf text ``conf`` (or None)."""
    registry = Registry()
    names = []
    for obj in plugins:
        names += [spec.name for spec in registry.add(obj)]
    return registry.prepare([(name, conf) for name in names], "test")


def run_request(chain, req, ctx):
    return req_answer(ctx.loop.settle(chain.call_request(req, ctx)))


def run_response(chain, req, ctx):
    return resp_answer(ctx.loop.settle(chain.call_response(req, ctx)))


HEADERS = [("host", "example.com"), ("accept", "a/b"), ("x-multi", "1"), ("x-multi", "2"),
           ("User-Agent", "curl")]
ARGS = [("a", "1"), ("a", "2"), ("flag", None), ("y", ""), ("A", "upper")]


# ---------------------------------------------------------------------------------------------
# Request phase: actions

def test_stop_answers_with_status_headers_and_body(codec, ctx):
    @a6fast.plugin("deny", inline=True)
    def deny(request, conf):
        request.stop(403, headers={"x-a": "1", "set-cookie": ["a=1", "b=2"]}, body="d\u00e9ni")

    answer = run_request(chain_of(deny), http_req(codec, id=0), ctx)
    assert answer.id == 0 and answer.action_type == ACTION_STOP
    assert answer.stop.status == 403
    assert answer.stop.headers == [("x-a", "1"), ("set-cookie", "a=1"), ("set-cookie", "b=2")]
    assert answer.stop.body == "d\u00e9ni".encode()


def test_stop_takes_header_pairs_and_bytes_body(codec, ctx):
    @a6fast.plugin("deny", inline=True)
    def deny(request, conf):
        request.stop(headers=[("x-a", "1"), ("x-a", "2")], body=b"\x00\xff")

    answer = run_request(chain_of(deny), http_req(codec), ctx)
    assert answer.stop == gateway.Stop(200, [("x-a", "1"), ("x-a", "2")], b"\x00\xff")


def test_stop_ends_the_chain_and_discards_earlier_rewrites(codec, ctx):
    ran = []

    @a6fast.plugin("first", inline=True)
    def first(request, conf):
        request.set_header("x-first", "1")
        ran.append("first")

    @a6fast.plugin("deny", inline=True)
    def deny(request, conf):
        ran.append("deny")
        request.stop(401)

    @a6fast.plugin("never", inline=True)
    def never(request, conf):
        ran.append("never")

    answer = run_request(chain_of(first, deny, never), http_req(codec), ctx)
    assert ran == ["first", "deny"]
    assert answer.action_type == ACTION_STOP
    assert answer.stop == gateway.Stop(401, None, None)


def test_untouched_request_gets_no_action(codec, ctx):
    @a6fast.plugin("look", inline=True)
    def look(request, conf):
        assert request.headers["host"] == "example.com"

    answer = run_request(chain_of(look), http_req(codec, id=9, headers=HEADERS), ctx)
    assert answer == gateway.HTTPReqCallResp(9, ACTION_NONE, None, None)


def test_empty_chain_answers_no_action_and_an_unchanged_response(codec, ctx):
    chain = Registry().prepare([], "empty")
    assert run_request(chain, http_req(codec, id=3), ctx).action_type == ACTION_NONE
    assert run_response(chain, http_resp(codec, id=3), ctx) == gateway.HTTPRespCallResp(
        3, 0, None, None)


def test_rewrite_sends_each_touched_header_with_its_final_values(codec, ctx):
    @a6fast.plugin("hdr", inline=True)
    def hdr(request, conf):
        request.set_header("X-New", "n")
        request.add_header("x-multi", "3")       # keeps 1 and 2
        request.del_header("accept")
        request.set_header("user-agent", None)   # None deletes
        request.add_header("x-twice", "a")
        request.add_header("x-twice", "b")

    answer = run_request(chain_of(hdr), http_req(codec, headers=HEADERS), ctx)
    assert answer.action_type == ACTION_REWRITE
    assert answer.rewrite.path is None and answer.rewrite.args is None
    assert answer.rewrite.headers == [
        ("X-New", "n"), ("x-multi", "1"), ("x-multi", "2"), ("x-multi", "3"),
        ("accept", None), ("user-agent", None), ("x-twice", "a"), ("x-twice", "b")]


def test_rewrite_carries_path_args_response_headers_and_body(codec, ctx):
    @a6fast.plugin("rw", inline=True)
    def rw(request, conf):
        request.set_path("/new")
        request.set_arg("a", "9")
        request.del_arg("y")
        request.add_arg("z", "1")
        request.set_resp_header("x-r", "1")
        request.set_resp_header("X-R", "2")      # replaces the earlier one
        request.add_resp_header("x-s", "a")
        request.add_resp_header("x-s", "b")
        request.set_body("b\u00f6dy")

    answer = run_request(chain_of(rw), http_req(codec, args=ARGS), ctx)
    assert answer.rewrite == gateway.Rewrite(
        "/new", None, [("a", "9"), ("y", None), ("z", "1")],
        [("X-R", "2"), ("x-s", "a"), ("x-s", "b")], "b\u00f6dy".encode())


def test_adding_to_a_bare_flag_sends_it_as_empty_since_no_value_would_delete(codec, ctx):
    @a6fast.plugin("flag", inline=True)
    def flag(request, conf):
        request.add_arg("flag", "1")
        assert request.args.getall("flag") == [None, "1"]

    answer = run_request(chain_of(flag), http_req(codec, args=ARGS), ctx)
    assert answer.rewrite.args == [("flag", ""), ("flag", "1")]


@pytest.mark.parametrize("bad", [lambda r: r.set_header("x", 1), lambda r: r.set_header("", "v"),
                                 lambda r: r.set_path("no-slash"), lambda r: r.stop(70000),
                                 lambda r: r.stop(body=12), lambda r: r.set_body(None)])
def test_wrong_types_fail_where_the_plugin_calls(codec, ctx, bad):
    @a6fast.plugin("bad", inline=True)
    def hook(request, conf):
        bad(request)

    with pytest.raises((TypeError, ValueError)):
        chain_of(hook).call_request(http_req(codec), ctx)


# ---------------------------------------------------------------------------------------------
# Request phase: reading

def test_request_exposes_id_method_path_src_ip_and_conf_token(codec, ctx):
    seen = {}

    @a6fast.plugin("look", inline=True)
    def look(request, conf):
        seen.update(id=request.id, method=request.method, path=request.path,
                    src_ip=request.src_ip, conf_token=request.conf_token)

    chain = chain_of(look)
    chain.call_request(http_req(codec, id=0, conf_token=5, method="PATCH", path="/x/y",
                                src_ip="10.0.0.7"), ctx)
    assert seen == dict(id=0, method="PATCH", path="/x/y", src_ip="10.0.0.7", conf_token=5)
    chain.call_request(http_req(codec, src_ip="::1"), ctx)
    assert seen["src_ip"] == "::1"
    chain.call_request(http_req(codec, src_ip=None, path=None), ctx)
    assert seen["src_ip"] is None and seen["path"] is None


def test_headers_view_is_case_insensitive_and_multi_valued(codec, ctx):
    seen = {}

    @a6fast.plugin("look", inline=True)
    def look(request, conf):
        h = request.headers
        seen.update(first=h["X-MULTI"], all=h.getall("x-Multi"), get=h.get("user-agent"),
                    missing=h.get("nope", "dflt"), getall_missing=h.getall("nope"),
                    contains=("HOST" in h, "nope" in h), len=len(h), names=list(h),
                    items=h.items())
        with pytest.raises(KeyError):
            h["nope"]

    chain_of(look).call_request(http_req(codec, headers=HEADERS), ctx)
    assert seen == dict(first="1", all=["1", "2"], get="curl", missing="dflt",
                        getall_missing=[], contains=(True, False), len=5,
                        names=[n for n, _ in HEADERS], items=HEADERS)


def test_args_are_case_sensitive_and_keep_bare_flags_apart_from_empty_values(codec, ctx):
    seen = {}

    @a6fast.plugin("look", inline=True)
    def look(request, conf):
        a = request.args
        seen.update(a=a.getall("a"), A=a["A"], flag=a["flag"], has_flag="flag" in a,
                    y=a["y"], missing="Y" in a, items=a.items())

    chain_of(look).call_request(http_req(codec, args=ARGS), ctx)
    assert seen == dict(a=["1", "2"], A="upper", flag=None, has_flag=True, y="",
                        missing=False, items=ARGS)


def test_a_later_plugin_sees_an_earlier_plugins_changes(codec, ctx):
    seen = {}

    @a6fast.plugin("first", inline=True)
    def first(request, conf):
        request.set_header("X-Tag", "t")
        request.del_header("host")
        request.add_header("x-multi", "3")
        request.set_path("/moved")
        request.set_arg("a", "only")

    @a6fast.plugin("second", inline=True)
    def second(request, conf):
        h = request.headers
        seen.update(tag=h["x-tag"], host="host" in h, multi=h.getall("X-Multi"),
                    path=request.path, a=request.args.getall("a"), n=len(h),
                    items=h.items())

    chain_of(first, second).call_request(http_req(codec, headers=HEADERS, args=ARGS), ctx)
    assert seen["tag"] == "t" and seen["host"] is False
    assert seen["multi"] == ["1", "2", "3"]
    assert seen["path"] == "/moved" and seen["a"] == ["only"]
    assert seen["n"] == 6
    assert sorted(seen["items"]) == sorted([("accept", "a/b"), ("User-Agent", "curl"),
                                            ("X-Tag", "t"), ("x-multi", "1"), ("x-multi", "2"),
                                            ("x-multi", "3")])


class CountingReq:
    """A codec object that records which of its fields were read."""

    def __init__(self, req):
        self._req = req
        self.read = set()

    def __getattr__(self, name):
        self.read.add(name)
        return getattr(self._req, name)


def test_a_plugin_reading_only_the_path_never_reads_headers_or_args(codec, ctx):
    @a6fast.plugin("by-path", inline=True)
    def by_path(request, conf):
        if request.path == "/admin":
            request.stop(403)

    req = CountingReq(http_req(codec, path="/admin", headers=HEADERS * 12, args=ARGS))
    answer = req_answer(chain_of(by_path).call_request(req, ctx))
    assert answer.stop.status == 403
    assert "headers" not in req.read and "args" not in req.read


def test_setting_headers_without_reading_them_does_not_read_the_originals(codec, ctx):
    @a6fast.plugin("tag", inline=True)
    def tag(request, conf):
        request.set_header("x-tag", "1")

    req = CountingReq(http_req(codec, headers=HEADERS))
    answer = req_answer(chain_of(tag).call_request(req, ctx))
    assert answer.rewrite.headers == [("x-tag", "1")]
    assert "headers" not in req.read


def test_reading_some_headers_and_args_by_name_never_decodes_the_others(codec, ctx):
    seen = {}

    @a6fast.plugin("by-name", inline=True)
    def by_name(request, conf):
        seen["ua"] = request.headers.get("USER-AGENT")
        seen["absent"] = request.headers.get("x-absent", "none")
        seen["has"] = "Accept" in request.headers
        seen["arg"] = request.args.getall("a")
        request.add_header("x-tag", "1")
        seen["tag"] = request.headers.getall("X-Tag")

    headers = [("User-Agent", "ua/1"), ("accept", "*/*"), ("user-agent", "ua/2")] + HEADERS * 12
    req = CountingReq(http_req(codec, headers=headers, args=[("a", "1"), ("A", "2"), ("a", None)]))
    answer = req_answer(chain_of(by_name).call_request(req, ctx))
    assert seen == {"ua": "ua/1", "absent": "none", "has": True, "arg": ["1", None],
                    "tag": ["1"]}
    assert answer.rewrite.headers == [("x-tag", "1")]
    # found by name in the encoded entries: neither list was decoded whole
    assert "headers" not in req.read and "args" not in req.read
    assert {"header_values", "arg_values"} <= req.read


# ---------------------------------------------------------------------------------------------
# How hooks run: inline, async, threads

def test_an_all_inline_chain_answers_at_once_on_the_calling_thread(codec, ctx):
    futures.set_offload(None)  # no thread can be used
    threads = []

    @a6fast.plugin("one", inline=True)
    def one(request, conf):
        threads.append(threading.get_ident())
        request.set_header("x-a", "1")

    class Two(a6fast.Plugin):
        name = "two"
        inline = True

        def on_request(self, request, conf):
            threads.append(threading.get_ident())

    answer = chain_of(one, Two).call_request(http_req(codec), ctx)
    assert type(answer) is bytes
    assert threads == [threading.get_ident()] * 2
    assert req_answer(answer).rewrite.headers == [("x-a", "1")]


def test_async_hook_awaits_vars_and_body_once_per_call(codec, ctx):
    seen = {}

    @a6fast.plugin("auth")
    async def auth(request, conf):
        seen["addr"] = await request.var("remote_addr")
        seen["again"] = await request.var("remote_addr")
        seen["unknown"] = await request.var("no_such_var")
        seen["utf8"] = await request.var("http_x")
        seen["body"] = await request.body()
        seen["body2"] = await request.body()
        if seen["addr"] != "10.0.0.7":
            request.stop(403)
        request.set_header("x-user", "u")

    future = chain_of(auth).call_request(http_req(codec), ctx)
    assert isinstance(future, Future) and not future.done()
    answer = req_answer(ctx.loop.settle(future))
    assert answer.rewrite.headers == [("x-user", "u")]
    assert seen == dict(addr="10.0.0.7", again="10.0.0.7", unknown=None, utf8="caf\u00e9",
                        body=b"\xffbody", body2=b"\xffbody")
    assert ctx.asked == [(INFO_VAR, "remote_addr"), (INFO_VAR, "no_such_var"),
                         (INFO_VAR, "http_x"), (INFO_REQ_BODY, None)]


def test_async_hook_can_run_blocking_work_in_a_thread(codec, ctx):
    def lookup(addr):
        return threading.get_ident(), "user-of-" + addr

    @a6fast.plugin("auth")
    async def auth(request, conf):
        thread, user = await a6fast.run_blocking(lookup, await request.var("remote_addr"))
        assert thread != threading.get_ident()
        request.set_header("x-user", user)

    answer = run_request(chain_of(auth), http_req(codec), ctx)
    assert answer.rewrite.headers == [("x-user", "user-of-10.0.0.7")]


def test_plain_def_hook_runs_in_a_worker_thread_and_may_block_on_get_var(codec, ctx):
    seen = {}

    @a6fast.plugin("slow")
    def slow(request, conf):
        seen["thread"] = threading.get_ident()
        seen["addr"] = request.get_var("remote_addr")
        seen["addr2"] = request.get_var("remote_addr")
        seen["body"] = request.get_body()
        request.stop(200, body=seen["addr"])

    answer = run_request(chain_of(slow), http_req(codec), ctx)
    assert seen["thread"] != threading.get_ident()
    assert seen["addr"] == seen["addr2"] == "10.0.0.7" and seen["body"] == b"\xffbody"
    assert answer.stop.body == b"10.0.0.7"
    assert ctx.asked == [(INFO_VAR, "remote_addr"), (INFO_REQ_BODY, None)]


def test_mixed_chain_runs_in_order_across_loop_and_threads(codec, ctx):
    order = []

    @a6fast.plugin("a", inline=True)
    def a(request, conf):
        order.append("a")
        request.set_header("x-order", "a")

    @a6fast.plugin("b")
    def b(request, conf):
        order.append("b:" + request.headers["x-order"])
        request.add_header("x-order", "b")

    @a6fast.plugin("c")
    async def c(request, conf):
        order.append("c:" + ",".join(request.headers.getall("x-order")))
        await request.var("route_id")
        request.add_header("x-order", "c")

    answer = run_request(chain_of(a, b, c), http_req(codec), ctx)
    assert order == ["a", "b:a", "c:a,b"]
    assert answer.rewrite.headers == [("x-order", "a"), ("x-order", "b"), ("x-order", "c")]


def test_get_var_on_the_loop_thread_raises_a_clear_error(codec, ctx):
    @a6fast.plugin("wrong", inline=True)
    def wrong(request, conf):
        request.get_var("remote_addr")

    with pytest.raises(RuntimeError, match="await request.var"):
        chain_of(wrong).call_request(http_req(codec), ctx)
    assert ctx.asked == []


def test_an_inline_hook_that_returns_a_coroutine_fails(codec, ctx):
    async def later(request):
        request.stop(200)

    @a6fast.plugin("sneaky", inline=True)
    def sneaky(request, conf):
        return later(request)

    with pytest.raises(TypeError, match="async def"):
        chain_of(sneaky).call_request(http_req(codec), ctx)


# ---------------------------------------------------------------------------------------------
# Failures are raised or set on the future, never answered as success

def _failing(kind):
    if kind == "inline":
        @a6fast.plugin("boom", inline=True)
        def boom(request, conf):
            raise LookupError("inline failure")
    elif kind == "async":
        @a6fast.plugin("boom")
        async def boom(request, conf):
            await request.var("remote_addr")
            raise LookupError("async failure")
    else:
        @a6fast.plugin("boom")
        def boom(request, conf):
            raise LookupError("thread failure")
    return boom


@pytest.mark.parametrize("kind", ["inline", "async", "thread"])
def test_a_failing_plugin_fails_the_call_and_names_the_plugin(codec, ctx, kind):
    chain = chain_of(_failing(kind))
    with pytest.raises(LookupError, match=kind) as info:
        ctx.loop.settle(chain.call_request(http_req(codec), ctx))
    assert any("'boom'" in note for note in info.value.__notes__)
    assert blamed_plugin(info.value) == "boom"


def test_blamed_plugin_is_the_last_plugin_that_raised_it():
    exc = RuntimeError("reused")
    assert blamed_plugin(exc) is None
    exc.add_note("some other note")
    _blame(exc, "first")
    _blame(exc, "it's \"second\"")
    assert blamed_plugin(exc) == "it's \"second\""


def test_a_failing_response_plugin_fails_the_call(codec, ctx):
    @a6fast.plugin("boom", phase="response", inline=True)
    def boom(response, conf):
        raise LookupError("response failure")

    with pytest.raises(LookupError):
        chain_of(boom).call_response(http_resp(codec), ctx)


# ---------------------------------------------------------------------------------------------
# Conf: parsed once at prepare time

def test_conf_is_json_decoded_once_at_prepare_time(codec, ctx):
    parsed, seen = [], []

    def check(conf):
        parsed.append(conf)
        return {"limit": conf["limit"] * 2}

    @a6fast.plugin("limit", inline=True, conf=check)
    def limit(request, conf):
        seen.append(conf)

    chain = chain_of(limit, conf='{"limit": 21}')
    for _ in range(3):
        chain.call_request(http_req(codec), ctx)
    assert parsed == [{"limit": 21}]
    assert seen == [{"limit": 42}] * 3


def test_absent_or_blank_conf_is_none_and_raw_text_is_available(codec, ctx):
    seen = []

    @a6fast.plugin("plain", inline=True)
    def plain(request, conf):
        seen.append(conf)

    @a6fast.plugin("raw", inline=True, json_conf=False)
    def raw(request, conf):
        seen.append(conf)

    registry = Registry()
    registry.add(plain)
    registry.add(raw)
    chain = registry.prepare([("plain", None), ("plain", "  "), ("raw", "not json")])
    chain.call_request(http_req(codec), ctx)
    assert seen == [None, None, "not json"]


def test_invalid_json_or_a_rejecting_parser_is_a_conf_error():
    @a6fast.plugin("strict", inline=True, conf=lambda conf: conf["required"])
    def strict(request, conf):
        pass

    class Picky(a6fast.Plugin):
        name = "picky"

        def parse_conf(self, conf):
            if conf != "ok":
                raise ValueError("want ok")
            return conf

        def on_request(self, request, conf):
            pass

    registry = Registry()
    registry.add(strict)
    registry.add(Picky)
    with pytest.raises(ConfError, match="strict.*JSON"):
        registry.prepare([("strict", "{nope")])
    with pytest.raises(ConfError, match="strict.*KeyError"):
        registry.prepare([("strict", "{}")])
    with pytest.raises(ConfError, match="want ok"):
        registry.prepare([("picky", '"nope"')])
    registry.prepare([("picky", '"ok"'), ("strict", '{"required": 1}')])


def test_an_unknown_plugin_name_raises_unknown_plugin():
    with pytest.raises(UnknownPlugin) as info:
        Registry.load(entry_points=False).prepare([("stop", None), ("no-such", None)])
    assert info.value.name == "no-such"
    assert isinstance(info.value, ConfError)


def test_class_plugin_runs_both_phases_with_conf_parsed_once(codec, ctx):
    class Tagger(a6fast.Plugin):
        name = "tagger"
        parses = 0

        def parse_conf(self, conf):
            Tagger.parses += 1
            return conf["tag"]

        def on_request(self, request, conf):  # plain def: a worker thread
            request.set_header("x-tag", conf)

        async def on_response(self, response, conf):
            response.set_header("x-tag", conf + ":" + (await response.body()).decode())

    chain = chain_of(Tagger, conf='{"tag": "t"}')
    req_ans = run_request(chain, http_req(codec), ctx)
    resp_ans = run_response(chain, http_resp(codec, headers=[("a", "1")]), ctx)
    assert Tagger.parses == 1
    assert req_ans.rewrite.headers == [("x-tag", "t")]
    assert resp_ans.headers == [("a", "1"), ("x-tag", "t:upstream")]
    assert (INFO_RESP_BODY, None) in ctx.asked


def test_plugin_declarations_are_checked():
    with pytest.raises(ValueError):
        a6fast.plugin("x", phase="later")
    with pytest.raises(TypeError):
        a6fast.plugin("")
    with pytest.raises(TypeError):
        Registry().add(object())

    class NoHooks(a6fast.Plugin):
        name = "no-hooks"

    with pytest.raises(TypeError, match="neither"):
        Registry().add(NoHooks)


# ---------------------------------------------------------------------------------------------
# Response phase

UPSTREAM = [("content-type", "text/plain"), ("set-cookie", "a=1"), ("set-cookie", "b=2"),
            ("x-drop", "1")]


def test_unchanged_response_answers_with_nothing_set(codec, ctx):
    @a6fast.plugin("look", phase="response", inline=True)
    def look(response, conf):
        assert response.status == 502 and response.headers.getall("Set-Cookie") == ["a=1", "b=2"]

    answer = run_response(chain_of(look), http_resp(codec, id=4, status=502, headers=UPSTREAM), ctx)
    assert answer == gateway.HTTPRespCallResp(4, 0, None, None)


def test_changed_response_headers_are_sent_as_the_full_merged_set(codec, ctx):
    @a6fast.plugin("hdrs", phase="response", inline=True)
    def hdrs(response, conf):
        response.set_header("X-New", "n")
        response.del_header("x-drop")
        response.add_header("set-cookie", "c=3")

    answer = run_response(chain_of(hdrs), http_resp(codec, headers=UPSTREAM), ctx)
    assert answer.status == 0 and answer.body is None
    assert sorted(answer.headers) == sorted([
        ("content-type", "text/plain"), ("set-cookie", "a=1"), ("set-cookie", "b=2"),
        ("set-cookie", "c=3"), ("X-New", "n")])


def test_every_response_plugin_runs_and_sees_earlier_changes(codec, ctx):
    seen = []

    @a6fast.plugin("status", phase="response", inline=True)
    def status(response, conf):
        response.set_status(418)
        response.set_header("x-a", "1")

    @a6fast.plugin("body", phase="response")
    async def body(response, conf):
        seen.append((response.status, response.headers["x-a"], await response.body()))
        response.set_body("new " + (await response.body()).decode())

    answer = run_response(chain_of(status, body), http_resp(codec, status=200), ctx)
    assert seen == [(418, "1", b"upstream")]
    assert answer == gateway.HTTPRespCallResp(7, 418, [("x-a", "1")], b"new upstream")


def test_response_get_var_and_get_body_work_in_threads(codec, ctx):
    @a6fast.plugin("thready", phase="response")
    def thready(response, conf):
        response.set_header("x-route", response.get_var("route_id"))
        response.set_body(response.get_body() + b"!")

    answer = run_response(chain_of(thready), http_resp(codec), ctx)
    assert answer.headers == [("x-route", "r1")] and answer.body == b"upstream!"


# ---------------------------------------------------------------------------------------------
# The built-in examples

@pytest.fixture(scope="module")
def builtins():
    return Registry.load(entry_points=False)


def test_stop_example_answers_exactly_its_conf(codec, ctx, builtins):
    conf = json.dumps({"status": 403, "headers": {"x-a": "1", "x-b": ["2", "3"]}, "body": "text"})
    chain = builtins.prepare([("stop", conf)])
    assert run_request(chain, http_req(codec), ctx).stop == gateway.Stop(
        403, [("x-a", "1"), ("x-b", "2"), ("x-b", "3")], b"text")
    plain = builtins.prepare([("stop", None)])
    assert run_request(plain, http_req(codec), ctx).stop == gateway.Stop(200, None, None)


@pytest.mark.parametrize("conf", ['{"status": "403"}', '{"status": 99}', '{"headers": {"a": 1}}',
                                  '{"body": 5}', '{"stauts": 403}', '[]'])
def test_stop_example_rejects_a_wrong_conf(builtins, conf):
    with pytest.raises(ConfError):
        builtins.prepare([("stop", conf)])


def test_rewrite_example_rewrites_exactly_its_conf(codec, ctx, builtins):
    conf = json.dumps({"path": "/new", "headers": {"x-a": "1", "x-gone": None},
                       "args": {"a": "1", "b": None, "m": ["x", "y"]},
                       "resp_headers": {"x-r": "2"}, "body": "B"})
    answer = run_request(builtins.prepare([("rewrite", conf)]), http_req(codec, args=ARGS), ctx)
    assert answer.rewrite == gateway.Rewrite(
        "/new", [("x-a", "1"), ("x-gone", None)], [("a", "1"), ("b", None), ("m", "x"), ("m", "y")],
        [("x-r", "2")], b"B")


def test_echo_vars_example_answers_vars_and_latin1_body_as_json(codec, ctx, builtins):
    conf = json.dumps({"vars": ["remote_addr", "route_id", "missing"], "body": True})
    answer = run_request(builtins.prepare([("echo-vars", conf)]), http_req(codec), ctx)
    assert answer.stop.status == 200
    assert json.loads(answer.stop.body) == {"remote_addr": "10.0.0.7", "route_id": "r1",
                                            "missing": None, "body": "\u00ffbody"}
    no_body = Ctx(ctx.loop)
    answer = run_request(builtins.prepare([("echo-vars", '{"body": true}')]), http_req(codec),
                         no_body)
    assert json.loads(answer.stop.body) == {"body": None}


def test_resp_header_example_sets_headers_keeping_the_others_and_the_status(codec, ctx,
                                                                          builtins):
    conf = '{"set": {"x-a": "1", "x-drop": null}, "status": 201}'
    chain = builtins.prepare([("resp-header", conf)])
    answer = run_response(chain, http_resp(codec, headers=UPSTREAM), ctx)
    assert answer.status == 201
    assert sorted(answer.headers) == sorted(UPSTREAM[:3] + [("x-a", "1")])
    untouched = builtins.prepare([("resp-header", '{"set": {"x-a": "1"}}')])
    assert run_response(untouched, http_resp(codec), ctx).status == 0


def test_builtins_are_inline_or_async(builtins):
    from a6fast.plugin import THREAD
    for name in builtins.names():
        spec = builtins.get(name)
        assert THREAD not in (spec.request_mode if spec.request_hook else None,
                              spec.response_mode if spec.response_hook else None), name


# ---------------------------------------------------------------------------------------------
# Loading plugin files

def test_a_broken_plugin_file_is_logged_with_its_line_and_skipped(tmp_path, caplog,
                                                                 isolated_imports):
    (tmp_path / "good.py").write_text(
        "import a6fast\n\n@a6fast.plugin('good', inline=True)\ndef good(request, conf):\n"
        "    request.stop(204)\n")
    (tmp_path / "broken.py").write_text("import a6fast\n\nx = 1\nraise RuntimeError('bad file')\n")
    (tmp_path / "syntax.py").write_text("def f(:\n")
    (tmp_path / "_helper.py").write_text("raise RuntimeError('never imported')\n")
    with caplog.at_level(logging.ERROR, logger="a6fast.plugins"):
        registry = Registry.load(plugin_dirs=[str(tmp_path)], builtins=False, entry_points=False)
    assert registry.names() == ["good"]
    errors = {file.rsplit("/", 1)[-1]: (line, message) for file, line, message in registry.errors}
    assert errors["broken.py"][0] == 4 and "bad file" in errors["broken.py"][1]
    assert errors["syntax.py"][0] == 1 and "SyntaxError" in errors["syntax.py"][1]
    assert "broken.py:4" in caplog.text


# ---------------------------------------------------------------------------------------------
# A model of the header view: whatever a plugin does, view and Rewrite agree with it

NAMES = st.sampled_from(["a", "A", "b", "x-y", "X-Y"])
OPS = st.lists(st.tuples(st.sampled_from(["set", "add", "del", "set-none"]), NAMES,
                         st.sampled_from(["1", "2", ""])), max_size=12)
ORIGINAL = st.lists(st.tuples(NAMES, st.sampled_from(["o1", "o2"])), max_size=5)


@settings(max_examples=200, deadline=None)
@given(original=ORIGINAL, ops=OPS)
def test_header_view_and_rewrite_match_a_simple_model(original, ops):
    from a6fast import _codec_py
    model = {}
    for name, value in original:
        model.setdefault(name.lower(), []).append(value)
    touched = set()

    @a6fast.plugin("model", inline=True)
    def hook(request, conf):
        for op, name, value in ops:
            key = name.lower()
            touched.add(key)
            if op == "set":
                request.set_header(name, value)
                model[key] = [value]
            elif op == "add":
                request.add_header(name, value)
                model.setdefault(key, []).append(value)
            elif op == "del":
                request.del_header(name)
                model.pop(key, None)
            else:
                request.set_header(name, None)
                model.pop(key, None)
            assert request.headers.getall(name) == model.get(key, [])
        assert len(request.headers) == sum(map(len, model.values()))

    ctx = Ctx(Loop())
    answer = req_answer(chain_of(hook).call_request(http_req(_codec_py, headers=original), ctx))
    if not touched:
        assert answer.action_type == ACTION_NONE
        return
    sent = {}
    for name, value in answer.rewrite.headers:
        sent.setdefault(name.lower(), []).append(value)
    assert set(sent) == touched
    for key in touched:
        assert sent[key] == (model[key] if key in model else [None])


class FakeEntryPoint:
    def __init__(self, name, load):
        self.name, self.value, self._load = name, "pkg.mod:" + name, load

    def load(self):
        return self._load()


def test_entry_points_load_plugins_and_a_broken_one_is_recorded(monkeypatch, codec, ctx):
    import types
    import a6fast.registry as registry_module

    @a6fast.plugin("from-ep", inline=True)
    def from_ep(request, conf):
        request.stop(202)

    module = types.ModuleType("ep_module")
    exec("import a6fast\n\nclass Stop(a6fast.Plugin):\n    name = 'stop'\n    inline = True\n\n"
         "    def on_request(self, request, conf):\n        request.stop(299)\n", module.__dict__)

    def broken():
        raise ImportError("no such package")

    eps = [FakeEntryPoint("from-ep", lambda: from_ep), FakeEntryPoint("mod", lambda: module),
           FakeEntryPoint("broken", broken)]
    monkeypatch.setattr(registry_module, "_entry_points",
                        lambda group: eps if group == "a6fast.plugins" else [])
    registry = Registry.load()
    assert {"from-ep", "stop", "echo-vars"} <= set(registry.names())
    assert registry.source("stop") == "entry point mod = pkg.mod:mod"  # wins over the builtin
    assert run_request(registry.prepare([("stop", None)]), http_req(codec), ctx).stop.status == 299
    assert [(file, message) for file, _, message in registry.errors] == [
        ("entry point broken = pkg.mod:broken", "ImportError: no such package")]
