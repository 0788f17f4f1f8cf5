import time

import a6fast


@a6fast.plugin("boom", inline=True)
def boom(request, conf):
    raise RuntimeError("boom: the plugin failed on purpose")


@a6fast.plugin("slow")
async def slow(request, conf):
    await a6fast.run_blocking(time.sleep, conf.get("seconds", 0.3))
    request.stop(200, body="slept")


@a6fast.plugin("path-echo", inline=True)
def path_echo(request, conf):
    request.stop(200, headers={"x-id": str(request.id)}, body=request.path or "")


@a6fast.plugin("worker-pid", inline=True)
def worker_pid(request, conf):
    import os

    request.stop(200, body=str(os.getpid()))
