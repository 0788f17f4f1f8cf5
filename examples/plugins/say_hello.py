import json
from typing import Any
from apisix.runner.http.request import Request
from apisix.runner.http.response import Response
from apisix.runner.plugin.core import PluginBase


class SayHello(PluginBase):

    def name(self) -> str:
        """
        The name of the plugin registered in the runner
        :return:
        """
        return "say-hello"

    def config(self, conf: Any) -> Any:
        """
        Parse plugin configuration
        :param conf:
        :return:
        """
        return json.loads(conf) if conf else {}

    def filter(self, conf: Any, req: Request, reply: Response):
        """
        Answer the client with a greeting, unless the request asks to go on
        :param conf:
            plugin configuration after parsing
        :param req:
            request parameters and information
        :param reply:
            response parameters and information
        :return:
        """
        if req.get_header("x-pass") == "1":
            req.set_header("X-Greeted", "no")
            return
        reply.set_header("X-Resp-A6-Runner", "Python")
        reply.set_body("%s, %s!" % (conf.get("greeting", "Hello"), req.get_var("remote_addr")))
        reply.set_status_code(200)
