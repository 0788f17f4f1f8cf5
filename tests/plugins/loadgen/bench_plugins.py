"""Plugins whose answer depends on the request `a6fast bench` shapes: headers, vars, body, args."""
import a6fast


@a6fast.plugin("bench-auth")
async def bench_auth(request, conf):
    """Bearer token from the conf; the client's address (an ExtraInfo var) passed upstream."""
    token = request.headers.get("authorization")
    if token is None:
        request.stop(401, headers={"www-authenticate": "Bearer"})
        return
    if token != "Bearer " + conf["token"]:
        request.stop(403)
        return
    client = await request.var("remote_addr")
    if client is None:
        request.stop(403, body="no client address")
        return
    request.set_header("x-client", client)


@a6fast.plugin("bench-match")
async def bench_match(request, conf):
    """No change when the request is exactly the conf's; Stop 400 naming the first difference."""
    got = {
        "method": request.method,
        "path": request.path,
        "src_ip": request.src_ip,
        "args": [list(item) for item in request.args.items()],
        "headers": [[name.lower(), value] for name, value in request.headers.items()],
        "body": (await request.body() or b"").decode(),
    }
    for name, value in got.items():
        if conf[name] != value:
            request.stop(400, body="%s: %r" % (name, value))
            return
