"""Plugins that hand a6fast exactly what their conf says, unchecked: the server tests of what
reaches an answer frame (invalid header fields, statuses, framing headers, deletions)."""
import a6fast


@a6fast.plugin("produce", inline=True)
def produce(request, conf):
    """``{"stop": [status, headers, body]}``, or ``{"call": [method, arg, ...]}`` on the request."""
    if "stop" in conf:
        status, headers, body = conf["stop"]
        request.stop(status, headers, body)
    else:
        method, *args = conf["call"]
        getattr(request, method)(*args)


@a6fast.plugin("resp-produce", phase="response", inline=True)
def resp_produce(response, conf):
    """``{"calls": [[method, arg, ...], ...]}`` on the response, in order; ``del-all`` deletes
    every header the response has."""
    for method, *args in conf["calls"]:
        if method == "del-all":
            for name in set(response.headers):
                response.del_header(name)
        else:
            getattr(response, method)(*args)
