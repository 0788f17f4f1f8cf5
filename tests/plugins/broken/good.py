import a6fast


@a6fast.plugin("still-loads", inline=True)
def still_loads(request, conf):
    request.stop(204)
