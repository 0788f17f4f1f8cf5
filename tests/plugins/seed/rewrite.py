from apisix.runner.plugin.base import Base
from apisix.runner.http.request import Request
from apisix.runner.http.response import Response


class Rewrite(Base):
    def __init__(self):
        super(Rewrite, self).__init__(self.__class__.__name__)

    def filter(self, request: Request, response: Response):
        """
        Change the request on its way upstream.
        :param request:
            request parameters and information
        :param response:
            response parameters and information
        :return:
        """
        request.headers["X-Resp-A6-Runner"] = "Python"
        request.args["a6_runner"] = "Python"
        request.path = "/a6/python/runner"
        for name in self.config.get("drop", []):
            del request.headers[name]
