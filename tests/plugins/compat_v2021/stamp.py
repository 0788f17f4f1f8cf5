# December 2021 Base API: a plugin that adds to both the request and the response, so that what
# it adds shows on whichever answer the plugins of the call give together.
from apisix.runner.plugin.base import Base
from apisix.runner.http.request import Request
from apisix.runner.http.response import Response


class Stamp(Base):
    def __init__(self):
        super(Stamp, self).__init__(self.__class__.__name__)

    def filter(self, request: Request, response: Response):
        request.headers["X-Stamp"] = self.config.get("stamp", "s")
        if response.changed():
            response.headers["X-Stamp"] = self.config.get("stamp", "s")
