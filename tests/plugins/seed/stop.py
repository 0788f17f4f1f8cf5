from apisix.runner.plugin.base import Base
from apisix.runner.http.request import Request
from apisix.runner.http.response import Response


class Stop(Base):
    def __init__(self):
        super(Stop, self).__init__(self.__class__.__name__)

    def filter(self, request: Request, response: Response):
        """
        Refuse the request: the gateway answers the client with this response.
        :param request:
            request parameters and information
        :param response:
            response parameters and information
        :return:
        """
        # Plugin configuration comes in through `self.config`
        response.headers["X-Resp-A6-Runner"] = "Python"
        response.body = self.config.get("body", "Stopped by the seed plugin")
        response.status_code = self.config.get("status", 403)
