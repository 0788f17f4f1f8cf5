"""``a6fast check``: load plugin directories the way ``a6fast serve`` does and say what was found.

Every plugin is listed with its name, its style (how it was written: an ``@a6fast.plugin``
function, a ``Plugin`` class, an official-runner seed-era ``Base`` class or 0.2 ``PluginBase``
class), how each hook runs (inline, async, thread) and where it was defined.  Every file that did
not import and every plugin that did not define is listed with file and line, and so is every
use of an official-runner (``apisix.runner``) name that a6fast does not provide (a warning).
"""
import inspect
import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .compat import CompatSpec
from .compat.scan import unprovided_uses
from .plugin import MODE_NAMES, PluginSpec
from .registry import Registry, plugin_files

__all__ = ["PluginInfo", "CheckReport", "check", "describe", "format_report", "format_errors"]


@dataclass
class PluginInfo:
    """One loaded plugin as ``a6fast check`` reports it."""

    name: str
    style: str  # "function", "class", "seed", "official-0.2" or "spec"
    request: Optional[str]  # how the request hook runs ("inline", "async", "thread"), or None
    response: Optional[str]
    source: str  # file path, "entry point ...", or "builtin <module>"
    line: int = 0  # of the definition, 0 when unknown


@dataclass
class CheckReport:
    """What ``check()`` found: plugins, errors ``(file, line, message)`` and warnings."""

    plugins: List[PluginInfo] = field(default_factory=list)
    errors: List[Tuple[str, int, str]] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> Dict[str, Any]:
        return {"plugins": [asdict(p) for p in self.plugins],
                "errors": [{"file": f, "line": n, "message": m} for f, n, m in self.errors],
                "warnings": list(self.warnings), "ok": self.ok}


def _style_and_line(spec: PluginSpec) -> Tuple[str, int]:
    if isinstance(spec, CompatSpec):
        return spec.style, _line_of(spec.cls)
    hook = spec.request_hook if spec.request_hook is not None else spec.response_hook
    owner = getattr(hook, "__self__", None)
    if owner is not None and not isinstance(owner, type):
        return "class", _line_of(type(owner))
    if getattr(hook, "__a6fast_plugin__", None) is spec:
        return "function", _line_of(hook)
    return "spec", 0


def _line_of(obj: Any) -> int:
    try:
        return inspect.getsourcelines(inspect.unwrap(obj))[1]
    except (OSError, TypeError):
        return 0


def describe(spec: PluginSpec, source: Optional[str]) -> PluginInfo:
    """The ``PluginInfo`` of a loaded plugin."""
    style, line = _style_and_line(spec)
    # An official-runner plugin's response "hook" only refuses the phase it never had.
    has_response = spec.response_hook is not None and not isinstance(spec, CompatSpec)
    return PluginInfo(
        name=spec.name, style=style,
        request=MODE_NAMES[spec.request_mode] if spec.request_hook is not None else None,
        response=MODE_NAMES[spec.response_mode] if has_response else None,
        source=source or "?", line=line)


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: List[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def check(plugin_dirs: Sequence[str], builtins: bool = False,
          entry_points: bool = False) -> CheckReport:
    """Load ``plugin_dirs`` (then entry points and built-ins, if asked) like ``a6fast serve``
    and report every plugin, error and warning.  Nothing is logged meanwhile."""
    logger = logging.getLogger("a6fast.plugins")
    collect = _Collect()
    saved = logger.handlers[:], logger.propagate, logger.level
    logger.handlers[:] = [collect]
    logger.propagate = False
    logger.setLevel(logging.WARNING)
    try:
        registry = Registry.load(plugin_dirs=list(plugin_dirs), builtins=builtins,
                                 entry_points=entry_points)
    finally:
        logger.handlers[:], logger.propagate, _ = saved
        logger.setLevel(saved[2])
    report = CheckReport(errors=list(registry.errors))
    for name in registry.names():
        spec = registry.get(name)
        report.plugins.append(describe(spec, registry.source(name)))
    report.warnings = [record.getMessage() for record in collect.records
                       if record.levelno < logging.ERROR]
    for directory in plugin_dirs:
        report.warnings.extend(_official_api_warnings(directory))
    return report


def _official_api_warnings(directory: str) -> List[str]:
    """``file:line: ...`` for each use of an ``apisix.runner`` name a6fast does not provide, in
    the files ``a6fast serve`` would load from ``directory``."""
    warnings = []
    try:
        paths = plugin_files(directory)
    except OSError:
        return warnings  # loading it reported that
    for path in paths:
        if not os.path.isfile(path):
            continue  # a FIFO would block the read; loading it reported that
        try:
            with open(path, "rb") as f:
                source = f.read()
        except OSError:
            continue  # loading it reported that
        for line, message in unprovided_uses(source, path):
            warnings.append("%s: %s" % (_where(path, line), message))
    return warnings


def _where(path: str, line: int) -> str:
    if os.path.isabs(path):
        try:
            rel = os.path.relpath(path)
            if not rel.startswith(".."):
                path = rel
        except ValueError:
            pass
    return "%s:%d" % (path, line) if line else path


def format_errors(errors: Sequence[Tuple[str, int, str]]) -> str:
    """One line per load error, ``  file:line: message`` (as ``a6fast serve`` refuses with)."""
    return "\n".join("  %s: %s" % (_where(path, line), message) for path, line, message in errors)


def format_report(report: CheckReport, dirs: Sequence[str]) -> str:
    """The human-readable report."""
    lines = ["%d plugin(s), %d error(s) in %s" % (len(report.plugins), len(report.errors),
                                                  ", ".join(dirs) or "(no directory)")]
    if report.plugins:
        rows = [("NAME", "STYLE", "REQUEST", "RESPONSE", "SOURCE")]
        for p in report.plugins:
            rows.append((p.name, p.style, p.request or "-", p.response or "-",
                         _where(p.source, p.line)))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        for row in rows:
            lines.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths))
                         + "  " + row[4])
    if report.errors:
        lines.append("errors:")
        lines.append(format_errors(report.errors))
    if report.warnings:
        lines.append("warnings:")
        for message in report.warnings:
            lines.append("  " + message)
    return "\n".join(lines)
