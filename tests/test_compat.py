"""Plugins written for the official Python runner, loaded from files and served unchanged."""
import json
import os
import subprocess
import sys
import threading

import pytest

from a6fast import compat, gateway
from a6fast.errors import ConfError, UnknownPlugin
from a6fast.protocol import ACTION_REWRITE, ACTION_STOP, INFO_REQ_BODY, INFO_VAR
from a6fast.registry import Registry

from test_plugins import (http_req, run_request,  # noqa: F401  (fixtures)
                          ctx, isolated_imports, loop)

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = os.path.join(HERE, "plugins", "seed")
OFFICIAL = os.path.join(HERE, "plugins", "official")


pytestmark = pytest.mark.usefixtures("isolated_imports")


def load(*dirs):
    registry = Registry.load(plugin_dirs=list(dirs), entry_points=False)
    assert registry.errors == []
    return registry


# ---------------------------------------------------------------------------------------------
# Seed style: Base, filter(request, response), self.config

def test_seed_plugin_setting_the_response_stops_the_request(codec, ctx):
    chain = load(SEED).prepare([("stop", None)])
    answer = run_request(chain, http_req(codec), ctx)
    assert answer.action_type == ACTION_STOP
    assert answer.stop == gateway.Stop(403, [("X-Resp-A6-Runner", "Python")],
                                       b"Stopped by the seed plugin")


def test_seed_plugin_reads_its_conf_through_self_config(codec, ctx):
    chain = load(SEED).prepare([("stop", '{"status": 201, "body": "hi"}')])
    assert run_request(chain, http_req(codec), ctx).stop.status == 201
    assert run_request(chain, http_req(codec), ctx).stop.body == b"hi"


def test_seed_plugin_setting_the_request_rewrites_it(codec, ctx):
    chain = load(SEED).prepare([("rewrite", '{"drop": ["accept"]}')])
    answer = run_request(chain, http_req(codec, headers=[("host", "h"), ("accept", "*/*")],
                                         args=[("q", "1")]), ctx)
    assert answer.action_type == ACTION_REWRITE
    assert answer.rewrite == gateway.Rewrite(
        "/a6/python/runner", [("accept", None), ("X-Resp-A6-Runner", "Python")],
        [("a6_runner", "Python")], None, None)


def test_seed_request_has_the_official_read_attributes(codec, ctx):
    registry = load(SEED)
    chain = registry.prepare([("InspectRequest", '{"k": [1]}')])  # names match lower-cased
    req = http_req(codec, id=0, conf_token=9, method="DELETE", path="/x", src_ip="::1",
                   headers=[("host", "h"), ("x-m", "1"), ("x-m", "2")],
                   args=[("a", "1"), ("flag", None)])
    seen = json.loads(run_request(chain, req, ctx).stop.body)
    assert seen == {"name": "InspectRequest", "config": {"k": [1]}, "id": 0, "conf_token": 9,
                    "method": "DELETE", "path": "/x",
                    "src_ip": "0000:0000:0000:0000:0000:0000:0000:0001",
                    "headers": {"host": "h", "x-m": "2"}, "args": {"a": "1", "flag": None}}


@pytest.mark.parametrize("conf", [None, "", "[1, 2]", '"text"', "{}"])
def test_seed_config_is_an_empty_dict_unless_the_conf_is_a_json_object(codec, ctx, conf):
    chain = load(SEED).prepare([("inspectrequest", conf)])
    assert json.loads(run_request(chain, http_req(codec), ctx).stop.body)["config"] == {}


def test_seed_conf_that_is_not_json_is_rejected():
    with pytest.raises(ConfError):
        load(SEED).prepare([("stop", "{oops")])


# ---------------------------------------------------------------------------------------------
# Official 0.2 style: PluginBase, name/config/filter(conf, req, reply)

def test_official_plugin_changing_the_reply_stops_the_request(codec, ctx):
    chain = load(OFFICIAL).prepare([("stop", "")])
    assert run_request(chain, http_req(codec), ctx).stop == gateway.Stop(
        403, [("X-Resp-A6-Runner", "Python")], b"Stopped by the official-style plugin")


