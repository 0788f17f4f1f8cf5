"""``stop``: answer the client with the configured status, headers and body.

Conf (all optional): ``{"status": 403, "headers": {"x-a": "1"}, "body": "text"}``; status 200
by default.  Everything is computed once at prepare time: a call costs one ``stop()``.
"""
import a6fast

from . import expect_entries, expect_object, expect_status, expect_text


class Stop(a6fast.Plugin):
    """Stop every request with a fixed answer."""

    name = "stop"
    inline = True

    def parse_conf(self, conf):
        conf = expect_object(conf, ("status", "headers", "body"))
        status = expect_status(conf.get("status", 200))
        pairs = tuple((name, value)
                      for name, values in expect_entries(conf.get("headers"), "headers", False)
                      for value in values)
        body = expect_text(conf.get("body"), "body")
        return status, pairs or None, None if body is None else body.encode("utf-8")

    def on_request(self, request, conf):
        request.stop(conf[0], conf[1], conf[2])
