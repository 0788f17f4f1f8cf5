"""``apisix.runner.http.method``: HTTP method names and their protocol numbers (0.1 releases)."""
from ..protocol import METHOD_VALUES, METHODS

__all__ = ["A6MethodGET", "A6MethodHEAD", "A6MethodPOST", "A6MethodPUT", "A6MethodDELETE",
           "A6MethodMKCOL", "A6MethodCOPY", "A6MethodMOVE", "A6MethodOPTIONS",
           "A6MethodPROPFIND", "A6MethodPROPPATCH", "A6MethodLOCK", "A6MethodUNLOCK",
           "A6MethodPATCH", "A6MethodTRACE", "methodName", "methodCode",
           "get_name_by_code", "get_code_by_name"]

A6MethodGET = "GET"
A6MethodHEAD = "HEAD"
A6MethodPOST = "POST"
A6MethodPUT = "PUT"
A6MethodDELETE = "DELETE"
A6MethodMKCOL = "MKCOL"
A6MethodCOPY = "COPY"
A6MethodMOVE = "MOVE"
A6MethodOPTIONS = "OPTIONS"
A6MethodPROPFIND = "PROPFIND"
A6MethodPROPPATCH = "PROPPATCH"
A6MethodLOCK = "LOCK"
A6MethodUNLOCK = "UNLOCK"
A6MethodPATCH = "PATCH"
A6MethodTRACE = "TRACE"

methodName = dict(enumerate(METHODS))
methodCode = dict(METHOD_VALUES)


def get_name_by_code(code: int) -> str:
    """"GET" for 0 ...; None for a number that is no method."""
    return methodName.get(code)


def get_code_by_name(name: str) -> int:
    """0 for "GET" ...; None for a name that is no method."""
    return methodCode.get(name)