def test_official_plugin_changing_the_request_rewrites_it(codec, ctx):
    chain = load(OFFICIAL).prepare([("rewrite", '{"uri": "/moved"}')])
    answer = run_request(chain, http_req(codec, method="POST"), ctx)
    assert answer.rewrite == gateway.Rewrite(
        "/moved", [("X-Resp-A6-Runner", "Python"), ("X-Was-Post", "yes")],
        [("a6_runner", "Python")], None, None)


def test_official_plugin_gets_vars_and_body_as_text_from_a_worker_thread(codec, ctx):
    chain = load(OFFICIAL).prepare([("fetch", '{"raw": true}')])
    req = http_req(codec, id=3, conf_token=4, path="/f", src_ip="10.0.0.7",
                   headers=[("host", "h")], args=[("a", "1")])
    seen = json.loads(run_request(chain, req, ctx).stop.body)
    assert seen == {"conf": '{"raw": true}', "remote_addr": "10.0.0.7", "missing": "",
                    "body": "\udcffbody", "id": 3, "conf_token": 4, "addr": "10.0.0.7",
                    "uri": "/f", "host": "h", "args": {"a": "1"}}
    assert ctx.asked == [(INFO_VAR, "remote_addr"), (INFO_VAR, "no_such_var"),
                         (INFO_REQ_BODY, None)]


def test_official_plugin_gets_a_new_instance_and_config_for_each_call(codec, ctx, tmp_path):
    (tmp_path / "counted.py").write_text(
        "from apisix.runner.plugin.core import PluginBase\n"
        "CALLS = []\nINSTANCES = set()\n\n"
        "class Counted(PluginBase):\n"
        "    def name(self):\n        return 'counted'\n\n"
        "    def config(self, conf):\n        CALLS.append(conf)\n        return conf.upper()\n\n"
        "    def filter(self, conf, req, reply):\n        INSTANCES.add(id(self))\n"
        "        req.set_header('x-conf', conf)\n")
    chain = load(str(tmp_path)).prepare([("counted", "abc")])
    module = sys.modules["a6fast_plugin_counted"]
    assert module.CALLS == []  # as there: config() runs per call, not at PrepareConf
    for _ in range(2):
        assert run_request(chain, http_req(codec), ctx).rewrite.headers == [("x-conf", "ABC")]
    assert module.CALLS == ["abc", "abc"]


def test_official_plugin_opting_in_to_sharing_gets_one_instance_and_config_per_conf(
        codec, ctx, tmp_path):
    (tmp_path / "counted.py").write_text(
        "from apisix.runner.plugin.core import PluginBase\n"
        "CALLS = []\n\n"
        "class Counted(PluginBase):\n"
        "    a6fast_shared = True\n\n"
        "    def name(self):\n        return 'counted'\n\n"
        "    def config(self, conf):\n        CALLS.append(conf)\n        return conf.upper()\n\n"
        "    def filter(self, conf, req, reply):\n        req.set_header('x-conf', conf)\n")
    chain = load(str(tmp_path)).prepare([("counted", "abc")])
    for _ in range(2):
        assert run_request(chain, http_req(codec), ctx).rewrite.headers == [("x-conf", "ABC")]
    assert sys.modules["a6fast_plugin_counted"].CALLS == ["abc"]


def test_a_failing_official_plugin_fails_the_call(codec, ctx, tmp_path):
    (tmp_path / "broken.py").write_text(
        "from apisix.runner.plugin.core import PluginBase\n\n"
        "class Broken(PluginBase):\n"
        "    def name(self):\n        return 'broken'\n\n"
        "    def filter(self, conf, req, reply):\n        reply.set_body('half done')\n"
        "        raise KeyError('oops')\n")
    chain = load(str(tmp_path)).prepare([("broken", "")])
    with pytest.raises(KeyError):
        ctx.loop.settle(chain.call_request(http_req(codec), ctx))


def test_official_plugins_run_in_worker_threads(codec, ctx, tmp_path):
    (tmp_path / "where.py").write_text(
        "import threading\n"
        "from apisix.runner.plugin.core import PluginBase\n\n"
        "class Where(PluginBase):\n"
        "    def name(self):\n        return 'where'\n\n"
        "    def filter(self, conf, req, reply):\n"
        "        reply.set_body(str(threading.get_ident()))\n")
    chain = load(str(tmp_path)).prepare([("where", "")])
    body = run_request(chain, http_req(codec), ctx).stop.body
    assert int(body) != threading.get_ident()


