"""A prepared conf: the plugins of one PrepareConf, each with its parsed conf, run per call.

Hooks and how each runs were resolved when the plugins were loaded; the conf was parsed once at
prepare time.  A phase whose hooks are all inline runs as a plain loop (no coroutine, no task,
no thread); otherwise a coroutine drives it and the answer may come back as a Future.
"""
import ast

from .codec import encode_http_resp_call_resp, encode_no_action, encode_stop
from .futures import run_blocking, start
from .http import Request, Response
from .plugin import ASYNC, INLINE

__all__ = ["Chain", "blamed_plugin"]

_BLAME = "a6fast: raised by plugin "


def _blame(exc, name):
    # Free on success (zero-cost try in 3.11); on failure the server's log says which plugin.
    exc.add_note(_BLAME + repr(name))


def blamed_plugin(exc):
    """The name of the plugin whose hook raised ``exc`` (the note ``_blame`` added), or None.
    The last such note counts: an exception object raised again by another plugin has two."""
    for note in reversed(getattr(exc, "__notes__", None) or ()):
        if isinstance(note, str) and note.startswith(_BLAME):
            try:
                name = ast.literal_eval(note[len(_BLAME):])
            except (ValueError, SyntaxError):
                return None
            return name if isinstance(name, str) else None
    return None


def _blame_answer(exc, steps):
    # What only the whole answer shows (a Content-Length against the body a later plugin set)
    # fails as the answer is built: the note names the phase's plugins.
    exc.add_note("a6fast: raised building the answer of plugins %s"
                 % ", ".join(repr(step[3]) for step in steps))


def _returned(value, name):
    """A hook returned something.  Hooks answer through ``request.stop()`` / ``set_*()``; a
    returned value (``return False`` meant as "deny") must not let the request through."""
    if hasattr(value, "__await__"):
        close = getattr(value, "close", None)
        if close is not None:
            close()
        raise TypeError("inline hook of plugin %r returned an awaitable; declare it "
                        "'async def' so that it runs on the loop as a coroutine" % name)
    raise TypeError("hook of plugin %r returned %r: hooks return None and answer through "
                    "request.stop() or the set_*() methods" % (name, value))


class Chain:
    """The plugins of one conf, in execution order; the server calls ``call_request`` /
    ``call_response`` for each HTTPReqCall / HTTPRespCall that carries its conf_token."""

    __slots__ = ("key", "names", "_req_steps", "request_inline", "_resp_steps", "response_inline")

    def __init__(self, steps, key=None):
        """``steps``: ``(PluginSpec, parsed conf)`` in execution order.

        ``request_inline`` / ``response_inline``: every hook of that phase runs inline, so the
        phase always answers at once and never uses the call's context (the server then skips
        making one)."""
        self.key = key
        self.names = tuple(spec.name for spec, _ in steps)
        req = [(spec.request_hook, spec.request_mode, conf, spec.name)
               for spec, conf in steps if spec.request_hook is not None]
        resp = [(spec.response_hook, spec.response_mode, conf, spec.name)
                for spec, conf in steps if spec.response_hook is not None]
        self.request_inline = all(mode == INLINE for _, mode, _, _ in req)
        self.response_inline = all(mode == INLINE for _, mode, _, _ in resp)
        self._req_steps = tuple(req)
        self._resp_steps = tuple(resp)

    def call_request(self, req, ctx):
        """Run the request phase for ``req`` (HTTPReqCallReq): the answer frame, or a Future of
        it.  A plugin's failure is raised (or set on the Future), never answered as success."""
        steps = self._req_steps
        if not steps:
            return encode_no_action(req.id)
        request = Request(req, ctx)
        if self.request_inline:
            name = None
            try:
                for hook, _, conf, name in steps:
                    result = hook(request, conf)
                    if result is not None:
                        _returned(result, name)
                    if request._stop is not None:
                        break
            except Exception as exc:
                _blame(exc, name)
                raise
            try:
                # a Stop, the answer of most inline chains, without a call to _answer()
                stop = request._stop
                if stop is not None:
                    return encode_stop(req.id, stop[0], stop[1], stop[2])
                return request._answer()
            except Exception as exc:
                _blame_answer(exc, steps)
                raise
        return start(_drive(request, steps))

    def call_response(self, req, ctx):
        """Run the response phase for ``req`` (HTTPRespCallReq); every plugin runs, in order."""
        steps = self._resp_steps
        if not steps:
            return encode_http_resp_call_resp(req.id, 0, None, None)
        response = Response(req, ctx)
        if self.response_inline:
            name = None
            try:
                for hook, _, conf, name in steps:
                    result = hook(response, conf)
                    if result is not None:
                        _returned(result, name)
            except Exception as exc:
                _blame(exc, name)
                raise
            try:
                return response._answer()
            except Exception as exc:
                _blame_answer(exc, steps)
                raise
        return start(_drive(response, steps))

    def __len__(self):
        return len(self.names)

    def __repr__(self):
        return "<Chain key=%r plugins=%r>" % (self.key, self.names)


async def _drive(phase, steps):
    """A phase with async or threaded hooks: each awaited in turn, then the answer."""
    name = None
    try:
        for hook, mode, conf, name in steps:
            if mode == INLINE:
                result = hook(phase, conf)
                if result is not None:
                    _returned(result, name)
            elif mode == ASYNC:
                result = await hook(phase, conf)
                if result is not None:
                    _returned(result, name)
            else:
                result = await run_blocking(hook, phase, conf)
                if result is not None:
                    _returned(result, name)
            if phase._stop is not None:
                break
    except Exception as exc:
        _blame(exc, name)
        raise
    try:
        return phase._answer()
    except Exception as exc:
        _blame_answer(exc, steps)
        raise
