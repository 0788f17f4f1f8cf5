# Written against the official runner's 0.1.0 API: read everything a plugin can read, answer it
# as JSON with self.stop().
import json

from apisix.runner.plugin.base import Base
from apisix.runner.http.method import (A6MethodPATCH, get_code_by_name, get_name_by_code,
                                       methodCode, methodName)
from apisix.runner.http.protocol import RPC_HTTP_REQ_CALL, RPC_PREPARE_CONF, RPC_UNKNOWN
from apisix.runner.http.request import Request
from apisix.runner.http.response import (PLUGIN_ACTION_REWRITE, PLUGIN_ACTION_STOP,
                                         RESP_MAX_DATA_SIZE, Response)


class Probe(Base):
    def __init__(self):
        super(Probe, self).__init__(self.__class__.__name__)

    def filter(self, request: Request, response: Response):
        action_before = self.action
        if self.config.get("set_action"):
            self.action = PLUGIN_ACTION_STOP  # the same as self.stop()
        else:
            self.stop()
        response.body = json.dumps({
            "name": self.name, "config": self.config,
            "action_before": action_before, "action_after": self.action,
            "id": request.id, "conf_token": request.conf_token, "method": request.method,
            "path": request.path, "src_ip": request.src_ip, "headers": request.headers,
            "args": request.args, "configs": request.configs, "rpc_type": request.rpc_type,
            "resp_id": response.id, "resp_path": response.path, "resp_args": response.args,
            "resp_token": response.token, "resp_error_code": response.error_code,
            "resp_action_type": response.action_type, "resp_rpc_type": response.rpc_type,
            "resp_changed": response.changed(),
            "patch": [A6MethodPATCH, get_code_by_name("PATCH"), get_name_by_code(13),
                      methodName[2], methodCode["TRACE"]],
            "rpc": [RPC_UNKNOWN, RPC_PREPARE_CONF, RPC_HTTP_REQ_CALL],
            "actions": [PLUGIN_ACTION_STOP, PLUGIN_ACTION_REWRITE],
            "max": RESP_MAX_DATA_SIZE,
        }, sort_keys=True)
        response.headers["content-type"] = "application/json"
