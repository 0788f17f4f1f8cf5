from typing import Any
from apisix.runner.http.request import Request
from apisix.runner.http.response import Response
from apisix.runner.plugin.core import PluginBase


class Stop(PluginBase):

    def name(self) -> str:
        """
        The name of the plugin registered in the runner
        :return:
        """
        return "stop"

    def config(self, conf: Any) -> Any:
        """
        Parse plugin configuration
        :param conf:
        :return:
        """
        return conf

    def filter(self, conf: Any, req: Request, reply: Response):
        """
        Answer the client from the runner
        :param conf:
            plugin configuration after parsing
        :param req:
            request parameters and information
        :param reply:
            response parameters and information
        :return:
        """
        reply.set_header("X-Resp-A6-Runner", "Python")
        reply.set_body("Stopped by the official-style plugin")
        reply.set_status_code(403)
