import json
from typing import Any
from apisix.runner.http.request import Request
from apisix.runner.http.response import Response
from apisix.runner.plugin.core import PluginBase


class Rewrite(PluginBase):

    def name(self) -> str:
        """
        The name of the plugin registered in the runner
        :return:
        """
        return "rewrite"

    def config(self, conf: Any) -> Any:
        """
        Parse plugin configuration
        :param conf:
        :return:
        """
        return json.loads(conf) if conf else {}

    def filter(self, conf: Any, req: Request, reply: Response):
        """
        Change the request on its way upstream
        :param conf:
            plugin configuration after parsing
        :param req:
            request parameters and information
        :param reply:
            response parameters and information
        :return:
        """
        req.set_header("X-Resp-A6-Runner", "Python")
        req.set_arg("a6_runner", "Python")
        req.set_uri(conf.get("uri", "/a6/python/runner"))
        if req.get_method() == "POST":
            req.set_header("X-Was-Post", "yes")
