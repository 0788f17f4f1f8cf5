"""What plugins produce is valid HTTP once the gateway sends it: header fields and statuses are
checked where a plugin sets them (a bad one fails the call closed)."""
import os

import pytest

import a6fast
from a6fast import gateway
from a6fast.registry import Registry
from a6fast.protocol import SERVICE_UNAVAILABLE

from harness import PLUGINS, RunnerProcess, err_code
from test_plugins import (chain_of, http_req, http_resp, req_answer,  # noqa: F401  (fixtures)
                          run_request, ctx, isolated_imports, loop)


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
    failure = log[log.rindex("plugin failed; answering SERVICE_UNAVAILABLE"):]
    assert "raised by plugin %r" % plugin in failure and field in failure, failure
