"""What plugins produce is valid HTTP once the gateway sends it: header fields and statuses are
checked where a plugin sets them (a bad one fails the call closed), and the response phase never
echoes upstream's framing or hop-by-hop headers back for APISIX to set beside its own."""
import os

import pytest

import a6fast
from a6fast import gateway
from a6fast.protocol import (INFO_RESP_BODY, RPC_HTTP_REQ_CALL, RPC_HTTP_RESP_CALL,
                             SERVICE_UNAVAILABLE)
from a6fast.registry import Registry

from harness import PLUGINS, RunnerProcess, err_code
from test_plugins import (chain_of, http_req, http_resp, req_answer,  # noqa: F401  (fixtures)
                          resp_answer, run_request, run_response, ctx, isolated_imports, loop)


def fails_naming(run, plugin, *fields):
    """``run()`` raises ValueError; the message names each field, a note names ``plugin``."""
    with pytest.raises(ValueError) as info:
        run()
    text = str(info.value)
    for field in fields:
        assert field in text, (field, text)
    notes = getattr(info.value, "__notes__", [])
    assert any(repr(plugin) in note for note in notes), notes
    return info.value


def request_plugin(act):
    @a6fast.plugin("producer", inline=True)
    def producer(request, conf):
        act(request)
    return chain_of(producer)


def respond(chain, req):
    """The answer of an all-inline response chain (no call context needed)."""
    return resp_answer(chain.call_response(req, None))


def response_plugin(act):
    @a6fast.plugin("resp-producer", phase="response", inline=True)
    def producer(response, conf):
        act(response)
    return chain_of(producer)


# ---------------------------------------------------------------------------------------------
# Header fields and statuses a plugin sets

BAD_NAMES = ["x\r\ny", "x\ny", "x\x00", "bad name", "x:y", "x(y)", "caf\u00e9", "x\x7f", "\t"]
BAD_VALUES = ["a\r\nx-injected: 1", "a\nb", "a\rb", "a\x00b", "a\x01", "a\x7fb", " lead",
              "trail ", "\ttab", "\ud800"]


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize("setter", ["set_header", "add_header", "set_resp_header",
                                    "add_resp_header", "del_header"])
def test_a_header_name_that_is_not_a_token_fails_where_the_plugin_sets_it(codec, setter, name):
    args = (name,) if setter == "del_header" else (name, "v")
    chain = request_plugin(lambda r: getattr(r, setter)(*args))
    fails_naming(lambda: chain.call_request(http_req(codec), None), "producer", repr(name))


@pytest.mark.parametrize("value", BAD_VALUES)
@pytest.mark.parametrize("setter", ["set_header", "add_header", "set_resp_header",
                                    "add_resp_header"])
def test_a_header_value_that_is_not_a_field_value_fails_where_the_plugin_sets_it(codec, setter,
                                                                                 value):
    chain = request_plugin(lambda r: getattr(r, setter)("x-bad", value))
    fails_naming(lambda: chain.call_request(http_req(codec), None), "producer", "'x-bad'",
                 repr(value))


@pytest.mark.parametrize("headers", [
    {"x-bad": "a\r\nb"}, {"x-bad": ["ok", "a\nb"]}, [("x-bad", "\x00")], (("x-bad", " v"),),
    {"x bad": "v"}, [("", "v")]])
def test_stop_headers_that_are_not_valid_http_fail(codec, headers):
    chain = request_plugin(lambda r: r.stop(403, headers, "no"))
    fails_naming(lambda: chain.call_request(http_req(codec), None), "producer")


@pytest.mark.parametrize("setter", ["set_header", "add_header"])
@pytest.mark.parametrize("name,value", [("x-bad", "a\r\nb"), ("x-bad", "tail\t"),
                                        ("x\r\nbad", "v")])
def test_response_headers_that_are_not_valid_http_fail(codec, setter, name, value):
    chain = response_plugin(lambda r: getattr(r, setter)(name, value))
    fails_naming(lambda: chain.call_response(http_resp(codec), None), "resp-producer",
                 repr(name))


