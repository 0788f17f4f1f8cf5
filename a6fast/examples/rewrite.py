"""``rewrite``: change the request before it is proxied.

Conf (all optional): ``{"path": "/new", "headers": {"x-a": "1", "x-gone": null},
"args": {"a": "1", "b": null}, "resp_headers": {"x-r": "2"}, "body": "..."}``; null deletes,
a list of strings sets several values.
"""
import a6fast

from . import expect_entries, expect_object, expect_text


class Rewrite(a6fast.Plugin):
    """Rewrite path, headers, args, response headers and body as configured."""

    name = "rewrite"
    inline = True

    def parse_conf(self, conf):
        conf = expect_object(conf, ("path", "headers", "args", "resp_headers", "body"))
        path = expect_text(conf.get("path"), "path")
        if path is not None and not path.startswith("/"):
            raise ValueError("path must start with '/'")
        body = expect_text(conf.get("body"), "body")
        return (path,
                expect_entries(conf.get("headers"), "headers", True),
                expect_entries(conf.get("args"), "args", True),
                expect_entries(conf.get("resp_headers"), "resp_headers", True),
                None if body is None else body.encode("utf-8"))

    def on_request(self, request, conf):
        path, headers, args, resp_headers, body = conf
        if path is not None:
            request.set_path(path)
        for name, values in headers:
            _apply(request.set_header, request.add_header, name, values)
        for name, values in args:
            _apply(request.set_arg, request.add_arg, name, values)
        for name, values in resp_headers:
            _apply(request.set_resp_header, request.add_resp_header, name, values)
        if body is not None:
            request.set_body(body)


def _apply(set_one, add_one, name, values):
    if values is None:
        set_one(name, None)
        return
    set_one(name, values[0])
    for value in values[1:]:
        add_one(name, value)
