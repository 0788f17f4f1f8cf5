# Written against the official runner's Base API of December 2021 (the format of its developer
# guide then): setting response fields stops the request, changing request fields rewrites it.
from apisix.runner.plugin.base import Base
from apisix.runner.http.request import Request
from apisix.runner.http.response import Response


class Gate(Base):
    def __init__(self):
        super(Gate, self).__init__(self.__class__.__name__)

    def filter(self, request: Request, response: Response):
        needed = self.config.get("require", "x-key")
        if request.headers.get(needed) != self.config.get("key", "open"):
            response.headers["WWW-Authenticate"] = "Key"
            response.headers["X-Gate"] = "denied"
            response.body = self.config.get("body", "key required")
            response.status_code = self.config.get("status", 401)
            return
        request.headers["X-Gate"] = "passed"
        del request.headers[needed]
        request.args["gate"] = "1"
        for name in self.config.get("drop_args", []):
            request.args.pop(name, None)
        if "path" in self.config:
            request.path = self.config["path"]
