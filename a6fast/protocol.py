"""Numbers of the APISIX ext-plugin protocol (ext-plugin.fbs v0.6.1), in the protocol's own words.

Plain ints, not enums: these are compared on the hot path.
"""

# Frame header: byte 0 is the RPC type, bytes 1..3 the payload length (big-endian).
HEADER_SIZE = 4
MAX_PAYLOAD = (1 << 24) - 1

# RPC types
RPC_ERR = 0
RPC_PREPARE_CONF = 1
RPC_HTTP_REQ_CALL = 2
RPC_EXTRA_INFO = 3
RPC_HTTP_RESP_CALL = 4
RPC_NAMES = {0: "Err", 1: "PrepareConf", 2: "HTTPReqCall", 3: "ExtraInfo", 4: "HTTPRespCall"}

# A6.Err.Code
BAD_REQUEST = 0
SERVICE_UNAVAILABLE = 1
CONF_TOKEN_NOT_FOUND = 2
ERR_NAMES = {0: "BAD_REQUEST", 1: "SERVICE_UNAVAILABLE", 2: "CONF_TOKEN_NOT_FOUND"}

# A6.Method: the index is the enum value.
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "MKCOL", "COPY", "MOVE", "OPTIONS",
           "PROPFIND", "PROPPATCH", "LOCK", "UNLOCK", "PATCH", "TRACE")
METHOD_VALUES = {name: value for value, name in enumerate(METHODS)}

# A6.HTTPReqCall.Action
ACTION_NONE = 0
ACTION_STOP = 1
ACTION_REWRITE = 2

# A6.ExtraInfo.Info
INFO_NONE = 0
INFO_VAR = 1
INFO_REQ_BODY = 2
INFO_RESP_BODY = 3
