import a6fast


@a6fast.plugin("never")
def never(request, conf)
    pass
