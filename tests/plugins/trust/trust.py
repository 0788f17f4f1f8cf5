"""Plugins for the trust tests: every answer carries a marker that names the request or conf it
belongs to, so an answer that reaches the wrong request is seen."""
import os
import time

import a6fast


@a6fast.plugin("marker", inline=True, json_conf=False)
def marker(request, conf):
    # the conf's own text: a call answered with another conf's plugins shows another marker
    request.stop(200, body=conf)


@a6fast.plugin("ask-then-deny", json_conf=False)
async def ask_then_deny(request, conf):
    # A plugin that gives up waiting for the gateway (a deadline of its own around var()): the
    # question has gone out, the call ends before its answer comes back.
    question = request.var("late")
    question.send(None)
    question.close()
    request.stop(403, body=conf)


@a6fast.plugin("prefetch-then-deny", json_conf=False)
async def prefetch_then_deny(request, conf):
    # Prefetches the body in a thread, then decides without it.
    a6fast.run_blocking(request.get_body)
    await a6fast.run_blocking(time.sleep, float(request.headers.get("x-wait", "0.05")))
    request.stop(403, body=conf)


@a6fast.plugin("echo-marker", inline=True)
def echo_marker(request, conf):
    request.stop(200, body=request.path)


@a6fast.plugin("thread-marker")
def thread_marker(request, conf):
    if request.headers.get("x-var"):
        value = request.get_var(request.headers["x-var"])
        request.stop(200, body="%s %s" % (request.path, value))
        return
    request.stop(200, body=request.path)


@a6fast.plugin("async-marker")
async def async_marker(request, conf):
    if request.headers.get("x-var"):
        value = await request.var(request.headers["x-var"])
        body = await request.body()
        request.stop(200, body="%s %s %s" % (request.path, value, body and body.decode()))
        return
    request.stop(200, body=request.path)


@a6fast.plugin("hang-until", json_conf=False)
def hang_until(request, conf):
    # A downstream that hangs until the file named by the conf exists; every start is logged.
    with open(conf + ".started", "a") as f:
        f.write("%s\n" % request.path)
    while not os.path.exists(conf):
        time.sleep(0.01)


@a6fast.plugin("sleepy", json_conf=False)
def sleepy(request, conf):
    time.sleep(float(request.headers.get("x-sleep", "0")))
    request.stop(200, body=request.path)
