"""The test command's own output: tests/parallel.py runs the suite on pytest-xdist's workers, and ``-q`` keeps
xdist's start-up status ("bringing up nodes...", written twice without a terminal) off the screen."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def test_quiet_test_runs_say_nothing_about_bringing_up_nodes(tmp_path):
    pytest.importorskip("xdist")
    (tmp_path / "test_one.py").write_text("def test_one():\n    assert True\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "pytest", "-p", "tests.parallel", "-p", "no:cacheprovider", "-n", "1",
               "test_one.py"]
    quiet = subprocess.run([*command, "-q"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    assert "1 passed" in quiet.stdout and "bringing up nodes" not in quiet.stdout + quiet.stderr
    plain = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0 and "1 worker [1 item]" in plain.stdout, plain.stdout  # without -q: unchanged
