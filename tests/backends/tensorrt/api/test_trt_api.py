"""API conformance of ``segnet/backends/tensorrt/`` against the real TensorRT Python bindings, newest 10.x
and 11.x, and TensorRT-RTX's, on a machine without a GPU.

``.ci/trt-bindings.sh`` fetches the TensorRT bindings wheels into ``$SEGNET_TRT_BINDINGS`` (default
``~/.cache/segnet/trt-bindings``). Each wheel is unpacked here, and the three libraries its
``tensorrt.so`` links against are replaced by stand-ins compiled with gcc that export the nine C symbols the
bindings need (returning null). ``import tensorrt_bindings`` then works and shows TensorRT's real classes,
enums and signatures; nothing can be built. TensorRT-RTX's real libraries are on PyPI: ``.ci/run`` installs
them with its bindings into their own folder (``$SEGNET_TRT_RTX``, default ``.trt-rtx`` in the project), which
the subprocess gets on its ``PYTHONPATH``. Without the wheels or the folder the tests skip, except in CI
(``CI=true``), where that is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from tests.backends.tensorrt.api import apiscan
from tests.support.models import make_fcn

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[3]
PACKAGE = REPO / "segnet" / "backends" / "tensorrt"
#: The modules that touch TensorRT; ``api.py`` declares the one table for all of them.
SOURCES = [PACKAGE / name for name in ("api.py", "builder.py", "runner.py", "recipe.py", "__init__.py")]
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "segnet" / "trt-bindings"
BINDINGS = Path(os.environ.get("SEGNET_TRT_BINDINGS") or CACHE)
IN_CI = os.environ.get("CI", "").lower() == "true"
RTX = Path(os.environ.get("SEGNET_TRT_RTX") or REPO / ".trt-rtx")

STAND_IN = """
#include <stddef.h>
void *createInferBuilder_INTERNAL(void *logger, int version) { return NULL; }
void *createInferRuntime_INTERNAL(void *logger, int version) { return NULL; }
void *createInferRefitter_INTERNAL(void *engine, void *logger, int version) { return NULL; }
void *createNvOnnxParser_INTERNAL(void *network, void *logger, int version) { return NULL; }
void *createNvOnnxParserRefitter_INTERNAL(void *refitter, void *logger, int version) { return NULL; }
int getNvOnnxParserVersion(void) { return 0; }
void *getPluginRegistry(void) { return NULL; }
void *getBuilderPluginRegistry(int kind) { return NULL; }
_Bool initLibNvInferPlugins(void *logger, const char *namespace_) { return 0; }
"""


def unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: run .ci/trt-bindings.sh first)")
    pytest.skip(reason)


def newest_wheel(major: str) -> Path | None:
    """The newest ``tensorrt_cu*_bindings`` wheel of that major version for this Python."""
    tag = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    found = {}
    for wheel in BINDINGS.glob(f"tensorrt_cu*_bindings-{major}.*-{tag}-*.whl"):
        version = wheel.name.split("-")[1]
        found[tuple(int(p) for p in re.findall(r"\d+", version))] = wheel
    return found[max(found)] if found else None


def rtx_folder() -> tuple[str, str, str]:
    """(PYTHONPATH, LD_LIBRARY_PATH, version) of the TensorRT-RTX folder ``.ci/run`` installs."""
    found = sorted(RTX.glob("tensorrt_rtx_cu*_bindings-*.dist-info"))
    if not (RTX / "tensorrt_rtx_bindings").is_dir() or not (RTX / "tensorrt_rtx_libs").is_dir() or not found:
        unavailable(f"no TensorRT-RTX libraries and bindings in {RTX} (.ci/run installs them there)")
    return str(RTX), str(RTX / "tensorrt_rtx_libs"), found[-1].name.removesuffix(".dist-info").split("-")[1]


@pytest.fixture(scope="session", params=["10", "11", "rtx"], ids=["trt10", "trt11", "rtx"])
def bindings(request, tmp_path_factory):
    """(PYTHONPATH, LD_LIBRARY_PATH, version) that make this version's ``tensorrt_bindings`` (or TensorRT-RTX's
    ``tensorrt_rtx_bindings``) importable."""
    major = request.param
    if major == "rtx":
        return rtx_folder()
    if not BINDINGS.is_dir():
        unavailable(f"no TensorRT bindings wheels folder {BINDINGS}")
    wheel = newest_wheel(major)
    if wheel is None:
        unavailable(f"no TensorRT {major}.x bindings wheel for this Python in {BINDINGS}")
    for tool in ("gcc", "readelf"):
        if shutil.which(tool) is None:
            unavailable(f"{tool} is needed to make the stand-in TensorRT libraries")
    root = tmp_path_factory.mktemp(f"trt{major}")
    site, libs = root / "site", root / "libs"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    libs.mkdir()
    (root / "stand_in.c").write_text(STAND_IN)
    dynamic = subprocess.run(["readelf", "-d", str(site / "tensorrt_bindings" / "tensorrt.so")],
                             capture_output=True, text=True, check=True).stdout
    needed = re.findall(r"\[(libnv(?:infer|onnxparser|infer_plugin)\.so\.\d+)\]", dynamic)
    assert sorted(n.rsplit(".so.", 1)[0] for n in needed) == ["libnvinfer", "libnvinfer_plugin", "libnvonnxparser"]
    assert {n.rsplit(".", 1)[1] for n in needed} == {major}, needed  # the SONAMEs carry the major version
    for soname in needed:
        subprocess.run(["gcc", "-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o", str(libs / soname),
                        str(root / "stand_in.c")], check=True)
    return str(site), str(libs), wheel.name.split("-")[1]


def is_rtx(bindings) -> bool:
    return bindings[0] == str(RTX)


def conformance(bindings, source: Path, *extra: str) -> dict:
    """Run conformance.py against one version's bindings; its JSON result."""
    site, libs, _ = bindings
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([site, str(HERE), str(REPO)]), "LD_LIBRARY_PATH": libs}
    module = ["--module", "tensorrt_rtx_bindings"] if is_rtx(bindings) else []
    done = subprocess.run([sys.executable, str(HERE / "conformance.py"), str(source), *module, *extra], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def product(bindings, tmp_path_factory):
    """The real backend module against one version, with a tiny model to try ``open_backend`` on."""
    model = make_fcn(tmp_path_factory.mktemp("model") / "fcn.onnx")
    source = tmp_path_factory.mktemp("source") / "tensorrt_sources.py"
    source.write_text(backend_source())
    return conformance(bindings, source, "--model", str(model))


def backend_source() -> str:
    """The TensorRT sub-package's modules as one source, for the scanner and the conformance check."""
    return "\n".join(path.read_text() for path in SOURCES)


# --- the product ---------------------------------------------------------------------------------------------

def test_backend_lists_every_tensorrt_name_it_uses_and_gates_version_code():
    assert apiscan.check_table(backend_source()) == []


def test_backend_fits_the_real_bindings(bindings, product):
    _, _, version = bindings
    assert product["version"] == version
    assert product["path"] == ("rtx" if is_rtx(bindings) else version.split(".")[0])
    assert product["problems"] == []


def test_backend_imports_and_reports_tensorrt_not_usable_cleanly(bindings, product):
    _, _, version = bindings
    reason = product["unusable_reason"]
    if is_rtx(bindings):  # the real library: its runtime is made; CUDA (no package, no GPU here) is what is missing
        assert product["module"] == "tensorrt_rtx_bindings"
        assert reason.startswith("CUDA is not usable: ") and "\n" not in reason
    else:
        assert product["module"] == "tensorrt_bindings"
        assert reason.startswith(f"TensorRT {version} not usable: it could not create its runtime")
        assert "\n" not in reason
    assert product["tensorrt_error"] == f"--backend tensorrt cannot run: {reason}"
    assert product["auto_shape"] == [1, 5, 1, 2] and product["auto_description"].startswith("onnxruntime")
    if product["nvidia_gpu_present"]:
        assert product["auto_stderr"] == f"segnet: TensorRT not used, running on onnxruntime: {reason}\n"
    else:  # no advice to install TensorRT where no NVIDIA GPU could run it
        assert product["auto_stderr"] == ""


# --- the check bites: deliberate mistakes in stand-in backend sources -------------------------------------------

FP16_FLAG_ON_BOTH_PATHS = '''
TRT_VARIABLES = {"config": "IBuilderConfig"}
TRT_API = {
    "common": {"__version__": None},
    "10": {"BuilderFlag.FP16": None, "IBuilderConfig.set_flag": ("flag",)},
    "11": {"BuilderFlag.FP16": None, "IBuilderConfig.set_flag": ("flag",)},
    "rtx": {"BuilderFlag.FP16": None, "IBuilderConfig.set_flag": ("flag",)},
}

def configure(trt, config):
    if api_path(trt) == "10":
        _fp16_trt10(trt, config)
    elif api_path(trt) == "11":
        _fp16_trt11(trt, config)
    elif api_path(trt) == "rtx":
        _fp16_rtx(trt, config)

def api_path(trt):
    return "10" if trt.__version__.startswith("10.") else "11"

def _fp16_trt10(trt, config):
    config.set_flag(trt.BuilderFlag.FP16)

def _fp16_trt11(trt, config):  # the mistake: TensorRT 11 has no FP16 builder flag
    config.set_flag(trt.BuilderFlag.FP16)

def _fp16_rtx(trt, config):  # the same mistake: neither has TensorRT-RTX
    config.set_flag(trt.BuilderFlag.FP16)
'''


def write(tmp_path, source: str) -> Path:
    path = tmp_path / "fake_backend.py"
    path.write_text(textwrap.dedent(source))
    return path


def test_fp16_flag_on_the_11_and_rtx_paths_fails_against_those_only(bindings, tmp_path):
    assert apiscan.check_table(FP16_FLAG_ON_BOTH_PATHS) == []  # the table is honest; TensorRT 11 is not there
    problems = conformance(bindings, write(tmp_path, FP16_FLAG_ON_BOTH_PATHS))["problems"]
    _, _, version = bindings
    if version.startswith("10."):
        assert problems == []
    else:
        assert problems == [f"BuilderFlag.FP16 does not exist in TensorRT {version}"]


def test_wrong_arguments_fail_against_the_bindings(bindings, tmp_path):
    source = '''
    TRT_VARIABLES = {"shared_cache": "ITimingCache", "engine": "ICudaEngine"}
    TRT_API = {"common": {"ITimingCache.combine": ("input_cache",), "ICudaEngine.get_tensor_name": ("name",)}}

    def merge(shared_cache, timing_cache, engine):
        shared_cache.combine(timing_cache)  # ignore_mismatch has no default
        return engine.get_tensor_name("input_0")  # takes an index
    '''
    assert apiscan.check_table(textwrap.dedent(source)) == []
    problems = conformance(bindings, write(tmp_path, source))["problems"]
    assert len(problems) == 2 and all("does not fit" in p for p in problems)


def test_name_removed_in_11_fails_there_on_the_common_path(bindings, tmp_path):
    source = '''
    TRT_VARIABLES = {"builder": "Builder"}
    TRT_API = {"common": {"Builder.platform_has_fast_fp16": None, "NetworkDefinitionCreationFlag.EXPLICIT_BATCH": None}}

    def fast(trt, builder):
        return builder.platform_has_fast_fp16, trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH
    '''
    problems = conformance(bindings, write(tmp_path, source))["problems"]
    _, _, version = bindings
    assert problems == ([] if version.startswith("10.") else [
        f"Builder.platform_has_fast_fp16 does not exist in TensorRT {version}",
        f"NetworkDefinitionCreationFlag.EXPLICIT_BATCH does not exist in TensorRT {version}"])


# --- the table check bites without any bindings -------------------------------------------------------------

def test_version_specific_name_on_the_common_path_is_caught():
    source = FP16_FLAG_ON_BOTH_PATHS.replace("def _fp16_trt11(trt, config):", "def fp16_anywhere(trt, config):")
    problems = apiscan.check_table(source)
    assert any("BuilderFlag.FP16 is used on the common path but not listed for it in TRT_API "
               "(listed for 10, 11, rtx only)" in p for p in problems)


def test_ungated_call_of_version_code_is_caught():
    source = FP16_FLAG_ON_BOTH_PATHS.replace('    if api_path(trt) == "10":\n        _fp16_trt10(trt, config)\n',
                                             '    _fp16_trt10(trt, config)\n    if api_path(trt) != "10":\n'
                                             '        _fp16_trt10(trt, config)\n')
    problems = [p for p in apiscan.check_table(source) if "_fp16_trt10() is TensorRT 10 code, called without" in p]
    assert len(problems) == 2  # neither unguarded nor under a != test


@pytest.mark.parametrize("source, expected", [
    pytest.param('TRT_VARIABLES = {"engine": "ICudaEngine"}\nTRT_API = {"common": {}}\n'
                 "def f(engine):\n    return engine.num_io_tensors\n",
                 "ICudaEngine.num_io_tensors is used on the common path but not listed", id="unlisted"),
    pytest.param('TRT_VARIABLES = {"context": "IExecutionContext"}\n'
                 'TRT_API = {"common": {"IExecutionContext.execute_async_v3": ("stream_handle",)}}\n'
                 "class B:\n    def run(self):\n        self.context.execute_async_v3(1, 2)\n",
                 "called with 2 positional", id="arguments"),
    pytest.param('TRT_VARIABLES = {}\nTRT_API = {"common": {"Builder": ("logger",)}}\n',
                 "lists Builder, which nothing on that path uses", id="stale"),
    pytest.param('TRT_VARIABLES = {}\nTRT_API = {"common": {"ILogger": None, "ILogger.log": ("severity", "msg")}}\n'
                 "def make(trt):\n    class L(trt.ILogger):\n        def log(self, msg):\n            pass\n",
                 "ILogger.log overridden with ('msg',)", id="override"),
])
def test_table_mistakes_are_caught(source, expected):
    assert any(expected in p for p in apiscan.check_table(source)), apiscan.check_table(source)
