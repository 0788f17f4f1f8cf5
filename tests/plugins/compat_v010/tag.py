# Written against the official runner's 0.1.0 Base API: a rewrite plugin relying on the default
# action (it never calls self.rewrite()), and reading the action of the plugin before it.
from apisix.runner.plugin.base import Base
from apisix.runner.http.request import Request
from apisix.runner.http.response import Response


class Tag(Base):
    def __init__(self):
        super(Tag, self).__init__(self.__class__.__name__)

    def filter(self, request: Request, response: Response):
        response.args["tagged"] = str(response.action_type)
        response.headers["X-Tag"] = self.config.get("tag", "t")
