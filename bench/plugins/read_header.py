"""``read-header``: reads one request header (the user agent) and stops, 200 if it is there, 403
if not: what a header check costs, whatever the other headers (bench/instructions.py, bench/
test_call.py)."""
import a6fast


@a6fast.plugin("read-header", inline=True)
def read_header(request, conf):
    request.stop(200 if request.headers.get("User-Agent") else 403, None, b"hi")
