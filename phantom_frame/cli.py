"""
The C{phantom-frame} command: C{check} validates a configuration file,
C{run} (or a bare FILE) runs the proxy in the foreground as C{twistd -n
phantom-frame --config FILE} does, and C{purge}, C{stats}, C{top} and
C{warm} talk to a running proxy's control site.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from typing import List, NoReturn, Optional, Sequence, TextIO, Tuple, cast

from phantom_frame._version import __version__

__all__ = ["USAGE", "UsageError", "main", "run", "twistd_arguments"]

USAGE = """\
Usage: phantom-frame check FILE
       phantom-frame [run] [TWISTD-OPTIONS] FILE
       phantom-frame purge [--config FILE] [--control ADDRESS] [--server NAME] PATTERN...
       phantom-frame stats [--config FILE] [--control ADDRESS] [--json]
       phantom-frame top [--config FILE] [--control ADDRESS] [--once] [--interval SECONDS] [--keys N]
       phantom-frame warm [--config FILE] [--control ADDRESS] [SERVER]
       phantom-frame --version
       phantom-frame --help

Commands:
  check FILE   validate a configuration file: print every error, numbered,
               or a summary of the listeners and servers followed by
               warnings about risky settings
  run FILE     run the proxy in the foreground, as
               twistd -n phantom-frame --config FILE; twistd's options
               (--logfile, --pidfile, --reactor, --uid, ...) pass through
  purge        drop the cached entries matching each PATTERN (a path or a
               glob such as /blog/*), on every server or on --server NAME
  stats        each server's entries, bytes, hits, misses, hit ratio, stale
               answers and evictions; --json prints the control site's JSON
  top          a live view, refreshed every second: requests per second,
               hit ratio, bytes served and stored, upstream latency and
               errors per server, and the busiest keys; --once prints one
               frame and exits
  warm         fetch every snapshot again (of SERVER, or of every
               pre_generate server), with a progress bar on a terminal

purge, stats, top and warm read the control site's address and token from
the configuration (--config FILE, ./config.toml by default);
--control HOST:PORT (or unix:PATH) gives the address instead.

Exit status: 0 on success; 1 when the configuration is invalid, the control
site cannot be reached or refuses, or a purge or a snapshot failed; 2 on a
usage error.
"""
"""
The command's help text.
"""

#: The configuration file the control commands read by default.
DEFAULT_CONFIG = "config.toml"

COMMANDS = ("check", "run", "purge", "stats", "top", "warm")


class UsageError(Exception):
    """
    The command line is wrong; the message says how.
    """


class _Output(io.TextIOBase):
    """
    A text stream that, once its reader has gone away (C{phantom-frame check
    FILE | head -1}), drops what is written instead of raising.

    @ivar gone: whether the reader went away.
    """

    def __init__(self, stream: TextIO) -> None:
        """
        @param stream: where the text goes.
        """
        super().__init__()
        self._stream = stream
        self.gone = False

    def write(self, text: str) -> int:
        """
        Write and flush C{text}, unless the reader is gone.

        @return: C{len(text)}.
        """
        if not self.gone:
            try:
                self._stream.write(text)
                self._stream.flush()
            except BrokenPipeError:
                self.gone = True
                self._discard()
        return len(text)

    def isatty(self) -> bool:
        """
        @return: whether the stream is a terminal.
        """
        isatty = getattr(self._stream, "isatty", None)
        return bool(isatty and isatty())

    def _discard(self) -> None:
        """
        Point the stream's file descriptor at C{/dev/null}, so that what is
        left in its buffer, flushed at exit, raises nothing either.
        """
        try:
            fd = self._stream.fileno()
        except (AttributeError, OSError, ValueError):
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)


def _usage_error(message: str, stderr: TextIO) -> int:
    """
    @param message: what is wrong with the command line.
    @param stderr: where to print it, with the usage.
    @return: 2, the exit status of a usage error.
    """
    stderr.write(f"phantom-frame: {message}\n\n{USAGE}")
    return 2


# run


def _twistd_options() -> Tuple[List[str], str]:
    """
    @return: twistd's long options (C{"name="} for those taking a value)
        and short options (a letter followed by C{:} takes a value).
    """
    from twisted.scripts.twistd import ServerOptions

    options = ServerOptions()
    return options.longOpt, options.shortOpt


def twistd_arguments(args: Sequence[str]) -> List[str]:
    """
    Turn C{phantom-frame run}'s arguments into twistd's.

    @param args: twistd options and one configuration FILE (or C{--config
        FILE}, C{-c FILE}), in any order.
    @return: C{["--nodaemon", *options, "phantom-frame", "--config",
        FILE]}.
    @raise UsageError: for an option twistd does not know, a missing
        value, no FILE or more than one.
    """
    longs, shorts = _twistd_options()
    passed: List[str] = []
    files: List[str] = []
    index = 0

    def value_of(option: str) -> str:
        if index + 1 >= len(args):
            raise UsageError(f"run: {option} needs a value")
        return args[index + 1]

    while index < len(args):
        arg = args[index]
        if arg == "--":
            files.extend(args[index + 1 :])
            break
        if arg in ("-c", "--config"):
            files.append(value_of(arg))
            index += 2
            continue
        if arg.startswith("--config="):
            files.append(arg[len("--config=") :])
        elif arg.startswith("--"):
            name, eq, _ = arg[2:].partition("=")
            if name + "=" in longs:
                if not eq:
                    passed.append(arg)
                    arg = value_of(arg)
                    index += 1
                passed.append(arg)
            elif name in longs and not eq and name not in ("help", "version"):
                passed.append(arg)
            else:
                raise UsageError(f"run: unknown option {arg!r}")
        elif arg.startswith("-") and len(arg) > 1:
            letter = arg[1]
            where = shorts.find(letter)
            if where < 0 or letter == ":":
                raise UsageError(f"run: unknown option {arg!r}")
            passed.append(arg)
            if shorts[where + 1 : where + 2] == ":" and len(arg) == 2:
                passed.append(value_of(arg))
                index += 1
        else:
            files.append(arg)
        index += 1
    if not files:
        raise UsageError("run: the configuration FILE is missing")
    if len(files) > 1:
        raise UsageError(f"run: one configuration FILE, got {files!r}")
    return ["--nodaemon", *passed, "phantom-frame", "--config", files[0]]


def run(args: Sequence[str], stderr: TextIO) -> int:
    """
    Run the proxy in the foreground with twistd's own runner, in this
    process: the same start-up checks, logging options, signals (SIGHUP
    reloads, SIGTERM stops gracefully and exits 0) and exit status as
    C{twistd -n phantom-frame --config FILE}.

    @param args: see L{twistd_arguments}.
    @return: the exit status once the proxy has stopped.
    @raise UsageError: see L{twistd_arguments}.
    """
    from twisted.python import usage
    from twisted.scripts.twistd import ServerOptions, runApp

    arguments = twistd_arguments(args)
    options = ServerOptions()
    try:
        try:
            options.parseOptions(arguments)
        except usage.UsageError as e:
            stderr.write(f"phantom-frame: {e}\n")
            return 1
        runApp(options)
    except SystemExit as e:
        # An invalid configuration, or a proxy that could not start.
        return e.code if isinstance(e.code, int) else 1
    return 0


# The control commands


class _Parser(argparse.ArgumentParser):
    """
    An argument parser whose errors are L{UsageError}s.
    """

    def error(self, message: str) -> NoReturn:
        """
        @raise UsageError: always, with C{message}.
        """
        raise UsageError(f"{self.prog}: {message}")


def _parser(command: str) -> _Parser:
    parser = _Parser(prog=command, add_help=False)
    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    parser.add_argument("--control", default=None)
    parser.add_argument("--timeout", type=float, default=30.0)
    if command == "purge":
        parser.add_argument("--server", default=None)
        parser.add_argument("patterns", nargs="+", metavar="PATTERN")
    elif command == "stats":
        parser.add_argument("--json", action="store_true")
    elif command == "top":
        parser.add_argument("--once", action="store_true")
        parser.add_argument("--interval", type=float, default=1.0)
        parser.add_argument("--keys", type=int, default=10)
    elif command == "warm":
        parser.add_argument("server", nargs="?", default=None, metavar="SERVER")
    return parser


def _control(command: str, rest: Sequence[str], out: TextIO, err: TextIO) -> int:
    """
    Run one of the commands that talk to the control site.

    @raise UsageError: on a bad command line.
    """
    from phantom_frame.ops import console, top
    from phantom_frame.ops.control_client import ControlError, client_for

    options = _parser(command).parse_args(list(rest))
    if command == "top" and not (options.interval > 0 and 1 <= options.keys <= 1000):
        raise UsageError("top: --interval must be above 0 and --keys from 1 to 1000")
    try:
        client = client_for(options.config, options.control, options.timeout)
    except ControlError as e:
        err.write(f"phantom-frame: {e}\n")
        return 1
    if command == "purge":
        return console.purge(client, options.patterns, options.server, out, err)
    if command == "stats":
        return console.stats(client, options.json, out, err)
    if command == "top":
        return top.top(client, out, err, once=options.once, interval=options.interval, keys=options.keys)
    return console.warm(client, options.server, out, err)


def _is_file(arg: str) -> bool:
    """
    @return: whether a first argument that is no command names a
        configuration file (C{phantom-frame ./config.toml}).
    """
    return os.path.isfile(arg) or arg.endswith(".toml") or os.sep in arg


def main(
    argv: Optional[List[str]] = None,
    stdout: Optional[TextIO] = None,
    stderr: Optional[TextIO] = None,
) -> int:
    """
    Run the C{phantom-frame} command; the console script exits with the
    returned status.

    A reader that goes away early (C{phantom-frame check FILE | head -1})
    stops the output quietly; the status is the command's all the same.

    @param argv: the arguments after the program name; C{sys.argv[1:]} by
        default.
    @param stdout: the output stream; C{sys.stdout} by default.
    @param stderr: the error stream; C{sys.stderr} by default.
    @return: the exit status: 0 success, 1 failure (an invalid
        configuration, an unreachable or refusing control site), 2 usage
        error.
    """
    from phantom_frame.config.check import check

    args = sys.argv[1:] if argv is None else list(argv)
    out = cast(TextIO, _Output(sys.stdout if stdout is None else stdout))
    err = cast(TextIO, _Output(sys.stderr if stderr is None else stderr))
    if not args:
        return _usage_error("a command is required", err)
    command, rest = args[0], args[1:]
    if command in ("-h", "--help", "help"):
        out.write(USAGE)
        return 0
    if command in ("-V", "--version"):
        out.write(f"phantom-frame {__version__}\n")
        return 0
    if command not in COMMANDS:
        if not (command.startswith("-") or _is_file(command)):
            return _usage_error(f"unknown command {command!r}", err)
        command, rest = "run", args
    if rest and rest[0] in ("-h", "--help"):
        out.write(USAGE)
        return 0
    try:
        if command == "run":
            return run(rest, err)
        if command != "check":
            return _control(command, rest, out, err)
    except UsageError as e:
        return _usage_error(str(e), err)
    if rest[:1] == ["--"]:
        rest = rest[1:]
    if not rest:
        return _usage_error("check: the configuration FILE is missing", err)
    if len(rest) > 1:
        return _usage_error(f"check: unexpected arguments {rest[1:]!r}", err)
    return check(rest[0], out, err)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
