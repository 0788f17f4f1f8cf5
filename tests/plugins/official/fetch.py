import json
from typing import Any
from apisix.runner.http.request import Request
from apisix.runner.http.response import Response
from apisix.runner.plugin.core import PluginBase


class Fetch(PluginBase):

    def name(self) -> str:
        """
        The name of the plugin registered in the runner
        :return:
        """
        return "fetch"

    def config(self, conf: Any) -> Any:
        """
        Parse plugin configuration
        :param conf:
        :return:
        """
        return conf

    def filter(self, conf: Any, req: Request, reply: Response):
        """
        Answer with nginx variables and the request body
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
            "conf": conf,
            "remote_addr": req.get_var("remote_addr"),
            "missing": req.get_var("no_such_var"),
            "body": req.get_body(),
            "id": req.get_id(),
            "conf_token": req.get_conf_token(),
            "addr": req.get_remote_addr(),
            "uri": req.get_uri(),
            "host": req.get_header("host"),
            "args": req.get_args(),
        }))
