# Written against the official runner's 0.2.0 API: a request-inspecting agent that reads the
# plugin configs and variables on every request and reports or forwards what it saw.
import json
from typing import Any

from apisix.runner.http.request import Request
from apisix.runner.http.response import Response
from apisix.runner.plugin.core import PluginBase


class Agent(PluginBase):

    def name(self) -> str:
        return "agent"

    def config(self, conf: Any) -> Any:
        return json.loads(conf) if conf else {}

    def filter(self, conf: Any, req: Request, reply: Response):
        configs = req.get_configs()
        seen = {
            "conf": conf, "configs": configs, "config": req.get_config("agent"),
            "id": req.get_id(), "method": req.get_method(), "uri": req.get_uri(),
            "remote_addr": req.get_remote_addr(), "conf_token_set": req.get_conf_token() > 0,
            "headers": req.get_headers(), "args": req.get_args(),
            "host": req.get_header("host"), "missing": req.get_header("nope"),
            "a": req.get_arg("a"), "checked": req.checked(),
            "var": req.get_var(conf.get("var", "remote_addr")),
            "body": req.get_body(),
        }
        if conf.get("setters"):
            seen["set"] = [
                req.set_config("k", "v"), req.set_configs({}), req.get_configs(),
                req.set_var("route_id", "from-plugin"), req.get_var("route_id"),
                req.set_body("replaced"), req.get_body(),
                req.set_id(0), req.set_id(99), req.get_id(),
                req.set_method("TRACE"), req.set_method("post"), req.get_method(),
                req.set_remote_addr(""), req.set_remote_addr("192.0.2.1"), req.get_remote_addr(),
                req.set_conf_token(0), req.set_conf_token(5), req.get_conf_token(),
                req.set_uri("relative"), req.set_uri(""), req.get_uri(),
                req.set_header("x-empty", ""), req.set_header("x-none", None),
                req.set_arg("e", ""), req.set_arg("n", None),
                req.set_headers({}), req.set_args({}),
                reply.set_body(""), reply.set_header("", "v"), reply.set_status_code(600),
                reply.get_status_code(), reply.changed(), reply.get_req_id() > 0,
            ]
        if conf.get("report"):
            if conf.get("setters"):
                # the answer's own setters and getters, before the answer is filled in
                reply.set_headers({"X-Draft": "1"})
                seen["reply"] = [reply.get_header("X-Draft"), dict(reply.get_headers()),
                                 reply.get_body(), reply.set_req_id(0), reply.set_req_id(77),
                                 reply.get_req_id()]
            reply.set_header("Content-Type", "application/json")
            reply.set_body(json.dumps(seen, sort_keys=True))
            reply.set_status_code(conf.get("status", 200))
            return
        req.set_header("X-Agent-Seen", str(len(configs)))
        req.set_arg("agent", "1")
        if conf.get("uri"):
            req.set_uri(conf["uri"])
