# Written against the official runner's 0.2.0 API: keeps the request it is working on in self
# (safe there: each call had its own instance).  Its conf is a number of calls: each waits until
# that many are inside filter() at once before answering, so that they overlap for sure.
import threading
from typing import Any

from apisix.runner.http.request import Request
from apisix.runner.http.response import Response
from apisix.runner.plugin.core import PluginBase

_LOCK = threading.Lock()
_BARRIERS = {}


def _barrier(parties):
    with _LOCK:
        return _BARRIERS.setdefault(parties, threading.Barrier(parties))


class Tally(PluginBase):

    def name(self) -> str:
        return "tally"

    def config(self, conf: Any) -> Any:
        return max(1, int(conf or 1))

    def filter(self, conf: Any, req: Request, reply: Response):
        self.marker = req.get_header("x-marker")
        _barrier(conf).wait(20)
        reply.set_header("X-Marker", self.marker)
        reply.set_body(self.marker)