# ---------------------------------------------------------------------------------------------
# Registry behaviour with plugin files

def test_an_unknown_plugin_is_unknown_plugin():
    with pytest.raises(UnknownPlugin):
        load(SEED).prepare([("rewrite", None), ("say", None)])


def test_a_user_plugin_takes_precedence_over_a_builtin_of_the_same_name(codec, ctx):
    builtin = Registry.load(entry_points=False)
    assert run_request(builtin.prepare([("stop", None)]), http_req(codec), ctx).stop.status == 200
    registry = load(SEED)
    assert registry.source("stop") == os.path.join(SEED, "stop.py")
    assert run_request(registry.prepare([("stop", None)]), http_req(codec), ctx).stop.status == 403
    assert "echo-vars" in registry.names()  # the other built-ins are still there


def test_a_name_defined_in_two_plugin_directories_is_an_error_naming_both_files():
    registry = Registry.load(plugin_dirs=[OFFICIAL, SEED], entry_points=False)
    clashes = {(os.path.basename(path), message.split(":")[0])
               for path, _, message in registry.errors}
    assert clashes == {("stop.py", "plugin 'stop' is defined twice"),
                       ("rewrite.py", "plugin 'rewrite' is defined twice")}, registry.errors
    assert all(os.path.join(OFFICIAL, os.path.basename(path)) in message
               for path, _, message in registry.errors)
    assert "inspectrequest" in registry  # the other plugins of both directories still load


def test_our_own_plugin_files_load_beside_official_ones(codec, ctx, tmp_path):
    (tmp_path / "mine.py").write_text(
        "import a6fast\n\n"
        "@a6fast.plugin('mine', inline=True)\n"
        "def mine(request, conf):\n    request.set_header('x-mine', '1')\n\n"
        "class Tag(a6fast.Plugin):\n    name = 'tag'\n    inline = True\n\n"
        "    def on_request(self, request, conf):\n        request.add_header('x-mine', '2')\n")
    chain = load(str(tmp_path), OFFICIAL).prepare([("mine", None), ("tag", None), ("rewrite", "")])
    assert run_request(chain, http_req(codec), ctx).rewrite.headers == [
        ("x-mine", "1"), ("x-mine", "2"), ("X-Resp-A6-Runner", "Python")]


# ---------------------------------------------------------------------------------------------
# The import shims

