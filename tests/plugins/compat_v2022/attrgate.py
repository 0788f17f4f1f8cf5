# Written against the official runner's PluginBase of February 2022, before its request and
# response objects got getters and setters: the conf text goes through config(), the request and
# response are changed through their attributes.
import json
from typing import Any

from apisix.runner.http.request import Request
from apisix.runner.http.response import Response
from apisix.runner.plugin.core import PluginBase


class AttrGate(PluginBase):

    def name(self) -> str:
        return "attr-gate"

    def config(self, conf: Any) -> Any:
        return json.loads(conf) if conf else {}

    def filter(self, conf: Any, request: Request, response: Response):
        if request.headers.get("x-token") != conf.get("token"):
            response.headers["X-Reason"] = "token"
            response.body = "denied for %s %s" % (request.method, request.path)
            response.status_code = 403
            return
        request.headers["X-Checked"] = "1"
        request.args["checked"] = request.src_ip
        request.path = conf.get("path", request.path)
