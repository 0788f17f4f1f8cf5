# Written against the official runner's 0.2.0 API: a base class without a name (not a plugin),
# a plugin that keeps PluginBase's config() (so filter gets None) and one that raises.
from typing import Any

from apisix.runner.http.request import Request
from apisix.runner.http.response import Response
from apisix.runner.plugin.core import PLUGINS, PluginBase
from apisix.runner.server.logger import Logger
from apisix.runner.server.response import RESP_STATUS_CODE_SERVICE_UNAVAILABLE


class Family(PluginBase):
    def filter(self, conf: Any, req: Request, reply: Response):
        Logger().info("{} ran for {}", self.name(), req.get_uri())
        req.r.log.info("seen by {}", self.name())
        reply.set_body("%s conf=%r registered=%s err=%d" % (
            self.name(), conf, PLUGINS.get(self.name()) is type(self),
            RESP_STATUS_CODE_SERVICE_UNAVAILABLE))


class Plain(Family):
    def name(self) -> str:
        return "plain"


class Failing(PluginBase):
    def name(self) -> str:
        return "failing"

    def filter(self, conf: Any, req: Request, reply: Response):
        reply.set_body("half an answer")
        raise ValueError("failing on purpose")