def test_importing_a6fast_does_not_install_the_shims():
    code = ("import sys, a6fast, a6fast.registry, a6fast.compat\n"
            "assert not any(type(f).__name__ == 'ShimFinder' for f in sys.meta_path)\n"
            "assert 'apisix' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(HERE))


def test_without_a_real_apisix_a_synthetic_package_holds_the_shims():
    compat.install()
    import apisix
    import apisix.runner.plugin.base
    import apisix.runner.http.request
    assert apisix.__spec__.loader is compat._finder
    assert apisix.runner.plugin.base.Base is compat.Base
    assert apisix.runner.http.request.Request is compat.Request


def test_a_real_apisix_package_is_not_clobbered_by_the_shims(tmp_path):
    real = tmp_path / "apisix"
    (real / "plugins").mkdir(parents=True)
    (real / "__init__.py").write_text("REAL = 'yes'\n")
    (real / "plugins" / "__init__.py").write_text("")
    (real / "plugins" / "thing.py").write_text("VALUE = 42\n")
    sys.path.insert(0, str(tmp_path))
    compat.install()

    from apisix.runner.plugin.core import PluginBase
    from apisix.runner.http.response import Response
    import apisix
    import apisix.plugins.thing

    assert apisix.REAL == "yes" and apisix.__file__ == str(real / "__init__.py")
    assert apisix.plugins.thing.VALUE == 42
    assert PluginBase is compat.PluginBase and Response is compat.Response

    compat.uninstall()
    assert "apisix.runner" not in sys.modules and not hasattr(apisix, "runner")
    assert sys.modules["apisix"] is apisix and apisix.REAL == "yes"


def test_a_plugin_file_importing_an_unserved_runner_module_fails_to_load(tmp_path):
    (tmp_path / "old.py").write_text("from apisix.runner.server.handle import Handle\n")
    registry = Registry.load(plugin_dirs=[str(tmp_path)], entry_points=False, builtins=False)
    assert registry.names() == []
    [(file, line, message)] = registry.errors
    assert file.endswith("old.py") and line == 1 and "ModuleNotFoundError" in message


# ---------------------------------------------------------------------------------------------
# Releases: what decides Stop or Rewrite, names, import paths

def test_a_base_plugin_answers_to_its_file_name_too(codec, ctx):
    # before 0.1.0 the conf named the file (inspect_request), later the class (InspectRequest)
    registry = load(SEED)
    assert registry.get("inspect_request") is registry.get("InspectRequest")
    assert run_request(registry.prepare([("Inspect_Request", None)]), http_req(codec),
                       ctx).action_type == ACTION_STOP


V010_ON_ALL_PATHS = (
    "from apisix.runner.plugin.base import Base\n\n"
    "class Allow(Base):\n"
    "    def __init__(self):\n"
    "        super(Allow, self).__init__(self.__class__.__name__)\n\n"
    "    def filter(self, request, response):\n"
    "        if request.headers.get('x-deny'):\n"
    "            response.status_code = 403\n"
    "            self.stop()\n"
    "            return\n"
    "        response.headers['X-User'] = 'u1'\n")


def test_a_010_plugin_rewrites_with_the_response_where_it_does_not_call_stop(codec, ctx,
                                                                             tmp_path):
    # 0.1.0 rewrote by default, with response.headers: that holds on the paths of a 0.1.0 file
    # that call neither stop() nor rewrite() (the December 2021 format would stop there)
    (tmp_path / "allow.py").write_text(V010_ON_ALL_PATHS)
    chain = load(str(tmp_path)).prepare([("allow", None)])
    assert run_request(chain, http_req(codec), ctx).rewrite == gateway.Rewrite(
        None, [("X-User", "u1")], None, None, None)
    assert run_request(chain, http_req(codec, headers=[("x-deny", "1")]), ctx).stop == \
        gateway.Stop(403, None, None)


def test_which_base_plugins_are_010_ones():
    compat.install()
    from apisix.runner.plugin.base import Base

    class Old(Base):
        def filter(self, request, response):
            self.rewrite()

    class Mid(Old):
        def filter(self, request, response):
            super().filter(request, response)

    class New(Base):
        def filter(self, request, response):
            response.body = "stop"  # a stop without stop(): the later format

    class OwnStop(Base):
        def stop(self):
            self.stopped = True  # a method of its own, not 0.1.0's

        def filter(self, request, response):
            self.stop()
            response.body = "stop"

    class OwnStopOnTop(Base):
        def stop(self):
            super().stop()

    assert compat.written_for_010(Old) and compat.written_for_010(Mid)
    assert compat.written_for_010(OwnStopOnTop)
    assert not compat.written_for_010(New) and not compat.written_for_010(OwnStop)


def test_a_base_plugin_without_filter_fails_the_call(codec, ctx, tmp_path):
    (tmp_path / "lazy.py").write_text(
        "from apisix.runner.plugin.base import Base\n\n"
        "class Lazy(Base):\n"
        "    def __init__(self):\n        super().__init__('Lazy')\n")
    chain = load(str(tmp_path)).prepare([("lazy", None)])
    with pytest.raises(AttributeError):
        ctx.loop.settle(chain.call_request(http_req(codec), ctx))


def test_request_err_code_has_its_earlier_name_too(codec, ctx, tmp_path):
    (tmp_path / "codes.py").write_text(
        "from apisix.runner.plugin.base import Base\n\n"
        "class Codes(Base):\n"
        "    def __init__(self):\n        super().__init__('Codes')\n\n"
        "    def filter(self, request, response):\n"
        "        request.code = 7\n"
        "        response.body = '%d %d' % (request.err_code, request.code)\n")
    chain = load(str(tmp_path)).prepare([("codes", None)])
    assert run_request(chain, http_req(codec), ctx).stop.body == b"7 7"


def test_official_logger_writes_to_the_a6fast_log(codec, ctx, tmp_path, caplog):
    (tmp_path / "talk.py").write_text(
        "from apisix.runner.plugin.core import PluginBase\n"
        "from apisix.runner.server.logger import Logger\n\n"
        "class Talk(PluginBase):\n"
        "    def name(self):\n        return 'talk'\n\n"
        "    def filter(self, conf, req, reply):\n"
        "        Logger().warn('{} asked for {}', 'talk', req.get_uri())\n"
        "        req.r.log.error('through {}', 'req.r.log')\n")
    chain = load(str(tmp_path)).prepare([("talk", None)])
    with caplog.at_level("INFO", logger="a6fast.plugins.official"):
        assert run_request(chain, http_req(codec, path="/x"), ctx).action_type == 0
    assert [r.getMessage() for r in caplog.records] == ["talk asked for /x",
                                                         "through req.r.log"]


# Every module and name of the official runner's plugin API, by the release that had it.
OFFICIAL_API = {
    "apisix.runner.plugin.base": ["Base", "PLUGIN_ACTION_STOP", "PLUGIN_ACTION_REWRITE"],
    "apisix.runner.plugin.core": ["PluginBase", "PLUGINS"],
    "apisix.runner.http.request": ["Request"],
    "apisix.runner.http.response": ["Response", "PLUGIN_ACTION_STOP", "PLUGIN_ACTION_REWRITE",
                                    "RESP_MAX_DATA_SIZE"],
    "apisix.runner.http.method": [
        "A6MethodGET", "A6MethodHEAD", "A6MethodPOST", "A6MethodPUT", "A6MethodDELETE",
        "A6MethodMKCOL", "A6MethodCOPY", "A6MethodMOVE", "A6MethodOPTIONS", "A6MethodPROPFIND",
        "A6MethodPROPPATCH", "A6MethodLOCK", "A6MethodUNLOCK", "A6MethodPATCH", "A6MethodTRACE",
        "methodName", "methodCode", "get_name_by_code", "get_code_by_name"],
    "apisix.runner.http.protocol": ["RPC_PREPARE_CONF", "RPC_HTTP_REQ_CALL", "RPC_UNKNOWN"],
    "apisix.runner.utils.common": [
        "RPC_PROTOCOL_HEADER_LEN", "RPC_PREPARE_CONF", "RPC_HTTP_REQ_CALL", "RPC_EXTRA_INFO",
        "RPC_UNKNOWN", "VECTOR_TYPE_HEADER", "VECTOR_TYPE_QUERY", "VECTOR_TYPE_CONFIG",
        "VECTOR_TYPE_SOURCE_IP", "dictVectorParseFuncNames", "listVectorParseFuncNames",
        "methodNames", "methodCodes", "get_method_name_by_code", "get_method_code_by_name",
        "A6MethodGET", "A6MethodTRACE"],
    "apisix.runner.server.logger": ["Logger"],
    "apisix.runner.server.response": [
        "Response", "RESP_STATUS_CODE_OK", "RESP_STATUS_MESSAGE_OK",
        "RESP_STATUS_CODE_BAD_REQUEST", "RESP_STATUS_MESSAGE_BAD_REQUEST",
        "RESP_STATUS_CODE_SERVICE_UNAVAILABLE", "RESP_STATUS_CODE_CONF_TOKEN_NOT_FOUND",
        "RUNNER_SUCCESS_CODE", "RUNNER_SUCCESS_MESSAGE", "RUNNER_ERROR_CODE",
        "RUNNER_ERROR_MESSAGE", "errorCodes"],
    "apisix.runner.server.protocol": ["Protocol"],
}


@pytest.mark.parametrize("module", sorted(OFFICIAL_API))
def test_every_official_import_path_is_served(module):
    compat.install()
    imported = __import__(module, fromlist=["*"])
    for name in OFFICIAL_API[module]:
        assert hasattr(imported, name), "%s.%s" % (module, name)


def test_official_numbers_are_the_protocols():
    compat.install()
    from apisix.runner.http import method
    from apisix.runner.server import response
    from apisix.runner.utils import common
    assert [method.get_name_by_code(i) for i in range(15)] == [
        "GET", "HEAD", "POST", "PUT", "DELETE", "MKCOL", "COPY", "MOVE", "OPTIONS", "PROPFIND",
        "PROPPATCH", "LOCK", "UNLOCK", "PATCH", "TRACE"]
    assert method.get_code_by_name("TRACE") == 14 and method.get_name_by_code(15) is None
    assert (common.RPC_PREPARE_CONF, common.RPC_HTTP_REQ_CALL, common.RPC_EXTRA_INFO) == (1, 2, 3)
    assert (response.RESP_STATUS_CODE_BAD_REQUEST, response.RESP_STATUS_CODE_SERVICE_UNAVAILABLE,
            response.RESP_STATUS_CODE_CONF_TOKEN_NOT_FOUND) == (0, 1, 2)


def test_official_frame_header_helper():
    compat.install()
    from apisix.runner.server.protocol import Protocol
    encoded = Protocol(b"abc", 2)
    assert encoded.encode().code == 200
    assert encoded.buffer == b"\x02\x00\x00\x03abc" and encoded.length == 7
    decoded = Protocol(encoded.buffer[:4])
    assert decoded.decode().code == 200 and (decoded.type, decoded.length) == (2, 3)
    assert Protocol(b"").encode().code == 0 and Protocol(b"12345").decode().code == 0


def test_plugins_registry_of_the_official_core_module(tmp_path):
    (tmp_path / "named.py").write_text(
        "from apisix.runner.plugin.core import PluginBase\n\n"
        "class Named(PluginBase):\n"
        "    def name(self):\n        return 'named-plugin'\n")
    load(str(tmp_path))
    from apisix.runner.plugin.core import PLUGINS
    assert PLUGINS["named-plugin"] is sys.modules["a6fast_plugin_named"].Named
    load(str(tmp_path))  # the same file again: its new class takes the name
    assert PLUGINS["named-plugin"] is sys.modules["a6fast_plugin_named"].Named


def test_a_010_plugin_calling_stop_then_rewrite_rewrites(codec, ctx, tmp_path):
    (tmp_path / "both.py").write_text(
        "from apisix.runner.plugin.base import Base\n\n"
        "class Both(Base):\n"
        "    def __init__(self):\n        super().__init__('Both')\n\n"
        "    def filter(self, request, response):\n"
        "        response.headers['X-A'] = '1'\n"
        "        response.body = 'stop only'\n"
        "        self.stop()\n"
        "        if self.config.get('then_rewrite'):\n"
        "            self.rewrite()\n")
    registry = load(str(tmp_path))
    stopped = run_request(registry.prepare([("both", None)]), http_req(codec), ctx)
    assert stopped.stop == gateway.Stop(200, [("X-A", "1")], b"stop only")
    rewritten = run_request(registry.prepare([("both", '{"then_rewrite": true}')]),
                            http_req(codec), ctx)
    assert rewritten.rewrite == gateway.Rewrite(None, [("X-A", "1")], None, None, None)


def test_a_changed_reply_stops_and_drops_the_request_changes(codec, ctx, tmp_path):
    (tmp_path / "mixed.py").write_text(
        "from apisix.runner.plugin.core import PluginBase\n\n"
        "class Mixed(PluginBase):\n"
        "    def name(self):\n        return 'mixed'\n\n"
        "    def filter(self, conf, req, reply):\n"
        "        req.set_header('x-up', '1')\n"
        "        req.set_uri('/elsewhere')\n"
        "        reply.set_status_code(409)\n")
    answer = run_request(load(str(tmp_path)).prepare([("mixed", "")]), http_req(codec), ctx)
    assert answer.action_type == ACTION_STOP and answer.stop == gateway.Stop(409, None, None)


def test_a_base_plugin_keeps_its_instance_for_the_calls_of_one_conf(codec, ctx, tmp_path):
    # as there: one instance per prepared conf (its state is shared by that conf's calls)
    (tmp_path / "count.py").write_text(
        "from apisix.runner.plugin.base import Base\n\n"
        "class Count(Base):\n"
        "    def __init__(self):\n        super().__init__('Count')\n        self.calls = 0\n\n"
        "    def filter(self, request, response):\n"
        "        self.calls += 1\n"
        "        response.body = str(self.calls)\n")
    registry = load(str(tmp_path))
    first, second = registry.prepare([("count", None)]), registry.prepare([("count", None)])
    assert [run_request(first, http_req(codec), ctx).stop.body for _ in range(3)] == \
        [b"1", b"2", b"3"]
    assert run_request(second, http_req(codec), ctx).stop.body == b"1"
