import json
from typing import Any
from apisix.runner.http.request import Request
from apisix.runner.http.response import Response
from apisix.runner.plugin.core import PluginBase


class OfficialVars(PluginBase):

    def name(self) -> str:
        """
        The name of the plugin registered in the runner
        :return:
        """
        return "official-vars"

    def config(self, conf: Any) -> Any:
        """
        Parse plugin configuration
        :param conf:
        :return:
        """
        return conf

    def filter(self, conf: Any, req: Request, reply: Response):
        """
        Answer with nginx variables as JSON
        :param conf:
            plugin configuration after parsing
        :param req:
            request parameters and information
        :param reply:
            response parameters and information
        :return:
        """
        reply.set_header("Content-Type", "application/json")
        reply.set_body(json.dumps({
            "remote_addr": req.get_var("remote_addr"),
            "route_id": req.get_var("route_id"),
        }))
        reply.set_status_code(200)
