"""``add-response-header``: response phase (``ext-plugin-post-resp``): set headers on the
upstream's response, keeping all the others, and say how long the upstream took.

Route conf: ``{"headers": {"x-served-by": "a6fast"}, "timing": true}``

With ``timing``, ``X-Upstream-Time`` is set from APISIX's ``upstream_response_time`` variable;
a 5xx from the upstream also gets ``Retry-After: 5``.
"""
import a6fast


def parse(conf):
    conf = conf or {}
    headers = conf.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise ValueError('conf "headers" must map header names to strings')
    return tuple(headers.items()), bool(conf.get("timing", False))


@a6fast.plugin("add-response-header", phase="response", conf=parse)
async def add_response_header(response, conf):
    headers, timing = conf
    for name, value in headers:
        response.set_header(name, value)
    if timing:
        response.set_header("x-upstream-time", await response.var("upstream_response_time") or "-")
    if response.status >= 500:
        response.set_header("retry-after", "5")
