"""A built wheel, installed into a fresh virtual environment, runs the README's first command from a
folder outside the source tree: the default network travels inside it as package data.

The wheel is installed with ``--no-deps`` and finds its dependencies (numpy, onnxruntime, ...) on
``PYTHONPATH`` from the test environment, so the test needs no network; ``segnet`` itself can only come
from the new environment (an editable install's path hook is not on ``PYTHONPATH``), which it checks.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args, **kwargs):
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300, **kwargs)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def _setuptools_is_new_enough() -> bool:
    try:
        from importlib.metadata import version

        return int(version("setuptools").split(".")[0]) >= 77
    except Exception:
        return False


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # the installed setuptools when it is new enough; else pip fetches one into an isolated build environment
    isolation = ["--no-build-isolation"] if _setuptools_is_new_enough() else []
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation, "-w", out, ROOT, cwd=out)
    (found,) = out.glob("segnet-*.whl")
    return found


def test_the_wheel_holds_every_package_and_the_default_network(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = {str(p.parent.relative_to(ROOT)) for p in (ROOT / "segnet").rglob("__init__.py")}
    assert {f"{p}/__init__.py" for p in packages} <= names  # pyproject.toml's package list is complete
    network = "segnet/models/fcn-resnet18-camvid-480x352"
    assert {f"{network}/{f}" for f in ("fcn_resnet18.onnx", "classes.txt", "colors.txt", "MODEL_CARD.md")} <= names
    # the shipped files by name, nothing else left in models/ (an FP16 copy, a lock)
    from segnet.zoo.registry import NETWORK_FILES, SHIPPED_EXTRA_FILES, SHIPPED_FOLDERS

    source = Path(__file__).resolve().parents[1] / "models" / "fcn-resnet18-camvid-480x352"
    calibration = {f"{folder}/{p.name}" for folder in SHIPPED_FOLDERS for p in (source / folder).iterdir()}
    assert {n for n in names if n.startswith("segnet/models/")} == \
        {f"{network}/{f}" for f in (*NETWORK_FILES, *SHIPPED_EXTRA_FILES, *calibration)}
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


def test_installed_wheel_runs_the_first_command_outside_the_source_tree(wheel, tmp_path):
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    _run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel)
    deps = os.pathsep.join(p for p in sys.path if p.endswith("site-packages"))  # numpy, onnxruntime, ...
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": deps, "XDG_DATA_HOME": str(tmp_path / "data"),
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("SEGNET_MODELS", None)
    where = _run(python, "-c", "import segnet; print(segnet.__file__)", cwd=elsewhere, env=env).stdout
    assert Path(where.strip()).is_relative_to(venv)
    done = _run(venv / "bin" / "segnet-console", ROOT / "data" / "images" / "camvid_0.jpg", "camvid_0_overlay.jpg",
                cwd=elsewhere, env=env)
    assert (elsewhere / "camvid_0_overlay.jpg").stat().st_size > 10_000
    assert "fcn-resnet18-camvid-480x352 (480x352, 11 classes)" in done.stderr
    assert not (tmp_path / "data").exists()  # the shipped network was used where it was installed
