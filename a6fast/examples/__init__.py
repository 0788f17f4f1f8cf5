"""Built-in example plugins, always loaded (a user plugin of the same name takes precedence).

- ``stop``: answer the client with a fixed status/headers/body.
- ``rewrite``: change path, headers, args, response headers and body of the request.
- ``echo-vars``: answer with gateway variables (and the body) as JSON; shows ExtraInfo.
- ``resp-header``: set response headers/status in the response phase.
"""

BUILTIN_MODULES = (
    "a6fast.examples.stop",
    "a6fast.examples.rewrite",
    "a6fast.examples.echo_vars",
    "a6fast.examples.resp_header",
)


def expect_object(conf, keys):
    """``conf`` as a dict (None -> {}); ValueError for anything else or an unknown key."""
    if conf is None:
        return {}
    if not isinstance(conf, dict):
        raise ValueError("conf must be a JSON object, not %s" % type(conf).__name__)
    unknown = sorted(set(conf) - set(keys))
    if unknown:
        raise ValueError("unknown conf key(s) %s; known: %s"
                         % (", ".join(unknown), ", ".join(keys)))
    return conf


def expect_status(value, what="status", allow_zero=False):
    """An HTTP status from a conf: an int in 100..599 (or 0 when allowed)."""
    if type(value) is not int or not (100 <= value <= 599 or (allow_zero and value == 0)):
        raise ValueError("%s must be an int in 100..599%s, not %r"
                         % (what, " or 0" if allow_zero else "", value))
    return value


def expect_entries(value, what, nullable):
    """``{"name": "v" | ["v", ...] | null}`` as a list of ``(name, [values] | None)``."""
    if value is None:
        return []
    if not isinstance(value, dict):
        raise ValueError("%s must be a JSON object, not %s" % (what, type(value).__name__))
    entries = []
    for name, item in value.items():
        if not name:
            raise ValueError("%s: empty name" % what)
        if item is None:
            if not nullable:
                raise ValueError("%s: %r has no value" % (what, name))
            entries.append((name, None))
        elif isinstance(item, str):
            entries.append((name, [item]))
        elif isinstance(item, list) and item and all(isinstance(v, str) for v in item):
            entries.append((name, list(item)))
        else:
            raise ValueError("%s: %r must be a string, a list of strings%s"
                             % (what, name, " or null" if nullable else ""))
    return entries


def expect_text(value, what):
    if value is not None and not isinstance(value, str):
        raise ValueError("%s must be a string, not %s" % (what, type(value).__name__))
    return value
