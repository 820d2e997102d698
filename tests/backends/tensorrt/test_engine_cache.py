"""The TensorRT engine cache without TensorRT: keys, where engines go, atomic writes, the build lock between
real processes, and damaged engines. The builder and loader are stand-ins that deal in plain bytes."""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from segnet.backends.tensorrt import engine_cache
from segnet.backends.tensorrt.engine_cache import EngineKey, EngineLoadFailed, EngineUnusable
from segnet.errors import SegnetError
from segnet.util import atomic_write

REPO = Path(__file__).resolve().parents[2]

KEY = EngineKey(model_sha256="ab" * 32, flavour="tensorrt", tensorrt_version="10.16.1.11", gpu_name="NVIDIA H200",
                targets=((9, 0),), precision="fp16-flag", input_shape=(1, 3, 256, 512),
                builder_settings=(("workspace", 1 << 30), ("optimization_level", 3)))
RTX_KEY = dataclasses.replace(KEY, flavour="tensorrt_rtx", tensorrt_version="1.7.1.116", gpu_name="", targets=(),
                              precision="fp16-model")


def run_python(code: str, **env) -> subprocess.Popen:
    """A separate Python process running ``code`` with segnet importable."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO), **env})


def loader(data: bytes) -> bytes:
    """Stands in for TensorRT's deserializer: refuses anything that is not one of our fake engines."""
    if not data.startswith(b"ENGINE"):
        raise EngineUnusable("TensorRT cannot deserialize it: bad magic")
    return data


class Builder:
    def __init__(self, data: bytes = b"ENGINE v1"):
        self.data, self.calls = data, 0

    def __call__(self) -> bytes:
        self.calls += 1
        return self.data


def test_key_digest_changes_with_every_field():
    changed = {"model_sha256": "cd" * 32, "flavour": "tensorrt_rtx", "tensorrt_version": "11.4.0.106",
               "gpu_name": "Orin", "targets": ((8, 7),), "precision": "fp32", "input_shape": (1, 3, 512, 1024),
               "builder_settings": (("workspace", 1 << 28), ("optimization_level", 3)), "format_version": 99}
    digests = {KEY.digest()} | {dataclasses.replace(KEY, **{f: v}).digest() for f, v in changed.items()}
    assert len(digests) == len(changed) + 1
    assert dataclasses.replace(KEY).digest() == KEY.digest()


def test_engine_name_is_readable_and_unique():
    name = KEY.engine_name("models/x/fcn_resnet18.onnx")
    assert name == f"fcn_resnet18.onnx.fp16-flag.trt10.16.1.11.sm90.{KEY.digest()}.engine"


def test_rtx_engine_name_says_flavour_and_targets_not_the_building_machine():
    portable = RTX_KEY.engine_name("fcn_resnet18.onnx")
    assert portable == f"fcn_resnet18.onnx.fp16-model.rtx1.7.1.116.portable.{RTX_KEY.digest()}.engine"
    two = dataclasses.replace(RTX_KEY, targets=((8, 9), (12, 0)))
    assert two.engine_name("fcn_resnet18.onnx").startswith("fcn_resnet18.onnx.fp16-model.rtx1.7.1.116.sm89-sm120.")
    assert two.digest() != RTX_KEY.digest() != dataclasses.replace(RTX_KEY, flavour="tensorrt").digest()
    assert engine_cache.parse_targets_tag("sm89-sm120") == ((8, 9), (12, 0))
    assert engine_cache.parse_targets_tag("portable") == ()
    assert engine_cache.parse_targets_tag("sm89-x") is None


def test_runtime_cache_sits_beside_its_engine_one_per_gpu(tmp_path):
    engine = tmp_path / RTX_KEY.engine_name("fcn_resnet18.onnx")
    path = engine_cache.runtime_cache_path(engine, "NVIDIA GeForce RTX 4090", (8, 9))
    assert path.parent == tmp_path
    assert path.name == engine.name.removesuffix(".engine") + ".NVIDIA-GeForce-RTX-4090.sm89.runtime.cache"
    assert engine_cache.read_runtime_cache(path) == b""
    engine_cache.save_runtime_cache(path, b"kernels")
    assert engine_cache.read_runtime_cache(path) == b"kernels"


def test_timing_cache_is_per_tensorrt_version_and_gpu():
    assert engine_cache.timing_cache_name("10.16.1.11", "NVIDIA H200", (9, 0)) == \
        "timing.trt10.16.1.11.NVIDIA-H200.sm90.cache"
    assert engine_cache.timing_cache_name("11.4.0.106", "NVIDIA H200", (9, 0)) != \
        engine_cache.timing_cache_name("10.16.1.11", "NVIDIA H200", (9, 0))


