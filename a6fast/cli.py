"""`a6fast`: the command line."""
import logging
import math
import os
import sys

import click

from . import __version__
from .logs import FORMATS as LOG_FORMATS, TEXT_FORMAT as LOG_FORMAT, configure as configure_logging
from .server.tokens import MAX_WORKERS

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
           "warning": logging.WARNING, "error": logging.ERROR}


def setup_logging(level, log_format="text"):
    configure_logging(_LEVELS[level.lower()], log_format, sys.stderr)


class ConfigError(Exception):
    """A setting is wrong: one line says which and why (exit status 2)."""


def fail(command, message):
    """One line on stderr and exit status 2, as for a wrong command-line option."""
    click.echo("a6fast %s: error: %s" % (command, message), err=True)
    sys.exit(2)


def read_config_file(path):
    """The official runner's config.yaml: socket.file (may be $env.NAME) and logging.level."""
    import yaml

    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except OSError as exc:
        raise ConfigError("config file %s: %s" % (path, exc.strerror or exc))
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        raise ConfigError("config file %s%s is not valid YAML: %s" % (
            path, ":%d" % (where.line + 1) if where is not None else "",
            getattr(exc, "problem", None) or exc))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("config file %s: expected a mapping at the top level" % path)
    out = {}
    socket_section = data.get("socket")
    if socket_section is not None and not isinstance(socket_section, dict):
        raise ConfigError("config file %s: 'socket' must be a mapping with a 'file' key "
                          "(socket: {file: ...}), not %r" % (path, socket_section))
    socket_file = (socket_section or {}).get("file")
    if socket_file:
        socket_file = str(socket_file)
        if socket_file.startswith(("$env.", "$env:")):  # both spellings appear in its docs
            socket_file = os.environ.get(socket_file[5:], "")
        if socket_file:
            out["listen"] = socket_file
    logging_section = data.get("logging")
    if logging_section is not None and not isinstance(logging_section, dict):
        raise ConfigError("config file %s: 'logging' must be a mapping with a 'level' key, "
                          "not %r" % (path, logging_section))
    level = (logging_section or {}).get("level")
    if level:
        if str(level).lower() not in _LEVELS:
            raise ConfigError("config file %s: unknown logging.level %r" % (path, level))
        out["log_level"] = str(level).lower()
    return out


def positive_number_from_env(name, default):
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError("environment variable %s=%r is not a number of seconds" % (name, raw))
    if not value > 0 or value != value or value == float("inf"):
        raise ConfigError("environment variable %s=%r must be a positive number of seconds"
                          % (name, raw))
    return value


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="a6fast")
def main():
    """a6fast: a fast, fail-closed Python plugin runner for Apache APISIX.

    Start it with `a6fast serve`; APISIX's ext-plugin talks to it over a unix socket.
    """


@main.command()
@click.option("--listen", metavar="unix:PATH",
              help="Socket to listen on. Default: $APISIX_LISTEN_ADDRESS (set by APISIX).")
@click.option("--plugins", "plugin_dirs", multiple=True, type=click.Path(file_okay=False),
              metavar="DIR", help="Directory of plugin .py files (repeatable).")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="A config.yaml of the official runner (socket.file, logging.level).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warn", "warning", "error"],
              case_sensitive=False), default=None, help="Log level (default: info).")
@click.option("--workers", type=click.IntRange(1, MAX_WORKERS), default=None,
              help="Worker processes serving the socket (1-%d). Default: the number of CPUs."
                   % MAX_WORKERS)
@click.option("--threads", type=click.IntRange(1, 1024), default=32, show_default=True,
              help="Threads per worker for plain def hooks (they may block).")
@click.option("--call-timeout", type=click.FloatRange(0, 3600, min_open=True), default=30.0,
              show_default=True,
              help="Seconds a call may take before it is answered SERVICE_UNAVAILABLE.")
