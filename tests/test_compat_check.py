"""`a6fast check` on official-runner plugin files: every apisix.runner name a6fast does not
provide is a warning with file and line, before any request finds it."""
import os

from click.testing import CliRunner

from a6fast.check import check
from a6fast.cli import main
from a6fast.compat.scan import unprovided_uses

import pytest

from test_plugins import isolated_imports  # noqa: F401  (fixture)

HERE = os.path.dirname(os.path.abspath(__file__))
CHECK = os.path.join(HERE, "plugins", "compat_check")

pytestmark = pytest.mark.usefixtures("isolated_imports")


def test_check_warns_about_each_unprovided_official_name_with_file_and_line():
    report = check([CHECK])
    assert report.ok  # the file loads: it is the first request that would fail
    path = os.path.join(CHECK, "uses_internals.py")
    lines = sorted(w for w in report.warnings if "uses_internals.py" in w)
    where = os.path.relpath(path)
    assert lines == sorted([
        where + ":22: `apisix.runner.plugin.core.PluginProcess` is not provided by a6fast "
                "(part of the official runner itself, not of its plugin API)",
        where + ":23: `apisix.runner.utils.common.new_builder` is not provided by a6fast "
                "(part of the official runner itself, not of its plugin API)",
        where + ":24: `.rpc_buf` (the raw FlatBuffers bytes of the call) is not provided by "
                "a6fast",
    ])
    assert not [w for w in report.warnings if "fine.py" in w]


def test_check_command_prints_the_warnings():
    result = CliRunner().invoke(main, ["check", CHECK])
    assert result.exit_code == 0, result.output
    assert "warnings:" in result.output
    assert "uses_internals.py:22: `apisix.runner.plugin.core.PluginProcess`" in result.output


@pytest.mark.parametrize("source, expected", [
    ("from apisix.runner.server.handle import Handle\n",
     [(1, "`apisix.runner.server.handle` is not provided by a6fast (part of the official "
          "runner itself, not of its plugin API)")]),
    ("import apisix.runner.plugin.cache as cache\n",
     [(1, "`apisix.runner.plugin.cache` is not provided by a6fast (part of the official "
          "runner itself, not of its plugin API)")]),
    ("from apisix.runner.http.request import Requests\n",
     [(1, "`apisix.runner.http.request.Requests` is not provided by a6fast (not part of the "
          "official runner's plugin API as a6fast knows it)")]),
    ("import apisix\n\nx = apisix.runner.server.config.Config()\n",
     [(3, "`apisix.runner.server.config` is not provided by a6fast (part of the official "
          "runner itself, not of its plugin API)")]),
    ("from apisix.runner import plugin\n\nplugin.core.PluginProcess\n",
     [(3, "`apisix.runner.plugin.core.PluginProcess` is not provided by a6fast (part of the "
          "official runner itself, not of its plugin API)")]),
    ("from apisix.runner.http.request import Request\n\ndef f(req):\n    return req.r.conn\n",
     [(4, "`.r.conn` (the official runner's socket to APISIX) is not provided by a6fast")]),
    # everything a plugin of any release may import is provided
    ("from apisix.runner.plugin.base import Base, PLUGIN_ACTION_STOP\n"
     "from apisix.runner.http.method import get_name_by_code, A6MethodGET\n"
     "from apisix.runner.http.protocol import RPC_HTTP_REQ_CALL\n"
     "from apisix.runner.http.response import RESP_MAX_DATA_SIZE, PLUGIN_ACTION_REWRITE\n"
     "from apisix.runner.server.response import RESP_STATUS_CODE_OK, Response\n"
     "from apisix.runner.server.protocol import Protocol\n"
     "import apisix.runner.utils.common as common\n"
     "common.methodNames, common.VECTOR_TYPE_QUERY\n", []),
    # a file without apisix imports is none of check's business
    ("def f(x):\n    return x.rpc_buf\n", []),
])
def test_unprovided_uses(source, expected):
    assert unprovided_uses(source) == expected
