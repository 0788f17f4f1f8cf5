"""A plugin whose module starts a thread at import (a deny-list refresher): the thread must run in
the process that serves the calls."""
import os
import threading
import time

import a6fast

IMPORTED_IN = os.getpid()
TICKS = [0]


def _refresh():
    while True:
        TICKS[0] += 1
        time.sleep(0.01)


_refresher = threading.Thread(target=_refresh, daemon=True)
_refresher.start()


@a6fast.plugin("refresher", inline=True)
def refresher(request, conf):
    request.stop(200, body="%s %s %d" % (IMPORTED_IN == os.getpid(), _refresher.is_alive(),
                                         TICKS[0]))
