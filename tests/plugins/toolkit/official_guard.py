import json
from typing import Any

from apisix.runner.http.request import Request
from apisix.runner.http.response import Response
from apisix.runner.plugin.core import PluginBase


class OfficialGuard(PluginBase):

    def name(self) -> str:
        return "official-guard"

    def config(self, conf: Any) -> Any:
        return json.loads(conf) if conf else {}

    def filter(self, conf: Any, req: Request, reply: Response):
        """Refuse requests without the configured token; tag the others for upstream."""
        token = req.get_header("x-token")
        if token != conf.get("token"):
            reply.set_status_code(401)
            reply.set_header("WWW-Authenticate", "Token")
            reply.set_body(json.dumps({"addr": req.get_var("remote_addr"),
                                       "body": req.get_body()}))
            return
        req.set_header("X-Checked-By", "official-guard")
        req.set_uri("/checked" + req.get_uri())
