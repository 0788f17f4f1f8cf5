# A 0.2-style plugin that uses only what a6fast provides: `a6fast check` has nothing to say.
from typing import Any

from apisix.runner.http.request import Request
from apisix.runner.http.response import Response
from apisix.runner.plugin.core import PLUGINS, PluginBase
from apisix.runner.server.logger import Logger
from apisix.runner.utils.common import RPC_HTTP_REQ_CALL, get_method_name_by_code


class Fine(PluginBase):

    def name(self) -> str:
        return "fine"

    def filter(self, conf: Any, req: Request, reply: Response):
        Logger().info("{} {}", RPC_HTTP_REQ_CALL, get_method_name_by_code(0))
        reply.set_body(str(sorted(n for n in PLUGINS if n)))
