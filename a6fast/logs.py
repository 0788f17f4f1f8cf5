"""The log lines of `a6fast serve`: text for people, or JSON (``--log-format json``) for log
collectors, one object a line.

A JSON line always has ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``pid`` (the process that
logged: the supervisor or a worker) and ``message``; a plugin's failure adds ``plugin``,
``call_id`` and ``err`` (the Err code answered) and, as any line logged with an exception,
``traceback``.  The runner passes those fields with ``extra=``; names in ``FIELDS`` are the only
ones copied.
"""
import datetime
import json
import logging
import sys
import threading

__all__ = ["TEXT_FORMAT", "FORMATS", "FIELDS", "JsonFormatter", "configure"]

TEXT_FORMAT = "%(asctime)s %(levelname)s a6fast[%(process)d] %(name)s: %(message)s"
FORMATS = ("text", "json")
# extra= fields a JSON line carries when a log call gives them
FIELDS = ("plugin", "call_id", "err")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in a message or traceback are escaped)."""

    def format(self, record):
        out = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
                            .isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        # ASCII only: a line stays valid whatever encoding stderr has
        return json.dumps(out, default=repr)


def configure(level, log_format="text", stream=None):
    """Log to ``stream`` (stderr) at ``level`` in ``log_format`` ("text" or "json")."""
    stream = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(stream)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    if log_format == "json":
        _everything_through_logging()


def _everything_through_logging():
    """What Python would print to stderr itself (warnings, uncaught exceptions) goes through the
    log too, so that every line of a JSON log parses."""
    logging.captureWarnings(True)
    log = logging.getLogger("a6fast")

    def on_exception(exc_type, exc, tb):
        log.critical("uncaught %s", exc_type.__name__, exc_info=(exc_type, exc, tb))

    def on_thread_exception(args):
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread is not None else "?"
        log.error("uncaught %s in thread %s", args.exc_type.__name__, name,
                  exc_info=(args.exc_type, args.exc_value, args.exc_traceback))

    sys.excepthook = on_exception
    threading.excepthook = on_thread_exception
