"""Plugins for the a6fast.testing tests: every way a hook can run, using variables and bodies."""
import hashlib
import json

import a6fast


def _deny_list(conf):
    words = (conf or {}).get("deny", [])
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise ValueError("deny must be a list of strings")
    return tuple(w.encode() for w in words)


@a6fast.plugin("body-guard", conf=_deny_list)
async def body_guard(request, deny):
    """Refuse a body with a denied word; otherwise tell upstream who sent it."""
    body = await request.body() or b""
    for word in deny:
        if word in body:
            request.stop(403, {"content-type": "text/plain"}, "denied: %s" % word.decode())
            return
    request.set_header("x-client", await request.var("remote_addr") or "unknown")
    request.set_header("x-body-sha1", hashlib.sha1(body).hexdigest())


@a6fast.plugin("agent-block", inline=True)
def agent_block(request, conf):
    """Inline: stop user agents containing a configured word."""
    agent = request.headers.get("user-agent", "")
    if any(word in agent for word in conf["agents"]):
        request.stop(403, body="no bots")


@a6fast.plugin("route-tag")
def route_tag(request, conf):
    """In a worker thread, with the blocking getters: tag the request with the route id."""
    route = request.get_var("route_id")
    request.set_arg("route", route or "none")
    request.del_arg("debug")
    request.set_path("/v2" + request.path)


@a6fast.plugin("offload")
async def offload(request, conf):
    """Awaits a6fast.run_blocking: the work runs in a worker thread."""
    doubled = await a6fast.run_blocking(lambda n: n * 2, conf["n"])
    request.stop(200, body=str(doubled))


@a6fast.plugin("explode", inline=True)
def explode(request, conf):
    raise RuntimeError("plugin bug")


class Redact(a6fast.Plugin):
    """Response phase: read the upstream body, hide a secret, keep the other headers."""

    name = "redact"

    def parse_conf(self, conf):
        return conf["secret"]

    async def on_response(self, response, secret):
        body = await response.body()
        if body and secret.encode() in body:
            response.set_body(body.replace(secret.encode(), b"***"))
            response.set_header("x-redacted", "1")
            response.set_status(203)


class Counter(a6fast.Plugin):
    """Keeps state across calls of one conf: which call of it this is."""

    name = "counter"
    inline = True

    def parse_conf(self, conf):
        return {"seen": 0}

    def on_request(self, request, state):
        state["seen"] += 1
        request.set_header("x-call", str(state["seen"]))


class EchoJson(a6fast.Plugin):
    """Answer with what the plugin saw, as JSON."""

    name = "echo-json"

    async def on_request(self, request, conf):
        request.stop(200, {"content-type": "application/json"}, json.dumps({
            "method": request.method, "path": request.path, "src_ip": request.src_ip,
            "args": request.args.items(), "headers": request.headers.items(),
            "cookie": await request.var("cookie_session"), "host": await request.var("host"),
            "arg_q": await request.var("arg_q"), "uri": await request.var("request_uri"),
        }))
