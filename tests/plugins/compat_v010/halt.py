# Written against the official runner's 0.1.0 Base API: fill the response, then self.stop().
from apisix.runner.plugin.base import Base
from apisix.runner.http.request import Request
from apisix.runner.http.response import Response


class Halt(Base):
    def __init__(self):
        super(Halt, self).__init__(self.__class__.__name__)

    def filter(self, request: Request, response: Response):
        # {"only_without": name}: let requests carrying that header through untouched
        guard = self.config.get("only_without")
        if guard and guard in request.headers:
            return
        if self.config.get("echo_request_headers"):
            # as the 0.1.0 example did: the request's headers become the answer's
            headers = request.headers
            headers["X-Halted-By"] = self.name
            response.headers = headers
        else:
            response.headers["X-Halted-By"] = self.name
        response.body = self.config.get("body", "halted")
        response.status_code = self.config.get("status", 403)
        self.stop()
