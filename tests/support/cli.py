"""Running the commands in tests: in this process (fast; what most tests do) or as a real subprocess (the
few end-to-end tests that need a fresh interpreter: signals, first-run messages, installed scripts)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from importlib import import_module

COMMANDS = {
    "segnet-console": "segnet.cli.console",
    "segnet-eval": "segnet.cli.eval",
    "segnet-bench": "segnet.cli.bench",
    "segnet-train": "segnet.cli.train",
    "segnet-download-models": "segnet.cli.download",
    "segnet-build-engine": "segnet.cli.build_engine",
}


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def run_cli(*args, cwd=None, env=None, prog: str = "segnet-console") -> Result:
    """``prog`` with ``args``, called in this process: its exit code and what it wrote to stdout and stderr.
    ``env`` holds variables to set (or, with None values, to unset) for the call."""
    main = import_module(COMMANDS[prog]).main
    out, err = io.StringIO(), io.StringIO()
    saved_env = {k: os.environ.get(k) for k in (env or {})}
    here = os.getcwd()
    try:
        for key, value in (env or {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as exit:  # --help, --version
                code = exit.code if isinstance(exit.code, int) else 0
    finally:
        os.chdir(here)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return Result(code, out.getvalue(), err.getvalue())


def run_process(*args, cwd=None, env=None, prog: str = "segnet-console", timeout: float = 120):
    """``prog`` with ``args`` as a real subprocess of this Python (``env`` replaces the environment)."""
    return subprocess.run([sys.executable, "-m", COMMANDS[prog], *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def assert_one_line_error(proc, code: int, pattern: str = "", prog: str = "segnet-console") -> str:
    """Exit ``code``, exactly one ``prog: error:`` line on stderr containing ``pattern``, no traceback."""
    assert proc.returncode == code, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith(f"{prog}: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    assert pattern.lower() in errors[0].lower(), errors[0]
    return errors[0]
