"""``resp-header``: response phase; set response headers (keeping the others) and the status.

Conf: ``{"set": {"x-a": "1", "x-gone": null}, "status": 0}``; null deletes, status 0 keeps the
upstream's.
"""
import a6fast

from . import expect_entries, expect_object, expect_status


class RespHeader(a6fast.Plugin):
    """Set the configured response headers and status."""

    name = "resp-header"
    inline = True

    def parse_conf(self, conf):
        conf = expect_object(conf, ("set", "status"))
        return (expect_entries(conf.get("set"), "set", True),
                expect_status(conf.get("status", 0), allow_zero=True))

    def on_response(self, response, conf):
        headers, status = conf
        for name, values in headers:
            if values is None:
                response.del_header(name)
                continue
            response.set_header(name, values[0])
            for value in values[1:]:
                response.add_header(name, value)
        if status:
            response.set_status(status)
