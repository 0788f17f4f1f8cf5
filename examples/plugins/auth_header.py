"""``auth-header``: ask an auth service about the request's credentials before it goes upstream.

Route conf: ``{"url": "http://auth.internal:9000/check", "timeout": 2}``

The service is called ``GET url`` with the request's ``Authorization`` header and the client's
address (the ``remote_addr`` variable, asked from APISIX) in ``X-Real-IP``.  It answers 2xx with
the user name as its body: the request goes upstream with ``X-User`` set and without its
``Authorization`` header.  It answers 401 or 403: the client gets 401.  Anything else (the service
down, a 5xx, a timeout) makes the plugin fail, and a failing plugin is answered with an Err frame:
APISIX answers 503, the request is never let through.

The HTTP call blocks, so it runs in a worker thread through ``a6fast.run_blocking``; the loop
keeps serving every other request meanwhile.
"""
import urllib.error
import urllib.request

import a6fast


class AuthHeader(a6fast.Plugin):
    """Let a request through only when the auth service accepts its Authorization header."""

    name = "auth-header"

    def parse_conf(self, conf):
        if not isinstance(conf, dict) or not isinstance(conf.get("url"), str):
            raise ValueError('conf must be {"url": "http://...", "timeout": seconds}')
        return conf["url"], float(conf.get("timeout", 2))

    async def on_request(self, request, conf):
        url, timeout = conf
        credentials = request.headers.get("authorization")
        if credentials is None:
            request.stop(401, {"www-authenticate": "Bearer"}, "credentials required\n")
            return
        client = await request.var("remote_addr")
        user = await a6fast.run_blocking(ask_auth_service, url, credentials, client, timeout)
        if user is None:
            request.stop(401, {"www-authenticate": "Bearer"}, "credentials refused\n")
            return
        request.set_header("x-user", user)
        request.del_header("authorization")


def ask_auth_service(url, credentials, client, timeout):
    """The user name the service answers for these credentials; None when it refuses them."""
    headers = {"Authorization": credentials, "X-Real-IP": client or ""}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=timeout) as answer:
            return answer.read().decode("utf-8").strip()
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            return None
        raise
