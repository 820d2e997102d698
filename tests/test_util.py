"""The one atomic writer and the one lock, by themselves: a short write is an error, the data is synced
before the rename, temporary names fit where the final name fits, files follow the umask, and a lock in
use is waited for only as long as SEGNET_LOCK_TIMEOUT allows. (The full-disk, SIGTERM and 255-byte cases
through segnet-console are in test_limits.py.)"""

from __future__ import annotations

import os

import filelock
import pytest

from segnet import util
from segnet.errors import SegnetError


def test_a_short_write_is_an_error_and_leaves_nothing(tmp_path):
    class Shortchanging:
        def __init__(self, raw):
            self.raw = raw

        def write(self, data):  # what a full disk can do without saying so
            return self.raw.write(bytes(data)[:-1])

    out = tmp_path / "out.bin"
    with pytest.raises(SegnetError, match=r"^cannot write .*out.bin: wrote 9 of 10 bytes \(disk full\?\)$"):
        util.atomic_write(out, lambda f: util._CheckedFile(Shortchanging(f._raw)).write(b"0123456789"))
    assert list(tmp_path.iterdir()) == []


def test_data_is_synced_before_the_rename(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1])

    util.atomic_write(tmp_path / "x", b"data")

    assert calls == ["fsync", "replace"] and (tmp_path / "x").read_bytes() == b"data"


@pytest.mark.parametrize("name", ["a" * 255, "é" * 127 + "x", "short"])
def test_temporary_names_fit_where_the_name_fits(tmp_path, name):
    tmp = util.temporary_name(tmp_path / name)
    assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp.name.endswith(".tmp")
    assert len(os.fsencode(tmp.name)) <= 255
    tmp.name.encode("utf-8")  # the cut never splits a multi-byte character (no lone surrogates)
    util.atomic_write(tmp_path / name, b"x")
    assert (tmp_path / name).read_bytes() == b"x" and len(list(tmp_path.iterdir())) == 1


def test_new_files_follow_the_umask_not_mkstemps_0600(tmp_path, monkeypatch):
    monkeypatch.setattr(util, "_mode", None)
    previous = os.umask(0o002)
    try:
        util.atomic_write(tmp_path / "shared", b"x")
    finally:
        os.umask(previous)
    assert oct((tmp_path / "shared").stat().st_mode & 0o777) == "0o664"


def test_a_lock_held_elsewhere_is_waited_for_within_the_limit(tmp_path, monkeypatch):
    path = tmp_path / "x.lock"
    waited = []
    holder = filelock.FileLock(str(path))
    holder.acquire()
    monkeypatch.setenv("SEGNET_LOCK_TIMEOUT", "0.2")
    try:
        with pytest.raises(SegnetError, match=r"^gave up after 0.2 s waiting for the test \(lock .*x.lock\)"), \
                util.locked(path, "the test", lambda: waited.append(True)):
            pass
    finally:
        holder.release()
    assert waited == [True]
    with util.locked(path, "the test"):  # free again: taken at once
        pass


def test_a_directory_where_the_lock_should_be_is_one_line(tmp_path):
    (tmp_path / "x.lock").mkdir()
    with pytest.raises(SegnetError, match=r"x.lock is a directory where segnet keeps a lock file: remove it$"), \
            util.locked(tmp_path / "x.lock", "the test"):
        pass
