"""What ``a6fast check`` says about a plugin file written for the official runner: every
``apisix.runner`` module, name or object attribute it uses that a6fast does not provide, with its
line, so that the operator hears of it before the first request does.
"""
import ast

__all__ = ["unprovided_uses"]

# Parts of the official runner itself (its server, cache, loader and frame builders), not of the
# API it gave plugins: a plugin that uses them is told so.
RUNNER_INTERNALS = {
    "apisix.runner.server.server", "apisix.runner.server.handle", "apisix.runner.server.config",
    "apisix.runner.plugin.cache", "apisix.runner.plugin.core.PluginProcess",
    "apisix.runner.plugin.core.execute", "apisix.runner.plugin.core.loading",
    "apisix.runner.plugin.core.filter", "apisix.runner.plugin.core.refresh_response",
    "apisix.runner.http.protocol.new_builder", "apisix.runner.utils.common.new_builder",
    "apisix.runner.utils.common.create_dict_entry",
    "apisix.runner.utils.common.create_dict_vector",
    "apisix.runner.utils.common.create_str_vector",
    "apisix.runner.utils.common.get_vector_object", "apisix.runner.utils.common.response_call",
    "apisix.runner.utils.common.response_config",
    "apisix.runner.utils.common.response_unknown",
    "apisix.runner.utils.common.parse_dict_vector",
    "apisix.runner.utils.common.parse_list_vector",
}

# Attributes of the official Request/Response objects that a6fast leaves out: the raw FlatBuffers
# of the call and the methods that wrote the runner's answer frames.
OBJECT_INTERNALS = {
    "rpc_buf": "the raw FlatBuffers bytes of the call",
    "call_handler": "the official runner writing its own answer frame",
    "config_handler": "the official runner writing its own answer frame",
    "unknown_handler": "the official runner writing its own answer frame",
    "flatbuffers": "the official runner writing its own answer frame",
}


def _provided(module):
    from . import provided_names
    return provided_names(module)


def _why(what):
    if any(what == name or what.startswith(name + ".") for name in RUNNER_INTERNALS):
        return "part of the official runner itself, not of its plugin API"
    return "not part of the official runner's plugin API as a6fast knows it"


def unprovided_uses(source, filename="<plugin>"):
    """``[(line, message)]`` for each use in ``source`` (a plugin file's text) of an
    ``apisix.runner`` module, name or object attribute that a6fast does not provide."""
    try:
        tree = ast.parse(source, filename)
    except (SyntaxError, ValueError):
        return []  # loading the file reports it
    found = []
    bound = {}  # local name -> the apisix.runner module (or "apisix") it stands for

    def report(node, what):
        found.append((node.lineno, "`%s` is not provided by a6fast (%s)" % (what, _why(what))))

    def check_module(node, module):
        """True when a6fast serves ``module`` (reported otherwise)."""
        if _provided(module) is not None:
            return True
        report(node, module)
        return False

    uses_runner = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "apisix" or alias.name.startswith("apisix.runner"):
                    uses_runner = True
                    if alias.name != "apisix" and not check_module(node, alias.name):
                        continue
                    if alias.asname:
                        bound[alias.asname] = alias.name
                    else:
                        bound["apisix"] = "apisix"
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            module = node.module
            if module == "apisix":
                uses_runner = True
                for alias in node.names:
                    if alias.name == "runner":
                        bound[alias.asname or alias.name] = "apisix.runner"
                continue
            if not module.startswith("apisix.runner"):
                continue
            uses_runner = True
            if not check_module(node, module):
                continue
            names = _provided(module)
            for alias in node.names:
                if alias.name == "*":
                    continue
                if alias.name not in names:
                    report(node, "%s.%s" % (module, alias.name))
                elif _provided(module + "." + alias.name) is not None:
                    bound[alias.asname or alias.name] = module + "." + alias.name
    if not uses_runner:
        return []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        if node.attr in OBJECT_INTERNALS:
            found.append((node.lineno, "`.%s` (%s) is not provided by a6fast"
                          % (node.attr, OBJECT_INTERNALS[node.attr])))
            continue
        if node.attr == "conn" and isinstance(node.value, ast.Attribute) and node.value.attr == "r":
            found.append((node.lineno, "`.r.conn` (the official runner's socket to APISIX) is "
                          "not provided by a6fast"))
            continue
        # a dotted use of a module bound above: apisix.runner.x.name, alias.name
        chain = []
        value = node
        while isinstance(value, ast.Attribute):
            chain.append(value.attr)
            value = value.value
        if not isinstance(value, ast.Name) or value.id not in bound:
            continue  # (each part of a dotted name is visited: duplicates go below)
        module = bound[value.id]
        for part in reversed(chain):
            if module == "apisix":
                if part != "runner":
                    break
                module = "apisix.runner"
                continue
            names = _provided(module)
            if names is None:
                break
            if part not in names:
                report(node, "%s.%s" % (module, part))
                break
            child = module + "." + part
            if _provided(child) is None:
                break
            module = child
    return sorted(set(found))

