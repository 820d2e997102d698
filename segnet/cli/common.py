"""What every command shares: option flags generated from ``segnet.Options``, logging and progress bars
set up from ``-q``/``-v``, and the guard that turns errors into one line and an exit code."""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from .. import __version__
from ..errors import OptionError, SegnetError, UsageError, name_options_as_flags
from ..options import Options, check_limits, option_fields

GROUP_TITLES = {
    "network": "network",
    "backend": "backend",
    "format": "other model formats (also read from segnet.json beside the model; the defaults are jetson's "
              "FCN-ResNet18 layout)",
    "draw": "output",
    "run": "runtime",
    "io": "inputs and outputs: folders, videos, cameras and streams; statistics as data",
}


class Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is a one-line UsageError (exit 2), not a usage block, and a misspelt flag is
    named (with the closest real one) before argparse reads it as a flag without a value and shifts its value
    into the positionals (``--alpa 200 in.jpg out.png`` would otherwise be "unrecognized arguments: --alpa
    out.png")."""

    def error(self, message):
        raise UsageError(f"{message} (see --help)")

    def parse_known_args(self, args=None, namespace=None):
        self._check_long_flags(sys.argv[1:] if args is None else list(args))
        return super().parse_known_args(args, namespace)

    def _check_long_flags(self, args: list[str]) -> None:
        """Every ``--word`` before ``--`` must be one of this parser's flags or, as argparse allows, the start
        of one."""
        flags = [s for action in self._actions for s in action.option_strings if s.startswith("--")]
        for arg in args:
            if arg == "--":
                return
            if not arg.startswith("--") or len(arg) < 3:
                continue
            name = arg.split("=", 1)[0]
            if any(flag.startswith(name) for flag in flags) if self.allow_abbrev else name in flags:
                continue
            close = difflib.get_close_matches(name, flags, n=1, cutoff=0.6)
            hint = f": did you mean {close[0]}?" if close else " (see --help)"
            raise UsageError(f"unrecognized option {name}{hint}")


def add_options(parser: argparse.ArgumentParser, *groups: str, only: tuple[str, ...] | None = None) -> None:
    """Flags for the ``Options`` fields of ``groups`` (of those, the fields named in ``only``, when given),
    generated from the fields themselves. Every flag defaults to "not given", so ``options_from`` passes on only
    what the user typed."""
    for group in groups:
        section = parser.add_argument_group(GROUP_TITLES[group])
        for f in option_fields(group):
            meta = f.metadata
            if not meta["cli"] or (only is not None and f.name not in only):
                continue
            flags = ["--" + f.name.replace("_", "-"), *meta["aliases"]]
            if meta["flag"]:
                section.add_argument(*flags, dest=f.name, action="store_true", default=argparse.SUPPRESS,
                                     help=meta["help"])
            else:
                section.add_argument(*flags, dest=f.name, metavar=meta["metavar"], default=argparse.SUPPRESS,
                                     help=meta["help"])


def options_from(args: argparse.Namespace, **extra: Any) -> Options:
    """The ``Options`` a parsed command line gives (validated: a bad value is an OptionError)."""
    names = {f.name for f in option_fields()}
    given = {k: v for k, v in vars(args).items() if k in names}
    return Options.create(**{**given, **extra})


def add_verbosity(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help="no status lines or progress on stderr")
    parser.add_argument("-v", "--verbose", action="store_true", help="also debug detail on stderr")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")


class _StatusHandler(logging.Handler):
    """``segnet: message`` lines on stderr, written around any progress bar on screen."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = f"segnet: {record.getMessage()}"
            if record.exc_info and record.levelno >= logging.ERROR:
                line += "\n" + self.formatter.formatException(record.exc_info) if self.formatter else ""
            _write_line(line)
        except Exception:
            self.handleError(record)


_bars: list = []


def _write_line(line: str) -> None:
    from ..util import redact

    line = redact(line)  # the library names URLs without their secrets; this line holds any it missed
    if _bars:
        from tqdm import tqdm

        tqdm.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr, flush=True)


def configure_output(quiet: bool = False, verbose: bool = False) -> None:
    """Status lines of every part of segnet through one handler: ``-q`` silences them all (errors still
    show), ``-v`` adds debug detail. Progress bars only on a terminal, and not with ``-q``."""
    from ..progress import set_progress_factory

    logger = logging.getLogger("segnet")
    for handler in [h for h in logger.handlers if isinstance(h, _StatusHandler)]:
        logger.removeHandler(handler)
    handler = _StatusHandler()
    handler.setFormatter(logging.Formatter())
    logger.addHandler(handler)
    logger.setLevel(logging.ERROR if quiet else logging.DEBUG if verbose else logging.INFO)
    for stream in (sys.stdout, sys.stderr):  # a file name that is not valid text must not end the run
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    set_progress_factory(None if quiet or not sys.stderr.isatty() else tqdm_bar)


def tqdm_bar(total: int | None, desc: str, unit: str = "it", bytes: bool = False):
    """A progress bar on stderr that status lines are written around."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc or None, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False,
               **({"unit_scale": True, "unit_divisor": 1024} if bytes else {}))
    _bars.append(bar)
    close = bar.close

    def closing():
        if bar in _bars:
            _bars.remove(bar)
        close()

    bar.close = closing
    return bar


