"""A second user for tests of shared folders: run a function as ``nobody`` in a forked child.

Only root can switch users, which is what CI runs as; elsewhere the tests that need it are skipped with the
reason. The child's result (or the text of its exception) comes back through a pipe as JSON.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

OTHER_UID = OTHER_GID = 65534  # nobody


def need_root() -> None:
    if not hasattr(os, "fork") or os.geteuid() != 0:
        pytest.skip("needs root, to run part of the test as a second user")


def shared_folder() -> Path:
    """A new folder every user may enter and write (``/tmp`` itself is, pytest's ``tmp_path`` is not)."""
    folder = Path(tempfile.mkdtemp(prefix="segnet-shared-", dir="/tmp"))
    folder.chmod(stat.S_IRWXU | stat.S_IRWXG | stat.S_IRWXO)
    return folder


def as_other_user(fn: Callable[[], object], gid: int = OTHER_GID) -> object:
    """``fn()`` run as user ``nobody`` in a forked child, in group ``gid`` (``nobody``; 0 puts the second user
    in the first one's group, as users sharing a folder are): its JSON-able result, or
    ``{"raised": "Type: message"}`` when it raised."""
    need_root()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(OTHER_UID)
            try:
                result: object = fn()
            except BaseException as exc:  # reported to the parent, which asserts on it
                result = {"raised": f"{type(exc).__name__}: {exc}"}
            os.write(write, json.dumps(result).encode())
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 1 << 16):
        chunks.append(chunk)
    os.close(read)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the second user's process failed"
    return json.loads(b"".join(chunks))