@pytest.mark.parametrize("status", [1, 99, 600, 999, 65535])
def test_a_stop_status_outside_100_to_599_fails(codec, status):
    chain = request_plugin(lambda r: r.stop(status))
    fails_naming(lambda: chain.call_request(http_req(codec), None), "producer", str(status))


@pytest.mark.parametrize("status", [0, 1, 99, 600, 999, 65535])
def test_a_response_status_outside_100_to_599_fails(codec, status):
    chain = response_plugin(lambda r: r.set_status(status))
    fails_naming(lambda: chain.call_response(http_resp(codec), None), "resp-producer",
                 str(status))


@pytest.mark.parametrize("status", [0, 100, 200, 599])
def test_a_stop_status_of_0_or_100_to_599_is_sent(codec, status):
    answer = req_answer(request_plugin(lambda r: r.stop(status)).call_request(http_req(codec), None))
    assert answer.stop.status == status


@pytest.mark.parametrize("act,field", [
    (lambda r: r.set_arg("a", "1\r\n2"), "'a'"), (lambda r: r.add_arg("a", "\x00"), "'a'"),
    (lambda r: r.set_arg("a\nb", "1"), "'a\\nb'"), (lambda r: r.del_arg("\r"), "'\\r'"),
    (lambda r: r.set_path("/a\r\nb"), "'/a\\r\\nb'"), (lambda r: r.set_path("/\x00"), "path")])
def test_args_and_path_with_nul_cr_or_lf_fail(codec, act, field):
    chain = request_plugin(act)
    fails_naming(lambda: chain.call_request(http_req(codec), None), "producer", field)


def test_valid_fields_in_every_place_are_sent_as_given(codec):
    tchars = "!#$%&'*+-.^_`|~09azAZ"
    value = "caf\u00e9 \t\"quoted\" \udcff end"   # obs-text (UTF-8, an escaped byte), SP, HTAB

    def act(request):
        request.set_header(tchars, value)
        request.add_header("x-empty", "")
        request.set_resp_header("X-R", value)
        request.set_arg("q", "a b&c=d\t\u00e9")
        request.set_path("/caf\u00e9 x")

    answer = req_answer(request_plugin(act).call_request(http_req(codec), None))
    assert answer.rewrite.headers == [(tchars, value), ("x-empty", "")]
    assert answer.rewrite.resp_headers == [("X-R", value)]
    assert answer.rewrite.args == [("q", "a b&c=d\t\u00e9")]
    assert answer.rewrite.path == "/caf\u00e9 x"


def test_the_memo_of_valid_names_and_values_stays_bounded(codec):
    from a6fast import http

    def act(request):
        for i in range(3 * http._SEEN_MAX):
            request.set_header("x-%d" % i, "v%d" % i)
        request.set_header("x-bad", "\r\n")   # still checked once the memo has been emptied

    chain = request_plugin(act)
    fails_naming(lambda: chain.call_request(http_req(codec), None), "producer", "'x-bad'")
    assert len(http._NAMES_SEEN) <= http._SEEN_MAX
    assert len(http._VALUES_SEEN) <= http._SEEN_MAX


def test_a_header_list_changed_after_stop_is_not_what_is_sent(codec):
    def act(request):
        headers = [("x-a", "1")]
        request.stop(403, headers, "no")
        headers.append(("x-injected", "a\r\nb"))
        headers[0] = ("x-a", "\r\n")

    answer = req_answer(request_plugin(act).call_request(http_req(codec), None))
    assert answer.stop == gateway.Stop(403, [("x-a", "1")], b"no")


OFFICIAL_PRODUCER = """\
import json
from apisix.runner.plugin.core import PluginBase


class Producer(PluginBase):
    def name(self):
        return "official-producer"

    def config(self, conf):
        return json.loads(conf)

    def filter(self, conf, req, reply):
        where, name, value = conf
        if where == "req":
            req.set_header(name, value)
        elif where == "seed-req":
            req.headers[name] = value
        elif where == "arg":
            req.set_arg(name, value)
        elif where == "reply":
            reply.set_header(name, value)
            reply.set_body("stopped")
        else:
            reply.status_code = value
"""