@click.option("--conf-expire", type=click.FloatRange(0, min_open=True), default=None,
              help="Seconds a conf is kept after its last use. Default: $APISIX_CONF_EXPIRE_TIME or 3600.")
@click.option("--max-confs", type=click.IntRange(1), default=10000, show_default=True,
              help="Most confs kept at once; the least recently used goes first.")
@click.option("--socket-mode", default="0660", show_default=True,
              help="File mode of the socket (octal). Never make it world-writable.")
@click.option("--socket-group", default=None, help="Group owning the socket (name or gid).")
@click.option("--state-file", type=click.Path(dir_okay=False), default=None,
              help="Where conf token state is kept, in a directory only this user can write. "
                   "Default: /var/lib/a6fast/tokens (root) or ~/.local/state/a6fast/tokens.")
@click.option("--stats", "stats_address", metavar="unix:PATH", default=None,
              help="Serve live counters on this socket (read them with `a6fast stats`).")
@click.option("--metrics", "metrics_address", metavar="HOST:PORT", default=None,
              help="Serve Prometheus metrics at http://HOST:PORT/metrics (such as "
                   "127.0.0.1:9464; IPv6 in brackets). Needs a6fast[metrics].")
@click.option("--log-format", type=click.Choice(LOG_FORMATS), default="text", show_default=True,
              help="text, or json: one object a line (time, level, logger, pid, message; "
                   "plugin, call_id, err and traceback for a plugin's failure).")
@click.option("--reload", "reload_on_change", is_flag=True,
              help="Reload the plugins when a file of a --plugins directory changes "
                   "(for development; SIGHUP reloads in any case).")
def serve(listen, plugin_dirs, config_file, log_level, workers, threads, call_timeout, conf_expire,
          max_confs, socket_mode, socket_group, state_file, stats_address, log_format,
          metrics_address, reload_on_change):
    """Serve APISIX ext-plugin calls on a unix socket until SIGTERM/SIGINT."""
    from .server import (ListenError, PluginsFailed, ServeOptions, StateError, default_workers,
                         serve as run_server)

    for option, value in (("--call-timeout", call_timeout), ("--conf-expire", conf_expire)):
        if value is not None and not math.isfinite(value):
            fail("serve", "%s must be a number of seconds, not %r" % (option, value))
    try:
        from_file = read_config_file(config_file) if config_file else {}
        if conf_expire is None:
            conf_expire = positive_number_from_env("APISIX_CONF_EXPIRE_TIME", 3600.0)
    except ConfigError as exc:
        fail("serve", str(exc))
    if metrics_address is not None:
        _check_metrics_option(metrics_address)
    setup_logging(log_level or from_file.get("log_level") or "info", log_format)
    listen = listen or from_file.get("listen") or os.environ.get("APISIX_LISTEN_ADDRESS")
    if not listen:
        fail("serve", "no socket to listen on: pass --listen unix:/path.sock (APISIX sets "
                      "APISIX_LISTEN_ADDRESS when it starts the runner)")
    if ":" in listen.split("/", 1)[0] and not listen.startswith("unix:"):
        fail("serve", "cannot listen on %r: only unix sockets are served (unix:/path.sock)"
             % listen)
    if listen in ("unix:", ""):
        fail("serve", "empty socket path in %r" % listen)
    try:
        mode = int(socket_mode, 8)
    except ValueError:
        raise click.BadParameter("not an octal mode: %r" % socket_mode, param_hint="--socket-mode")
    if mode & 0o002:
        raise click.BadParameter("a world-writable socket lets any local user drive the plugins",
                                 param_hint="--socket-mode")
    group = int(socket_group) if socket_group and socket_group.isdigit() else socket_group
    if workers is None:
        workers = min(default_workers(), MAX_WORKERS)
    options = ServeOptions(listen=listen, plugin_dirs=list(plugin_dirs), workers=workers,
                           conf_expire=conf_expire, max_confs=max_confs,
                           call_timeout=call_timeout, socket_mode=mode, socket_group=group,
                           state_file=state_file, threads=threads, stats=stats_address,
                           metrics=metrics_address, reload_on_change=reload_on_change)
    try:
        status = run_server(options)
    except PluginsFailed as exc:
        from .check import format_errors

        click.echo("a6fast serve: not starting: %d plugin error(s):" % len(exc.errors), err=True)
        click.echo(format_errors(exc.errors), err=True)
        sys.exit(2)
    except StateError as exc:
        fail("serve", "--state-file %s cannot be trusted: %s" % (state_file, exc))
    except ListenError as exc:
        logging.getLogger("a6fast.server").error("%s", exc)
        sys.exit(1)
    # Leave now, logs flushed: the interpreter would join a plugin thread stuck in a blocking
    # call first, past the gateway's grace period of about 1 s (then it sends SIGKILL).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _check_metrics_option(address):
    from .server.metrics import missing_client, parse_metrics_address

    try:
        parse_metrics_address(address)
    except ValueError as exc:
        fail("serve", "--metrics %s" % exc)
    problem = missing_client()
    if problem is not None:
        fail("serve", problem)


