import json

from apisix.runner.plugin.base import Base
from apisix.runner.http.request import Request
from apisix.runner.http.response import Response


class InspectRequest(Base):
    def __init__(self):
        super(InspectRequest, self).__init__(self.__class__.__name__)

    def filter(self, request: Request, response: Response):
        """
        Echo what the runner told us about the request.
        :param request:
            request parameters and information
        :param response:
            response parameters and information
        :return:
        """
        response.body = json.dumps({
            "name": self.name,
            "config": self.config,
            "id": request.id,
            "conf_token": request.conf_token,
            "method": request.method,
            "path": request.path,
            "src_ip": request.src_ip,
            "headers": request.headers,
            "args": request.args,
        })
