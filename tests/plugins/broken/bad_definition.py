import a6fast


class NoHooks(a6fast.Plugin):
    name = "no-hooks"