@main.command()
@click.argument("dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--builtins", is_flag=True, help="List the built-in example plugins too.")
@click.option("--entry-points", is_flag=True,
              help="Load the installed a6fast.plugins entry points too.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def check(dirs, builtins, entry_points, as_json):
    """Load plugin directories as `a6fast serve --plugins` would and report every plugin (name,
    style, how its hooks run, where it is defined) and every load error with file and line.

    Exits 1 when a file does not import or a plugin does not define.
    """
    import json

    from .check import check as run_check, format_report

    report = run_check(dirs, builtins=builtins, entry_points=entry_points)
    if as_json:
        click.echo(json.dumps(report.as_dict(), sort_keys=True))
    else:
        click.echo(format_report(report, dirs))
    sys.exit(0 if report.ok else 1)


@main.command()
@click.option("--listen", metavar="unix:PATH", required=True,
              help="The socket given to `a6fast serve --stats`.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON snapshot.")
@click.option("--timeout", type=click.FloatRange(0, min_open=True), default=5.0,
              show_default=True, help="Seconds to wait for the runner.")
def stats(listen, as_json, timeout):
    """Print a running runner's live counters: calls per type and per plugin, errors per code,
    latency percentiles and conf store size."""
    import json

    from .server.stats import format_snapshot, read_snapshot

    from .server.listener import ListenError

    try:
        snapshot = read_snapshot(listen, timeout)
        if not isinstance(snapshot, dict) or "calls" not in snapshot:
            raise ValueError("not a snapshot")
    except (OSError, ValueError, ListenError) as exc:
        click.echo("a6fast stats: no runner's stats at %s: %s" % (listen, _why_no_stats(
            exc, listen, timeout)), err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(snapshot, sort_keys=True))
    else:
        click.echo(format_snapshot(snapshot))


def _why_no_stats(exc, address, timeout):
    """What a failed read of a --stats socket means, in words (one line)."""
    if isinstance(exc, FileNotFoundError):
        return "no such socket (start the runner with --stats %s)" % address
    if isinstance(exc, ConnectionRefusedError):
        return "nothing accepts connections there (the runner has stopped, or it is not a socket)"
    if isinstance(exc, PermissionError):
        return "permission denied (run as the runner's user or a member of its --socket-group)"
    if isinstance(exc, TimeoutError):
        return ("it answered nothing within %g s (is it the runner's --listen socket? "
                "`a6fast stats` reads the one given to --stats)" % timeout)
    if isinstance(exc, ValueError):
        return "it answered something else than a6fast's live counters"
    return str(exc)


def _add_lazy_commands():
    from .loadgen import bench_command

    main.add_command(bench_command, "bench")


_add_lazy_commands()

if __name__ == "__main__":  # pragma: no cover
    main()
