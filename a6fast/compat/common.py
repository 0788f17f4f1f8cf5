"""``apisix.runner.utils.common`` (0.2 releases) and ``apisix.runner.http.protocol`` (0.1): the
protocol's numbers and the method tables, as plugins may import them.

Not here: the FlatBuffers builder helpers of that module (``new_builder``, ``create_*_vector``,
``response_*`` decorators, ``parse_*_vector``): they build or read the runner's own frames, which
a6fast writes itself; ``a6fast check`` points at a plugin that imports them.
"""
from ..protocol import RPC_EXTRA_INFO, RPC_HTTP_REQ_CALL, RPC_PREPARE_CONF
from .method import (A6MethodCOPY, A6MethodDELETE, A6MethodGET, A6MethodHEAD, A6MethodLOCK,
                     A6MethodMKCOL, A6MethodMOVE, A6MethodOPTIONS, A6MethodPATCH, A6MethodPOST,
                     A6MethodPROPFIND, A6MethodPROPPATCH, A6MethodPUT, A6MethodTRACE,
                     A6MethodUNLOCK, get_code_by_name, get_name_by_code, methodCode, methodName)

__all__ = ["RPC_PROTOCOL_HEADER_LEN", "RPC_PREPARE_CONF", "RPC_HTTP_REQ_CALL", "RPC_EXTRA_INFO",
           "RPC_UNKNOWN", "VECTOR_TYPE_HEADER", "VECTOR_TYPE_QUERY", "VECTOR_TYPE_CONFIG",
           "VECTOR_TYPE_SOURCE_IP", "dictVectorParseFuncNames", "listVectorParseFuncNames",
           "A6MethodGET", "A6MethodHEAD", "A6MethodPOST", "A6MethodPUT", "A6MethodDELETE",
           "A6MethodMKCOL", "A6MethodCOPY", "A6MethodMOVE", "A6MethodOPTIONS",
           "A6MethodPROPFIND", "A6MethodPROPPATCH", "A6MethodLOCK", "A6MethodUNLOCK",
           "A6MethodPATCH", "A6MethodTRACE", "methodNames", "methodCodes",
           "get_method_name_by_code", "get_method_code_by_name"]

# What apisix.runner.http.protocol (0.1) had.
PROTOCOL_NAMES = ("RPC_PREPARE_CONF", "RPC_HTTP_REQ_CALL", "RPC_UNKNOWN")

RPC_PROTOCOL_HEADER_LEN = 4
RPC_UNKNOWN = 0

VECTOR_TYPE_HEADER = 1
VECTOR_TYPE_QUERY = 2
VECTOR_TYPE_CONFIG = 3
VECTOR_TYPE_SOURCE_IP = 4

dictVectorParseFuncNames = {VECTOR_TYPE_HEADER: "Headers", VECTOR_TYPE_QUERY: "Args",
                            VECTOR_TYPE_CONFIG: "Conf"}
listVectorParseFuncNames = {VECTOR_TYPE_SOURCE_IP: "SrcIp"}

methodNames = methodName
methodCodes = methodCode
get_method_name_by_code = get_name_by_code
get_method_code_by_name = get_code_by_name
