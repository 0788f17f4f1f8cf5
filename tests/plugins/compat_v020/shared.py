# A 0.2.0-style plugin that opts in to a6fast's sharing: one instance and one config() per
# prepared conf, serving concurrent calls (so it keeps no per-request state on self).
from typing import Any

from apisix.runner.http.request import Request
from apisix.runner.http.response import Response
from apisix.runner.plugin.core import PluginBase


class Shared(PluginBase):
    a6fast_shared = True

    def __init__(self):
        self.configs = 0

    def name(self) -> str:
        return "shared"

    def config(self, conf: Any) -> Any:
        self.configs += 1
        return conf.upper()

    def filter(self, conf: Any, req: Request, reply: Response):
        req.set_header("X-Conf", conf)
        req.set_header("X-Configs", str(self.configs))
