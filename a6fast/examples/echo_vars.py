"""``echo-vars``: answer with gateway variables as a JSON object; shows async ExtraInfo.

Conf: ``{"vars": ["remote_addr", "route_id"], "body": true}`` -> Stop 200 with body
``{"remote_addr": "...", "route_id": null, "body": "..."}`` (null: the gateway has no such
variable / no body; the body is decoded as latin-1 so that any bytes show).
"""
import json

import a6fast

from . import expect_object


class EchoVars(a6fast.Plugin):
    """Echo the configured variables (and the request body) back to the client."""

    name = "echo-vars"

    def parse_conf(self, conf):
        conf = expect_object(conf, ("vars", "body"))
        names = conf.get("vars", [])
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise ValueError("vars must be a list of variable names")
        body = conf.get("body", False)
        if not isinstance(body, bool):
            raise ValueError("body must be true or false")
        return tuple(names), body

    async def on_request(self, request, conf):
        names, with_body = conf
        answer = {}
        for name in names:
            answer[name] = await request.var(name)
        if with_body:
            body = await request.body()
            answer["body"] = None if body is None else body.decode("latin-1")
        request.stop(200, {"content-type": "application/json"}, json.dumps(answer))