def test_engines_go_to_the_user_cache_never_beside_the_model(tmp_path, monkeypatch):
    """The model's folder may be a checkout's models/, where git and a wheel build would pick them up."""
    monkeypatch.delenv("SEGNET_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    model = tmp_path / "net" / "fcn_resnet18.onnx"
    model.parent.mkdir()
    folder = engine_cache.cache_dir(model)
    assert folder == tmp_path / "xdg" / "segnet" / "engines" and folder.is_dir()
    assert list(model.parent.iterdir()) == []


def test_an_unwritable_user_cache_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.delenv("SEGNET_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with pytest.raises(SegnetError, match="is not writable .set one with engine_cache or SEGNET_CACHE.$"):
        engine_cache.cache_dir(tmp_path / "m.onnx", writable=lambda p: False)


@pytest.mark.skipif(not Path("/proc/version").is_file(), reason="needs Linux /proc")
def test_folder_even_root_cannot_write_falls_back_for_real(tmp_path, monkeypatch):
    # tests may run as root, for whom chmod does not stop writes; nobody can create files in /proc
    monkeypatch.delenv("SEGNET_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert not engine_cache.is_writable(Path("/proc"))
    assert engine_cache.cache_dir("/proc/version") == tmp_path / "xdg" / "segnet" / "engines"


def test_is_writable_probes_for_real(tmp_path):
    (tmp_path / "file").write_text("x")
    assert engine_cache.is_writable(tmp_path)
    assert not engine_cache.is_writable(tmp_path / "file" / "sub")  # under a regular file: not even root
    assert list(tmp_path.iterdir()) == [tmp_path / "file"]  # the probe leaves nothing behind


def test_flag_beats_environment_beats_model_folder(tmp_path, monkeypatch):
    model = tmp_path / "net" / "fcn_resnet18.onnx"
    monkeypatch.setenv("SEGNET_CACHE", str(tmp_path / "env"))
    assert engine_cache.cache_dir(model) == tmp_path / "env"
    assert engine_cache.cache_dir(model, tmp_path / "flag") == tmp_path / "flag"
    assert (tmp_path / "env").is_dir() and (tmp_path / "flag").is_dir()


def test_unusable_override_is_a_one_line_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SegnetError, match="choose another with engine_cache or SEGNET_CACHE") as info:
        engine_cache.cache_dir(tmp_path / "m.onnx", tmp_path / "file" / "engines")
    assert "\n" not in str(info.value)


def status_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("segnet")]


def test_builds_once_then_loads_from_cache(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="segnet")
    path, build = tmp_path / "m.engine", Builder()
    for _ in range(2):
        assert engine_cache.load_or_build(path, KEY, build, loader, building="building X") \
            == b"ENGINE v1"
    assert build.calls == 1
    assert status_lines(caplog) == ["building X", f"loaded TensorRT engine from cache {path}"]
    assert path.read_bytes() == b"ENGINE v1" and path.with_name("m.engine.json").is_file()


@pytest.mark.parametrize("damage, reason", [
    (lambda p: p.write_bytes(b"ENGINE v0"), "checksum"),
    (lambda p: p.write_bytes(p.read_bytes()[:4]), "truncated"),
    (lambda p: p.with_name(p.name + ".json").unlink(), "record is missing"),
    (lambda p: p.with_name(p.name + ".json").write_text("{not json"), "record is damaged"),
    (lambda p: p.unlink(), "engine file is missing"),
])
def test_damaged_engine_is_reported_removed_and_rebuilt_once(tmp_path, damage, reason, caplog):
    caplog.set_level(logging.INFO, logger="segnet")
    path = tmp_path / "m.engine"
    engine_cache.load_or_build(path, KEY, Builder(), loader, building="building X")
    damage(path)
    build = Builder(b"ENGINE v2")
    assert engine_cache.load_or_build(path, KEY, build, loader, building="building X") \
        == b"ENGINE v2"
    assert build.calls == 1
    lines = status_lines(caplog)
    (unusable,) = [line for line in lines if "unusable" in line]
    assert reason in unusable and "\n" not in unusable
    assert lines[-1] == "building X"
    assert engine_cache.read_engine(path) == b"ENGINE v2"


def test_engine_tensorrt_refuses_is_rebuilt_once(tmp_path, caplog):
    # an engine from another TensorRT build: intact on disk, refused by the deserializer
    caplog.set_level(logging.INFO, logger="segnet")
    path = tmp_path / "m.engine"
    engine_cache.save_engine(path, b"OLD", KEY)
    build = Builder()
    assert engine_cache.load_or_build(path, KEY, build, loader, building="b") == b"ENGINE v1"
    assert build.calls == 1 and "bad magic" in status_lines(caplog)[0]


def test_engine_the_machine_cannot_load_is_reported_and_kept(tmp_path, caplog):
    # an intact engine refused because of the driver: rebuilding would not help, deleting it would lose it
    caplog.set_level(logging.INFO, logger="segnet")
    path = tmp_path / "m.engine"
    engine_cache.save_engine(path, b"ENGINE v1", KEY)

    def driver_problem(data):
        raise EngineLoadFailed("TensorRT cannot load the engine on this machine: the CUDA driver is too old")

    build = Builder()
    with pytest.raises(EngineLoadFailed) as info:
        engine_cache.load_or_build(path, KEY, build, driver_problem, building="b")
    assert str(info.value) == ("TensorRT cannot load the engine on this machine: the CUDA driver is too old "
                               f"(the engine {path} is kept)")
    assert build.calls == 0 and engine_cache.read_engine(path) == b"ENGINE v1"
    assert not any("unusable" in line for line in status_lines(caplog))


def test_fresh_engine_the_machine_cannot_load_is_kept_too(tmp_path):
    def driver_problem(data):
        raise EngineLoadFailed("cannot load the engine on this machine: no driver")

    with pytest.raises(EngineLoadFailed, match="no driver"):
        engine_cache.load_or_build(tmp_path / "m.engine", KEY, Builder(), driver_problem, building="b")
    assert engine_cache.read_engine(tmp_path / "m.engine") == b"ENGINE v1"


def test_build_into_cache_builds_once_and_loads_nothing(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="segnet")
    path, build = tmp_path / "m.engine", Builder()
    assert engine_cache.build_into_cache(path, RTX_KEY, build, building="building X") is True
    assert engine_cache.build_into_cache(path, RTX_KEY, build, building="building X") is False
    assert build.calls == 1 and status_lines(caplog) == ["building X"]
    path.write_bytes(b"ENGINE v0")  # damaged: built again
    assert engine_cache.build_into_cache(path, RTX_KEY, build, building="building X") is True
    assert engine_cache.read_engine(path) == b"ENGINE v1" and build.calls == 2


def test_fresh_engine_that_does_not_load_is_an_error_not_a_loop(tmp_path):
    build = Builder(b"GARBAGE")
    with pytest.raises(SegnetError, match="cannot load the engine it just made"):
        engine_cache.load_or_build(tmp_path / "m.engine", KEY, build, loader, building="b")
    assert build.calls == 1


def test_failed_build_leaves_no_engine(tmp_path):
    def build():
        raise SegnetError("parser said no")

    with pytest.raises(SegnetError, match="parser said no"):
        engine_cache.load_or_build(tmp_path / "m.engine", KEY, build, loader, building="b")
    assert not (tmp_path / "m.engine").exists()


def test_write_that_fails_midway_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "m.engine"
    path.write_bytes(b"old")

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(SegnetError, match="no space left on the device"):
        atomic_write(path, b"new" * 1000)
    assert path.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize("existing", [None, b"old engine"])
def test_process_killed_mid_write_leaves_no_partial_engine(tmp_path, existing):
    path = tmp_path / "m.engine"
    if existing:
        path.write_bytes(existing)
    # the process dies (no cleanup, no exception handlers) after writing the data, before the rename
    child = run_python(f"""
        import os
        from pathlib import Path
        from segnet.util import atomic_write
        os.fsync = lambda fd: os._exit(9)
        atomic_write(Path({str(path)!r}), b"x" * 10_000_000)
    """)
    child.communicate(timeout=60)
    assert child.returncode == 9
    assert (path.read_bytes() == existing) if existing else not path.exists()


BUILD_IN_CHILD = """
    import logging, sys, time
    from pathlib import Path
    from segnet.backends.tensorrt import engine_cache
    logging.basicConfig(level=logging.INFO)
    sys.path.insert(0, {tests!r})
    from test_engine_cache import KEY, loader

    folder = Path({folder!r})

    def build():
        (folder / "build-started").touch()
        with open(folder / "builds.log", "a") as log:
            log.write("built\\n")
        time.sleep(2)
        return b"ENGINE built"

    data = engine_cache.load_or_build(folder / "m.engine", KEY, build, loader, building="building X")
    print(data.decode())
"""


def test_second_process_waits_for_the_first_build_then_loads_it(tmp_path):
    code = BUILD_IN_CHILD.format(tests=str(Path(__file__).parent), folder=str(tmp_path))
    first = run_python(code)
    deadline = time.monotonic() + 60
    while not (tmp_path / "build-started").exists():
        assert time.monotonic() < deadline and first.poll() is None, first.communicate()
        time.sleep(0.05)
    second = run_python(code)
    (out1, err1), (out2, err2) = first.communicate(timeout=120), second.communicate(timeout=120)
    assert first.returncode == second.returncode == 0, (err1, err2)
    assert (tmp_path / "builds.log").read_text() == "built\n"
    assert out1 == out2 == "ENGINE built\n"
    assert "building X" in err1 and "waiting for another segnet process" in err2
    assert "loaded TensorRT engine from cache" in err2 and "building X" not in err2


def test_concurrent_timing_cache_merges_keep_every_entry(tmp_path):
    path = tmp_path / "timing.cache"
    code = f"""
        import sys, time
        from pathlib import Path
        from segnet.backends.tensorrt import engine_cache

        def merge(current: bytes) -> bytes:
            time.sleep(0.2)  # widen the window in which an unlocked merge would lose entries
            return current + sys.argv[-1].encode() + b"\\n"

        engine_cache.merge_timing_cache(Path({str(path)!r}), merge)
    """
    children = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), f"entry{i}"],
                                 env={**os.environ, "PYTHONPATH": str(REPO)}) for i in range(6)]
    assert [c.wait(timeout=60) for c in children] == [0] * 6
    assert sorted(path.read_text().split()) == [f"entry{i}" for i in range(6)]
    assert engine_cache.read_timing_cache(tmp_path / "none") == b""
