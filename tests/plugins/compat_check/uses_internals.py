# A 0.2-style plugin that reaches into parts of the official runner a6fast does not provide: it
# loads, and only a request would find out, unless `a6fast check` says so first.
from typing import Any

import apisix.runner.plugin.core as core
from apisix.runner.http.request import Request
from apisix.runner.http.response import Response
from apisix.runner.plugin.core import PluginBase
from apisix.runner.utils import common


class UsesInternals(PluginBase):

    def name(self) -> str:
        return "uses-internals"

    def config(self, conf: Any) -> Any:
        return conf

    def filter(self, conf: Any, req: Request, reply: Response):
        if conf == "reload":
            core.PluginProcess.register()
        builder = common.new_builder()
        reply.set_body(str(len(req.rpc_buf) + builder.Offset()))
