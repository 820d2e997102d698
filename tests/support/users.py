"""A second user for tests of shared folders: run a function as ``nobody`` in a forked child.

Only root can switch users, which is what CI runs as; elsewhere the tests that need it are skipped with the
reason. The child's result comes back through a pipe as JSON; an exception in it fails the test with its text.

The child is forked, so it has every module the parent imported; what it imports later it must read itself,
as ``nobody``, which fails when the checkout or the virtual environment sits in a folder other users cannot
enter (a 0700 home, ``mktemp -d``). ``warm_up`` imports what a command will need first, and the child checks
that it can reach every path the test names, skipping with the reason when it cannot.
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


def warm_up(fn: Callable[[], object]) -> None:
    """Run ``fn`` (e.g. the command the second user will run, on files the first user can read) so that every
    module it imports lazily is imported before the fork: the second user then needs no file of the checkout."""
    need_root()
    fn()


def as_other_user(fn: Callable[[], object], gid: int = OTHER_GID, needs: tuple[Path, ...] = ()) -> object:
    """``fn()`` run as user ``nobody`` in a forked child, in group ``gid`` (``nobody``; 0 puts the second user
    in the first one's group, as users sharing a folder are): its JSON-able result. The test is skipped, with
    the reason, when the second user cannot reach a path of ``needs`` or cannot import what ``fn`` imports; it
    fails with the child's error when ``fn`` raised anything else."""
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
            os.chdir("/")  # the test's folder may be one only the first user can enter (give absolute paths)
            result: object
            unreachable = [str(path) for path in needs if not _reachable(Path(path))]
            if unreachable:
                result = {_UNREACHABLE: unreachable}
            else:
                try:
                    result = {_RESULT: fn()}
                except ImportError as exc:  # code the parent had not imported, in a folder nobody may enter
                    result = {_UNREACHABLE: [f"{exc.name or 'a module'} ({type(exc).__name__}: {exc})"]}
                except BaseException as exc:  # reported to the parent, which fails the test with it
                    result = {_RAISED: f"{type(exc).__name__}: {exc}"}
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
    answer = json.loads(b"".join(chunks))
    if _UNREACHABLE in answer:
        pytest.skip(f"the second user (nobody) cannot reach {', '.join(answer[_UNREACHABLE])}: the checkout or its "
                    "virtual environment is in a folder other users cannot enter")
    if _RAISED in answer:
        pytest.fail(f"as the second user: {answer[_RAISED]}")
    return answer[_RESULT]


_RESULT, _RAISED, _UNREACHABLE = "result", "raised", "unreachable"


def _reachable(path: Path) -> bool:
    """Whether this process (the second user) can open ``path`` (a file) or list it (a folder)."""
    try:
        if path.is_dir():
            os.listdir(path)
        else:
            with open(path, "rb"):
                pass
        return True
    except OSError:
        return False
