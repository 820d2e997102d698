"""A pytest plugin (``-p tests.parallel`` in pyproject.toml): runs the suite in a worker per core, at most
four, each test module in one worker (so module fixtures such as the Ray cluster are made once), wherever
pytest-xdist is installed (the ``test`` extra installs it) and the command line does not choose itself
(``-n 0`` runs in one process). Without pytest-xdist, tests run in one process as usual."""

from __future__ import annotations

import importlib.util


def pytest_load_initial_conftests(early_config, parser, args: list[str]) -> None:
    if importlib.util.find_spec("xdist") is None:
        return
    chosen = any(a.startswith(("-n", "--numprocesses", "--dist")) or a.endswith("no:xdist") for a in args)
    if not chosen:
        args[:0] = ["-n", "auto", "--maxprocesses", "4", "--dist", "loadscope"]


#: The modules that take longest (Ray's start-up, real streams, real networks), handed out first so that no
#: worker is left running one of them alone at the end.
SLOW_FIRST = ("tests/run/test_ray.py", "tests/cli/test_console_guarantees.py", "tests/run/test_processes.py",
              "tests/cli/test_console_streams.py", "tests/zoo/test_download_limits.py", "tests/test_training.py",
              "tests/cli/test_golden.py", "tests/zoo/test_download.py", "tests/test_wheel.py")


def pytest_collection_modifyitems(session, config, items) -> None:
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable: the rest keep order


def pytest_sessionstart(session) -> None:
    """With ``-q`` and no terminal, pytest-xdist writes its worker status twice, and in quiet mode that status
    is only "bringing up nodes..." (at start-up and again once the workers have collected): quiet means no such
    line. (Runs before xdist's own ``pytest_sessionstart``, which starts the workers.)"""
    reporter = session.config.pluginmanager.getplugin("terminaldistreporter")
    if reporter is not None and session.config.option.verbose < 0:
        reporter.ensure_show_status = lambda: None
