# December 2021 Base API (and its January 2022 names): answer with what the runner says about the
# request, including the helpers of apisix.runner.utils.common.
import json

from apisix.runner.plugin.base import Base
from apisix.runner.http.request import Request
from apisix.runner.http.response import Response
from apisix.runner.utils.common import (RPC_HTTP_REQ_CALL, VECTOR_TYPE_HEADER,
                                        get_method_code_by_name, get_method_name_by_code,
                                        methodNames)


class Mirror(Base):
    def __init__(self):
        super(Mirror, self).__init__(self.__class__.__name__)

    def filter(self, request: Request, response: Response):
        seen = {
            "name": self.name, "config": self.config, "id": request.id,
            "method": request.method, "path": request.path, "src_ip": request.src_ip,
            "headers": request.headers, "args": request.args, "configs": request.configs,
            "checked": request.checked(), "err_code": request.err_code,
            "rpc_type": request.rpc_type == RPC_HTTP_REQ_CALL,
            "changed_before": response.changed(), "resp_id": response.id,
            "methods": [get_method_name_by_code(8), get_method_code_by_name("HEAD"),
                        methodNames[14], VECTOR_TYPE_HEADER],
        }
        if self.config.get("reset"):
            response.headers["X-Draft"] = "1"
            response.reset()  # a fresh answer: the draft header is gone
            request.reset()
            seen["after_reset"] = [request.path, request.headers, request.args]
        response.body = json.dumps(seen, sort_keys=True)
