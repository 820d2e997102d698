"""The engine cache in a folder several users share, and the things that can stand where its files should:
files follow the umask, a second user loads the first one's engine, an engine segnet cannot read is reported
and kept, a directory in place of an engine, record, lock or timing cache is one line, a record nested too
deeply is a damaged record, and waiting for another build has a limit. Stand-ins build and load plain bytes
(no TensorRT), as in test_engine_cache.py; the second user is ``nobody`` in a forked child (root only)."""

from __future__ import annotations

import logging
import os
import shutil

import filelock
import pytest

from segnet import util
from segnet.backends.tensorrt import engine_cache
from segnet.backends.tensorrt.engine_cache import EngineKey, EngineUnusable
from segnet.errors import SegnetError
from tests.support.users import as_other_user, shared_folder

KEY = EngineKey(model_sha256="cd" * 32, flavour="tensorrt", tensorrt_version="10.16.1.11", gpu_name="NVIDIA H200",
                targets=((9, 0),), precision="fp16-flag", input_shape=(1, 3, 256, 512),
                builder_settings=(("workspace", 1 << 30),))
ENGINE = b"ENGINE built by the first user"


def load(data: bytes) -> bytes:
    if not data.startswith(b"ENGINE"):
        raise EngineUnusable("TensorRT cannot deserialize it: bad magic")
    return data


class Builder:
    def __init__(self):
        self.calls = 0

    def __call__(self) -> bytes:
        self.calls += 1
        return ENGINE


def load_or_build(path, builder=None):
    return engine_cache.load_or_build(path, KEY, builder or Builder(), load, building="building")


@pytest.fixture
def umask(monkeypatch):
    """Factory: run the rest of the test under this umask (segnet reads it once per process)."""
    saved = []

    def set_umask(mask: int) -> None:
        monkeypatch.setattr(util, "_mode", None)
        saved.append(os.umask(mask))

    yield set_umask
    if saved:
        os.umask(saved[0])


@pytest.fixture
def shared():
    folder = shared_folder()
    yield folder
    shutil.rmtree(folder)


def mode(path) -> str:
    return oct(path.stat().st_mode & 0o777)


def test_engines_records_and_timing_caches_follow_the_umask(tmp_path, umask):
    umask(0o027)
    engine = tmp_path / "net.engine"
    load_or_build(engine)
    timing = tmp_path / "timing.cache"
    engine_cache.merge_timing_cache(timing, lambda old: old + b"measured")
    assert [mode(p) for p in (engine, tmp_path / "net.engine.json", timing)] == ["0o640"] * 3


def test_a_second_user_in_the_group_loads_the_first_users_engine(shared, umask):
    umask(0o002)  # a folder shared through a group: files group-writable, as for any other file
    engine = shared / "net.engine"
    first = Builder()
    assert load_or_build(engine, first) == ENGINE and first.calls == 1

    def second_user():
        builder = Builder()
        return [load_or_build(engine, builder).decode(), builder.calls]

    assert as_other_user(second_user, gid=0) == [ENGINE.decode(), 0]  # loaded, not rebuilt


def test_an_engine_segnet_cannot_read_is_reported_not_deleted(shared, umask):
    umask(0o002)
    engine = shared / "net.engine"
    load_or_build(engine)
    engine.chmod(0o600)  # made by a user whose umask keeps others out

    def second_user():
        builder = Builder()
        try:
            load_or_build(engine, builder)
        except SegnetError as exc:
            return [str(exc), builder.calls]
        return ["loaded", builder.calls]

    message, calls = as_other_user(second_user, gid=0)
    assert message == (f"cannot read the TensorRT engine {engine}: permission denied (made by another user? use "
                       "another folder with engine_cache or SEGNET_CACHE)")
    assert calls == 0 and engine.read_bytes() == ENGINE


@pytest.mark.parametrize("blocked", ["engine", "record", "lock", "timing cache"])
def test_a_directory_where_a_file_should_be_is_one_line_and_left_alone(tmp_path, blocked):
    engine = tmp_path / "net.engine"
    load_or_build(engine)
    timing = tmp_path / "timing.cache"
    where = {"engine": engine, "record": tmp_path / "net.engine.json", "lock": tmp_path / "net.engine.lock",
             "timing cache": timing}[blocked]
    where.unlink(missing_ok=True)
    (where / "inside").mkdir(parents=True)

    with pytest.raises(SegnetError) as info:
        if blocked == "timing cache":
            engine_cache.merge_timing_cache(timing, lambda old: old + b"x")
        else:
            load_or_build(engine)

    assert str(info.value).startswith(f"{where} is a directory where segnet keeps a ")
    assert str(info.value).endswith(": remove it") and "\n" not in str(info.value)
    assert (where / "inside").is_dir()


def test_a_record_nested_too_deeply_is_a_damaged_record_rebuilt_once(tmp_path, caplog):
    engine = tmp_path / "net.engine"
    load_or_build(engine)
    (tmp_path / "net.engine.json").write_text("[" * 100_000 + "]" * 100_000)
    builder = Builder()

    with caplog.at_level(logging.INFO, logger="segnet"):
        assert load_or_build(engine, builder) == ENGINE

    assert builder.calls == 1
    assert any("its record is damaged" in r.getMessage() for r in caplog.records)
    assert engine_cache.read_engine(engine) == ENGINE


def test_waiting_for_another_build_has_a_limit(tmp_path, monkeypatch):
    engine = tmp_path / "net.engine"
    other = filelock.FileLock(str(engine) + ".lock")  # another process, building
    other.acquire()
    monkeypatch.setenv("SEGNET_LOCK_TIMEOUT", "0.1")
    try:
        with pytest.raises(SegnetError, match=r"^gave up after 0.1 s waiting for another segnet process to build "
                                              rf"the TensorRT engine {engine} \(lock {engine}.lock\); if no segnet "
                                              r"process is still at it, try again, or wait longer with "
                                              r"SEGNET_LOCK_TIMEOUT$"):
            load_or_build(engine)
    finally:
        other.release()
    assert not engine.exists()
