"""An example plugin: refuse known bots, and tag every other request for the upstream.

Conf: ``{"agents": ["bot", "crawler"], "status": 403}``.
"""
import a6fast


def parse(conf):
    conf = conf or {}
    agents = conf.get("agents", [])
    if not isinstance(agents, list) or not all(isinstance(a, str) and a for a in agents):
        raise ValueError("agents must be a list of non-empty strings")
    status = conf.get("status", 403)
    if not isinstance(status, int) or not 400 <= status <= 499:
        raise ValueError("status must be a 4xx status")
    return tuple(a.lower() for a in agents), status


@a6fast.plugin("block-bots", conf=parse)
async def block_bots(request, conf):
    agents, status = conf
    agent = (request.headers.get("user-agent") or "").lower()
    if any(word in agent for word in agents):
        request.stop(status, {"content-type": "text/plain"}, "bots are not welcome")
        return
    # a gateway variable, asked over ExtraInfo only when needed
    request.set_header("x-client-addr", await request.var("remote_addr") or "unknown")
