"""Plugins that misbehave on purpose, for the hostile-input and fault tests."""
import asyncio
import sys
import time

import a6fast
from a6fast.futures import Future


@a6fast.plugin("echo", inline=True)
def echo(request, conf):
    request.stop(200, body=request.path or "")


@a6fast.plugin("count-headers", inline=True)
def count_headers(request, conf):
    # Touches the lazily decoded headers vector: a corrupt one must raise here.
    request.stop(200, body=str(len(request.headers.items())))


@a6fast.plugin("add-header", inline=True)
def add_header(request, conf):
    # Reads the original headers to add to them, then rewrites: a corrupt vector must not
    # become a Rewrite.
    request.add_header("x-seen", "1")


@a6fast.plugin("raises", inline=True)
def raises(request, conf):
    raise RuntimeError("raises: failed on purpose")


@a6fast.plugin("returns-false", inline=True)
def returns_false(request, conf):
    return False  # meant as "deny", but the hook API has no return value


@a6fast.plugin("returns-coroutine", inline=True)
def returns_coroutine(request, conf):
    return asyncio.sleep(0)


@a6fast.plugin("awaits-asyncio")
async def awaits_asyncio(request, conf):
    await asyncio.sleep(conf.get("seconds", 0) if conf else 0)
    request.stop(200)


@a6fast.plugin("sleeps")
def sleeps(request, conf):
    time.sleep(conf["seconds"])
    request.stop(200, body="woke")


@a6fast.plugin("awaits-forever")
async def awaits_forever(request, conf):
    await Future()
    request.stop(200)


@a6fast.plugin("exits-inline", inline=True)
def exits_inline(request, conf):
    sys.exit(3)


@a6fast.plugin("exits-thread")
def exits_thread(request, conf):
    sys.exit(3)


@a6fast.plugin("exits-async")
async def exits_async(request, conf):
    await request.var("remote_addr")
    sys.exit(3)


def _exit_on_conf(conf):
    sys.exit(3)


@a6fast.plugin("exits-in-conf", inline=True, conf=_exit_on_conf)
def exits_in_conf(request, conf):
    request.stop(200)


@a6fast.plugin("big-body", inline=True)
def big_body(request, conf):
    request.stop(200, body=b"x" * conf["size"])


@a6fast.plugin("var-thread")
def var_thread(request, conf):
    request.stop(200, body=request.get_var("remote_addr") or "")


@a6fast.plugin("var-async")
async def var_async(request, conf):
    request.stop(200, body=(await request.var("remote_addr")) or "")