def error_line(prog: str, message: str) -> None:
    _write_line(f"{prog}: error: {message}")


def entry_points(prog: str, build_parser: Callable[[], argparse.ArgumentParser],
                 run: Callable[[argparse.Namespace], int]):
    """A command's ``main(argv) -> exit code`` (parse, run, guarded) and ``console()`` (the installed script)."""
    def main(argv: list[str] | None = None) -> int:
        def parsed_and_checked(argv: list[str] | None) -> int:
            args = build_parser().parse_args(argv)  # --help and --version work whatever the environment holds
            check_limits()
            return run(args)

        return guarded(prog, parsed_and_checked, argv)

    def console() -> None:
        sys.exit(main())

    return main, console


def guarded(prog: str, body: Callable[[list[str] | None], int], argv: list[str] | None) -> int:
    """Run ``body(argv)``: user errors become one stderr line and an exit code (2 usage, 1 others), Ctrl-C
    and SIGTERM stop cleanly (temporary files removed) with 130 and 143, a closed stdout ends quietly."""
    name_options_as_flags(True)
    previous = _stop_on_sigterm()
    try:
        return body(argv)
    except OptionError as exc:
        error_line(prog, str(exc))
        return exc.exit_code
    except SegnetError as exc:
        error_line(prog, str(exc))
        return exc.exit_code
    except _Terminated:
        print(f"{prog}: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. --stats piped into head: stop quietly, and keep Python from complaining
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    finally:
        name_options_as_flags(False)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class _Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, ``docker stop``, systemd), handled like Ctrl-C."""


def _stop_on_sigterm():
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum, frame):
        raise _Terminated()

    return signal.signal(signal.SIGTERM, stop)


def compared_options(text: str, *groups: str) -> tuple[dict, dict]:
    """``--compare OTHER``, one meaning in every command: run a second time with the options OTHER changes,
    names from ``groups``. Returns the changes for (the first run, the second): ``"precision=fp16"`` changes
    the second run; a name given twice sets both (``"precision=fp32,precision=int8"``: first fp32, second int8)."""
    allowed = [f.name for group in groups for f in option_fields(group)]
    first: dict = {}
    second: dict = {}
    for part in text.split(","):
        name, equals, value = part.strip().partition("=")
        name = name.strip().replace("-", "_")
        if not equals or not value.strip() or name not in allowed:
            raise UsageError(f"--compare {text}: give options as NAME=VALUE joined by ',' (e.g. precision=fp16 or "
                             f"backend=onnxruntime,precision=fp16); the names are {', '.join(allowed)}")
        if name in first:
            raise UsageError(f"--compare {text}: {name} is given more than twice (once for each run at most)")
        if name in second:
            first[name] = second[name]
        second[name] = value.strip()
    return first, second
