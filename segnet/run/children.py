"""How segnet starts a process of its own (the process executor's workers, a network output's sender): from a
fork server (spawn where there is none), never by forking the run's process, which may hold CUDA, onnxruntime
and reader threads; without the caller's ``__main__``; ending when the run's process ends."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import types
from collections.abc import Iterator, Sequence


def context(preload: Sequence[str] = ()):
    """The multiprocessing context children start from. ``preload``: modules the fork server imports once, so
    that every child forks with them loaded (the first caller to start the server chooses)."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(list(preload))
        return ctx
    return multiprocessing.get_context("spawn")


def prestart(preload: Sequence[str] = ()) -> None:
    """Start the fork server now, so that children fork at once later."""
    ctx = context(preload)
    if ctx.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        with without_main():
            forkserver.ensure_running()


def start(process) -> None:
    """``process.start()``, without the caller's main script (``without_main``)."""
    with without_main():
        process.start()


@contextlib.contextmanager
def without_main() -> Iterator[None]:
    """Start children without the caller's main script. multiprocessing imports the parent's ``__main__`` in
    every child it spawns (and in its fork server), so that objects defined there can be unpickled; segnet's
    children need none (they run segnet's functions on segnet's objects), and a script that calls
    ``segnet.run.run`` without an ``if __name__ == "__main__"`` guard would run again in each of them. While
    a child starts, ``__main__`` is a bare stand-in."""
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


def die_with_parent() -> None:
    """Linux: SIGTERM this child when the process that forked it ends (the fork server, which ends with the
    run's process), so that no child outlives a killed run. Children that must finish a task take SIGTERM as
    "stop after it"; other systems rely on the child's own check of its parent."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent ended before the call
            os.kill(os.getpid(), signal.SIGTERM)


def how_it_ended(process) -> str:
    """How a child ended, for messages: "was killed (signal 9)", "stopped (exit code 1)"."""
    code = process.exitcode
    if code is None:
        return "stopped"
    return f"was killed (signal {-code})" if code < 0 else f"stopped (exit code {code})"