@pytest.mark.usefixtures("isolated_imports")
@pytest.mark.parametrize("conf,field", [
    ('["req", "x-bad", "a\\r\\nb"]', "x-bad"), ('["seed-req", "x-bad", "\\u0000"]', "x-bad"),
    ('["arg", "a", "1\\n2"]', "'a'"), ('["reply", "x bad", "v"]', "x bad"),
    ('["status", null, 600]', "600")])
def test_an_official_runner_plugin_producing_an_invalid_field_fails(codec, ctx, tmp_path, conf,
                                                                   field):
    (tmp_path / "producer.py").write_text(OFFICIAL_PRODUCER)
    registry = Registry.load(plugin_dirs=[str(tmp_path)], entry_points=False)
    chain = registry.prepare([("official-producer", conf)])
    fails_naming(lambda: run_request(chain, http_req(codec), ctx), "official-producer", field)


# ---------------------------------------------------------------------------------------------
# Framing and hop-by-hop headers

UPSTREAM = [("Content-Type", "application/json"), ("Content-Length", "273"),
            ("Transfer-Encoding", "chunked"), ("Connection", "close, X-Conn-Opt"),
            ("Keep-Alive", "timeout=5"), ("X-Conn-Opt", "1"), ("TE", "trailers"),
            ("Trailer", "x-sum"), ("Upgrade", "h2c"), ("Proxy-Connection", "keep-alive"),
            ("Proxy-Authenticate", "Basic"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"),
            ("x-a", "0")]
END_TO_END = [("Content-Type", "application/json"), ("Set-Cookie", "a=1"),
              ("Set-Cookie", "b=2")]


def test_a_header_change_sends_upstreams_headers_without_framing_or_hop_by_hop_ones(codec):
    answer = respond(response_plugin(lambda r: r.set_header("x-a", "1")),
                     http_resp(codec, headers=UPSTREAM))
    assert sorted(answer.headers) == sorted(END_TO_END + [("x-a", "1")])


def test_a_changed_body_never_goes_out_with_upstreams_content_length(codec):
    # The case: a 3-byte body went out with upstream's content-length: 273.
    def act(response):
        response.set_body("abc")
        response.set_header("x-a", "1")

    answer = respond(response_plugin(act), http_resp(codec, headers=UPSTREAM))
    assert answer.body == b"abc"
    assert sorted(answer.headers) == sorted(END_TO_END + [("x-a", "1")])


def test_a_changed_body_alone_leaves_the_headers_to_the_gateway(codec):
    answer = respond(response_plugin(lambda r: r.set_body("abc")),
                     http_resp(codec, headers=UPSTREAM))
    assert answer == gateway.HTTPRespCallResp(7, 0, None, b"abc")


def test_deleting_every_header_is_sent_as_deletions_not_as_an_empty_list(codec):
    # APISIX reads an empty list as "no change" and sets upstream's headers again.
    def act(response):
        for name in set(response.headers):
            response.del_header(name)

    answer = respond(response_plugin(act), http_resp(codec, headers=UPSTREAM[:2]))
    assert sorted(answer.headers) == [("Content-Length", None), ("Content-Type", None)]


def test_deleting_the_last_end_to_end_header_is_sent_as_a_deletion(codec):
    upstream = [("Content-Length", "3"), ("x-a", "0")]
    answer = respond(response_plugin(lambda r: r.del_header("X-A")),
                     http_resp(codec, headers=upstream))
    assert answer.headers == [("X-A", None)]


def test_a_deletion_is_not_sent_back_as_the_upstream_header(codec):
    answer = respond(response_plugin(lambda r: r.del_header("set-cookie")),
                     http_resp(codec, headers=UPSTREAM))
    assert sorted(answer.headers) == [("Content-Type", "application/json"), ("x-a", "0")]


@pytest.mark.parametrize("name", ["Transfer-Encoding", "connection", "Keep-Alive", "TE",
                                  "Trailer", "Upgrade", "Proxy-Connection"])
def test_a_plugin_cannot_set_a_header_the_gateway_frames_or_owns(codec, name):
    for act in (lambda r: r.set_header(name, "close"), lambda r: r.add_header(name, "close")):
        chain = response_plugin(act)
        fails_naming(lambda: chain.call_response(http_resp(codec), None), "resp-producer",
                     repr(name))
    for act in (lambda r: r.stop(200, {name: "x"}, "b"), lambda r: r.set_resp_header(name, "x"),
                lambda r: r.add_resp_header(name, "x")):
        chain = request_plugin(act)
        fails_naming(lambda: chain.call_request(http_req(codec), None), "producer", repr(name))


def test_deleting_a_gateway_owned_header_is_allowed_and_sends_nothing_for_it(codec):
    def act(response):
        response.del_header("Connection")
        response.set_header("Transfer-Encoding", None)
        response.set_header("x-a", "1")

    answer = respond(response_plugin(act), http_resp(codec, headers=UPSTREAM))
    assert sorted(answer.headers) == sorted(END_TO_END + [("x-a", "1")])


def test_a_response_content_length_agreeing_with_the_new_body_is_sent(codec):
    def act(response):
        response.set_header("Content-Length", "3")
        response.set_body(b"abc")

    answer = respond(response_plugin(act), http_resp(codec, headers=UPSTREAM))
    assert sorted(answer.headers) == sorted(END_TO_END + [("Content-Length", "3"), ("x-a", "0")])


@pytest.mark.parametrize("values,body", [(["4"], "abc"), (["3", "3"], "abc"), (["+3"], "abc"),
                                         (["\u0663"], "abc"), (["0"], None), (["1"], None)])
def test_a_response_content_length_that_cannot_agree_with_the_body_sent_fails(codec, values,
                                                                             body):
    def act(response):
        response.set_header("Content-Length", values[0])
        for value in values[1:]:
            response.add_header("Content-Length", value)
        if body is not None:
            response.set_body(body)

    chain = response_plugin(act)
    fails_naming(lambda: chain.call_response(http_resp(codec, headers=UPSTREAM), None),
                 "resp-producer", "Content-Length")


def test_a_response_content_length_may_agree_with_the_upstream_body_the_plugin_read(codec, ctx):
    @a6fast.plugin("measure", phase="response")
    async def measure(response, conf):
        response.set_header("content-length", str(len(await response.body())))

    answer = run_response(chain_of(measure), http_resp(codec, headers=UPSTREAM), ctx)
    assert ("content-length", "8") in answer.headers   # ctx's upstream body is b"upstream"


def test_an_empty_response_body_fails_since_the_gateway_would_send_upstreams(codec):
    # APISIX reads an empty body as "unchanged": a plugin blanking the body would let it through.
    chain = response_plugin(lambda r: r.set_body(b""))
    fails_naming(lambda: chain.call_response(http_resp(codec), None), "resp-producer", "body")


def test_an_empty_response_body_is_sent_when_the_upstream_body_was_empty(codec, ctx):
    @a6fast.plugin("blank", phase="response")
    async def blank(response, conf):
        await response.body()
        response.set_body("")

    ctx.bodies[INFO_RESP_BODY] = None
    assert run_response(chain_of(blank), http_resp(codec), ctx).body == b""


@pytest.mark.parametrize("headers,body,ok", [
    ({"content-length": "2"}, "no", True), ({"Content-Length": "3"}, "no", False),
    ({"content-length": "0"}, None, False), ([("content-length", "2"), ("content-length", "2")],
                                             b"no", False)])
def test_a_stop_content_length_must_agree_with_its_body(codec, headers, body, ok):
    chain = request_plugin(lambda r: r.stop(200, headers, body))
    if ok:
        answer = req_answer(chain.call_request(http_req(codec), None))
        assert answer.stop.headers == [("content-length", "2")]
    else:
        fails_naming(lambda: chain.call_request(http_req(codec), None), "producer",
                     "Content-Length")


def test_a_resp_header_content_length_fails_since_there_is_no_body_to_agree_with(codec):
    chain = request_plugin(lambda r: r.set_resp_header("Content-Length", "0"))
    fails_naming(lambda: chain.call_request(http_req(codec), None), "producer", "Content-Length")


# ---------------------------------------------------------------------------------------------
# Over a real socket: the Err frame and the log line

HTTP_PLUGINS = os.path.join(PLUGINS, "http")


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    proc = RunnerProcess(tmp_path_factory.mktemp("http"), "--plugins", HTTP_PLUGINS,
                         "--workers", "1")
    yield proc
    status = proc.stop()
    assert status == 0, proc.log()


def call(runner, conf, key, phase="request", **req):
    with runner.gateway(resp_body=b"upstream body") as gw:
        token = gw.prepare(conf, key)
        if phase == "request":
            return gw.call(token, **req)
        return gw.resp_call(token, **req)


@pytest.mark.parametrize("plugin,conf,phase,field", [
    ("produce", '{"call": ["set_header", "x-bad", "a\\r\\nx-injected: 1"]}', "request", "x-bad"),
    ("produce", '{"call": ["set_resp_header", "x-bad\\u0000", "v"]}', "request", "x-bad"),
    ("produce", '{"stop": [600, null, "over"]}', "request", "600"),
    ("produce", '{"stop": [403, {"x-bad": "a\\nb"}, "no"]}', "request", "x-bad"),
    ("resp-produce", '{"calls": [["set_status", 600]]}', "response", "600"),
    ("resp-produce", '{"calls": [["set_header", "x-bad", "a\\r\\nb"]]}', "response", "x-bad"),
])
def test_an_invalid_field_is_answered_service_unavailable_and_logged_with_plugin_and_field(
        runner, plugin, conf, phase, field):
    key = "bad#%s#%s" % (plugin, conf)
    assert err_code(call(runner, [(plugin, conf)], key, phase)) == SERVICE_UNAVAILABLE
    log = runner.log()
    failure = log[log.rindex("plugin %r failed; answering SERVICE_UNAVAILABLE" % plugin):]
    assert "raised by plugin %r" % plugin in failure and field in failure, failure


def resp_answer_of(answer):
    rpc_type, payload = answer
    assert rpc_type == RPC_HTTP_RESP_CALL, (rpc_type, payload)
    return gateway.decode_http_resp_call_resp(payload)


def test_a_changed_body_goes_back_without_upstreams_framing_headers(runner):
    conf = '{"calls": [["set_body", "abc"], ["set_header", "x-a", "1"]]}'
    answer = resp_answer_of(call(runner, [("resp-produce", conf)], "framing", "response",
                                 headers=UPSTREAM))
    assert answer.body == b"abc"
    assert sorted(answer.headers) == sorted(END_TO_END + [("x-a", "1")])


def test_deleting_every_header_reaches_the_answer(runner):
    conf = '{"calls": [["del-all"]]}'
    answer = resp_answer_of(call(runner, [("resp-produce", conf)], "del-all", "response",
                                 headers=[("x-only", "1")]))
    assert answer.headers == [("x-only", None)]


def test_a_valid_stop_still_answers_as_given(runner):
    conf = '{"stop": [401, {"www-authenticate": "Bearer realm=\\"a\\""}, "no"]}'
    rpc_type, payload = call(runner, [("produce", conf)], "good-stop")
    assert rpc_type == RPC_HTTP_REQ_CALL
    assert gateway.decode_http_req_call_resp(payload).stop == gateway.Stop(
        401, [("www-authenticate", 'Bearer realm="a"')], b"no")
