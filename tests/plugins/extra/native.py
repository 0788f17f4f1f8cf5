"""a6fast-style plugins for the ExtraInfo and response-phase tests, written as users write them."""
import zlib

import a6fast


@a6fast.plugin("answer-path", inline=True)
def answer_path(request, conf):
    """Needs no ExtraInfo: the calls that must keep flowing while another one waits."""
    request.stop(200, body=request.path or "")


@a6fast.plugin("echo-var")
async def echo_var(request, conf):
    """Answer with one gateway variable as the body; ``x-absent`` when the gateway has none."""
    value = await request.var(conf["name"])
    if value is None:
        request.stop(200, {"x-absent": "1"})
    else:
        request.stop(200, body=value)


@a6fast.plugin("echo-body")
async def echo_body(request, conf):
    """Answer with the request body as received; ``x-absent`` when there is none."""
    body = await request.body()
    if body is None:
        request.stop(200, {"x-absent": "1"})
    else:
        request.stop(200, body=body)


@a6fast.plugin("body-digest")
async def body_digest(request, conf):
    """Answer with the request body's length and CRC-32 (a small answer for a big body)."""
    body = await request.body()
    request.stop(200, body="%d:%d" % (len(body), zlib.crc32(body)))


@a6fast.plugin("ask-twice")
async def ask_twice(request, conf):
    """Ask for the same variable and the body twice; both answers must agree."""
    first = await request.var(conf["name"])
    body = await request.body()
    if await request.var(conf["name"]) != first or await request.body() != body:
        raise AssertionError("a second ask gave another answer")
    request.set_header("x-async-saw", first)


@a6fast.plugin("get-twice")
def get_twice(request, conf):
    """The same from a worker thread, with the blocking getters."""
    first = request.get_var(conf["name"])
    if request.get_var(conf["name"]) != first or request.get_body() != request.get_body():
        raise AssertionError("a second get gave another answer")
    request.set_header("x-thread-saw", first)


@a6fast.plugin("var-then-note")
def var_then_note(request, conf):
    """Blocks in get_var() in a worker thread; notes in a file how that ended."""
    try:
        outcome = "value %r" % request.get_var("remote_addr")
    except BaseException as exc:  # noqa: B902  what the waiting thread was handed is the point
        outcome = "raised %s" % type(exc).__name__
        raise
    finally:
        with open(conf["note"], "w") as f:
            f.write(outcome)
    request.stop(200, body=outcome)


# Response phase --------------------------------------------------------------------------------

@a6fast.plugin("resp-echo-body", phase="response")
async def resp_echo_body(response, conf):
    """Send the upstream body back as the new body, with a variable in ``x-upstream-addr``."""
    body = await response.body()
    response.set_header("x-upstream-addr", await response.var("upstream_addr") or "-")
    response.set_body(b"(none)" if body is None else body)


@a6fast.plugin("resp-look", phase="response")
async def resp_look(response, conf):
    """Reads the body and a variable, changes nothing: the response goes through as it is."""
    await response.var("upstream_addr")
    await response.body()


@a6fast.plugin("resp-body", phase="response", inline=True)
def resp_body(response, conf):
    """Replace the response body with the conf's ``body`` text."""
    response.set_body(conf["body"])
