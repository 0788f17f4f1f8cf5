import json
from typing import Any
from apisix.runner.http.request import Request
from apisix.runner.http.response import Response
from apisix.runner.plugin.core import PluginBase


class OfficialEcho(PluginBase):

    def name(self) -> str:
        """
        The name of the plugin registered in the runner
        :return:
        """
        return "official-echo"

    def config(self, conf: Any) -> Any:
        """
        Parse plugin configuration
        :param conf:
        :return:
        """
        return json.loads(conf) if conf else {}

    def filter(self, conf: Any, req: Request, reply: Response):
        """
        Answer with a variable (conf "var") or the request body
        :param conf:
            plugin configuration after parsing
        :param req:
            request parameters and information
        :param reply:
            response parameters and information
        :return:
        """
        if conf.get("var"):
            data = req.get_var(conf["var"])
        else:
            data = req.get_body()
        reply.set_header("X-Length", str(len(data)))
        reply.set_body(data)
