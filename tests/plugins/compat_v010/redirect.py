# Written against the official runner's 0.1.0 Base API: fill response.headers/args/path, then
# self.rewrite() sends the request upstream with them.
from apisix.runner.plugin.base import Base
from apisix.runner.http.request import Request
from apisix.runner.http.response import Response


class Redirect(Base):
    def __init__(self):
        super(Redirect, self).__init__(self.__class__.__name__)

    def filter(self, request: Request, response: Response):
        headers = request.headers
        headers["X-Redirected"] = "yes"
        response.headers = headers

        args = request.args
        args["via"] = "redirect"
        response.args = args

        response.path = self.config.get("path", request.path)
        if self.config.get("body"):
            response.body = self.config["body"]  # ignored: a rewrite sends no body
        self.rewrite()
