"""Downloads and installs that cannot run away or leak: archive bombs and member floods stopped while
streaming (for --archive and for the download segnet-console starts), retries only for failures that can
change, every failed try counted, an overall deadline, credentials never shown or stored; download manifests
with wrong value types, and the default network that ships with segnet, in segnet-download-models.

Against a real HTTP server on 127.0.0.1; anything else is refused as if offline."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from segnet.errors import SegnetError
from segnet.zoo import download
from segnet.zoo.download import MANIFEST_NAME, RetryPolicy, install
from segnet.zoo.registry import DEFAULT_NETWORK, NETWORK_FILES, find_network, shipped_dir
from tests.conftest import IMAGES
from tests.support.archives import INFO, make_archive, member
from tests.support.cli import assert_one_line_error, run_cli
from tests.support.http_server import ArchiveServer
from tests.zoo.conftest import FAST

SHIPPED = find_network(DEFAULT_NETWORK)
REPO = Path(__file__).resolve().parents[2]




@pytest.fixture
def server():
    with ArchiveServer() as srv:
        yield srv


@pytest.fixture
def models(tmp_path):
    root = tmp_path / "models"
    (root / "other-network").mkdir(parents=True)
    (root / "other-network" / "notes.txt").write_text("keep me\n")
    return root


def tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


def bomb(size: int) -> bytes:
    """The network's archive with ``size`` zero bytes as its model: a few KB compressed."""
    return make_archive(replace={"fcn_resnet18.onnx": bytes(size)})


def download_cli(*args, **kwargs):
    return run_cli(*map(str, args), prog="segnet-download-models", **kwargs)


# -- archives --------------------------------------------------------------------------------------------


def test_gzip_bomb_from_archive_is_refused_while_streaming(tmp_path, models, monkeypatch):
    monkeypatch.setenv("SEGNET_MAX_ARCHIVE_BYTES", str(1 << 20))
    archive = tmp_path / f"{INFO.archive}.tar.gz"
    archive.write_bytes(bomb(8 << 20))
    assert archive.stat().st_size < 200_000
    before = tree(models)

    proc = download_cli("--models-dir", models, "--archive", archive, INFO.name)

    assert_one_line_error(proc, 1, "it unpacks to more than 1,048,576 bytes; refusing a possible decompression "
                          "bomb (raise the limit with SEGNET_MAX_ARCHIVE_BYTES)", prog="segnet-download-models")
    assert tree(models) == before


def test_gzip_bomb_downloaded_by_segnet_console_is_refused(tmp_path, models, server, monkeypatch):
    monkeypatch.setenv("SEGNET_MAX_ARCHIVE_BYTES", str(1 << 20))
    server.add(f"/zoo/{INFO.archive}.tar.gz", bomb(8 << 20))
    before = tree(models)

    proc = run_cli("--network", INFO.name, "--models-dir", models, IMAGES / "trail_0.jpg", tmp_path / "o.png",
                   env={download.MIRROR_ENV: server.url("/zoo")})

    line = assert_one_line_error(proc, 1, f"could not download {INFO.name}")
    assert "unpacks to more than 1,048,576 bytes" in line
    assert tree(models) == before and not (tmp_path / "o.png").exists()


def test_archive_with_too_many_members_is_refused(tmp_path, models, monkeypatch):
    monkeypatch.setenv("SEGNET_MAX_ARCHIVE_MEMBERS", "20")
    archive = tmp_path / "net.tar.gz"
    archive.write_bytes(make_archive(extra=[member(f"{INFO.archive}/junk{i}.txt", b"x") for i in range(30)]))

    proc = download_cli("--models-dir", models, "--archive", archive, INFO.name)

    assert_one_line_error(proc, 1, "it has more than 20 members (raise the limit with SEGNET_MAX_ARCHIVE_MEMBERS)",
                          prog="segnet-download-models")
    assert not (models / INFO.name).exists()


def test_archive_declared_larger_than_the_limit_is_not_downloaded(models, server, monkeypatch):
    archive = make_archive()
    monkeypatch.setenv("SEGNET_MAX_ARCHIVE_BYTES", str(len(archive) - 1))
    big = server.add("/big.tar.gz", archive)

    with pytest.raises(SegnetError, match="the archive is .* bytes, more than segnet downloads"):
        install(INFO, models, urls=[big], retry=FAST)

    assert len(server.gets("/big.tar.gz")) == 1 and not (models / INFO.name).exists()


# -- retries and deadlines ---------------------------------------------------------------------------------


def test_a_redirect_loop_is_not_retried(models, server):
    server.add("/loop.tar.gz", b"", redirect="/loop.tar.gz")
    good = server.add("/good.tar.gz", make_archive())

    install(INFO, models, urls=[server.url("/loop.tar.gz"), good], retry=FAST)

    assert len(server.gets("/loop.tar.gz")) == 31  # requests follows 30 redirects: one try, not FAST.attempts
    assert (models / INFO.name / "fcn_resnet18.onnx").is_file()


def test_a_try_that_gains_bytes_still_counts_as_a_failure(models, server):
    archive = make_archive()
    url = server.add("/drip.tar.gz", archive, drop_after=4000, drops=1000)  # every answer is cut short

    with pytest.raises(SegnetError, match=r"\(connection dropped, 3 tries\)"):
        install(INFO, models, urls=[url], retry=FAST)

    ranges = [r.headers.get("Range") for r in server.gets("/drip.tar.gz")]
    assert ranges == [None, "bytes=4000-", "bytes=8000-"]  # resumed each time, and gave up after 3


def test_installing_has_an_overall_deadline(models, server):
    archive = make_archive()
    slow = server.add("/slow.tar.gz", archive, drop_after=1000, drops=1000, delay=0.05)
    second = server.add("/second.tar.gz", archive)
    patient = RetryPolicy(attempts=10_000, backoff=0.01, max_backoff=0.01, connect_timeout=5, read_timeout=5,
                          deadline=0.3)

    with pytest.raises(SegnetError) as info:
        install(INFO, models, urls=[slow, second], retry=patient)

    message = str(info.value)
    assert "the download deadline passed (SEGNET_DOWNLOAD_DEADLINE gives more time)" in message
    assert f"{second} (not tried: the 0.3 s deadline had passed" in message
    assert len(server.gets("/slow.tar.gz")) < 100 and server.gets("/second.tar.gz") == []


# -- credentials ---------------------------------------------------------------------------------------------


def test_mirror_credentials_are_used_but_never_shown_or_stored(models, server):
    server.add(f"/zoo/{INFO.archive}.tar.gz", make_archive())
    mirror = server.base_url.replace("http://", "http://user:secret@") + "/zoo"

    proc = download_cli("--models-dir", models, INFO.name, env={download.MIRROR_ENV: mirror})

    assert proc.returncode == 0, proc.stderr
    assert server.gets(f"/zoo/{INFO.archive}.tar.gz")[0].headers["Authorization"].startswith("Basic ")
    assert "secret" not in proc.stderr and "user:" not in proc.stderr
    assert f"from {server.url('/zoo/')}{INFO.archive}.tar.gz" in proc.stderr
    manifest = (models / INFO.name / MANIFEST_NAME).read_text()
    assert "secret" not in manifest and json.loads(manifest)["source"] == server.url(f"/zoo/{INFO.archive}.tar.gz")


def test_mirror_credentials_are_not_in_errors(models, server):
    mirror = server.base_url.replace("http://", "http://user:secret@") + "/missing"

    proc = download_cli("--models-dir", models, INFO.name, env={download.MIRROR_ENV: mirror})

    line = assert_one_line_error(proc, 1, "could not download", prog="segnet-download-models")
    assert f"{server.url('/missing/')}{INFO.archive}.tar.gz (HTTP 404" in line
    assert "secret" not in proc.stderr and "user:" not in proc.stderr


# -- manifests -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("manifest, problem", [
    ({"files": ["fcn_resnet18.onnx"]}, "its files are not a JSON object"),
    ({"files": {"fcn_resnet18.onnx": "abc"}}, "its files lack a sha256 text each"),
    ({"files": {"fcn_resnet18.onnx": {"sha256": 5}}}, "its files lack a sha256 text each"),
    ({"archive_sha256": 7, "files": {}}, "its archive_sha256 is not text"),
    ([1, 2, 3], "it is not a JSON object"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
])
def test_a_manifest_with_wrong_value_types_is_one_line_and_force_repairs_it(models, server, manifest, problem):
    url = server.add(f"/zoo/{INFO.archive}.tar.gz", make_archive())
    env = {download.MIRROR_ENV: server.url("/zoo")}
    assert download_cli("--models-dir", models, "-q", INFO.name, env=env).returncode == 0
    path = models / INFO.name / MANIFEST_NAME
    path.write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))

    line = assert_one_line_error(download_cli("--models-dir", models, "--verify", INFO.name), 1, problem,
                                 prog="segnet-download-models")
    assert "reinstall with --force" in line

    repaired = download_cli("--models-dir", models, "--force", INFO.name, env=env)
    assert repaired.returncode == 0 and "Traceback" not in repaired.stderr, repaired.stderr
    assert json.loads(path.read_text())["source"] == url
    assert download_cli("--models-dir", models, "--verify", INFO.name).stdout == f"{INFO.name}: ok\n"


# -- the default network, which ships with segnet ------------------------------------------------------------------


def test_verify_checks_the_shipped_network_on_a_fresh_clone():
    proc = download_cli("--verify", SHIPPED.name)  # the project's own models/, as a fresh clone has it
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{SHIPPED.name}: ok (as shipped with segnet)\n"


def test_the_committed_checksums_are_those_of_the_shipped_files():
    folder = shipped_dir() / SHIPPED.name
    assert {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in NETWORK_FILES} == \
        dict(SHIPPED.shipped_sha256)


def test_verify_finds_a_modified_copy_of_the_shipped_network(models):
    copy = models / SHIPPED.name
    copy.mkdir()
    for name in NETWORK_FILES:
        (copy / name).symlink_to(shipped_dir() / SHIPPED.name / name)
    (copy / "colors.txt").unlink()
    shutil.copy(shipped_dir() / SHIPPED.name / "colors.txt", copy / "colors.txt")
    with open(copy / "colors.txt", "a") as f:
        f.write("1 2 3\n")

    proc = download_cli("--models-dir", models, "--verify")

    assert_one_line_error(proc, 1, f"{SHIPPED.name}: colors.txt was modified", prog="segnet-download-models")


def test_force_on_the_shipped_network_says_it_ships_with_segnet(models):
    proc = download_cli("--models-dir", models, "--force", "fcn-resnet18-camvid")
    line = assert_one_line_error(proc, 1, f"{SHIPPED.name} ships with segnet", prog="segnet-download-models")
    assert "nothing to download" in line and "no download URL" not in line
    plain = download_cli("--models-dir", models, "fcn-resnet18-camvid")
    assert plain.returncode == 0 and "ships with segnet" in plain.stderr and "nothing to download" in plain.stderr


def test_all_skips_the_shipped_network(models, server):
    server.add(f"/zoo/{INFO.archive}.tar.gz", make_archive())
    proc = download_cli("--models-dir", models, "--all", "--force", env={download.MIRROR_ENV: server.url("/zoo")})
    assert f"skipping {SHIPPED.name}: it ships with segnet" in proc.stderr
    assert f"/zoo/{SHIPPED.archive}.tar.gz" not in [r.path for r in server.requests]
    assert (models / INFO.name / "fcn_resnet18.onnx").is_file()  # the others were tried (most are not served)


def test_list_gives_the_default_networks_measured_accuracy(models):
    out = download_cli("--models-dir", models, "--list").stdout
    row = next(line for line in out.splitlines() if line.startswith(SHIPPED.name))
    assert "91.9%*" in row and "ships with segnet (" in row
    assert f"* {SHIPPED.name}: measured by segnet-eval on CamVid val" in out



def test_waiting_for_another_download_has_a_limit(models, server, monkeypatch):
    url = server.add("/n.tar.gz", make_archive())
    monkeypatch.setenv("SEGNET_LOCK_TIMEOUT", "0.1")
    expected = rf"^gave up after 0.1 s waiting for another process installing {INFO.name} \(lock .*\.lock\);"
    # the lock held as by another process downloading the same network
    with download._network_lock(INFO, models), pytest.raises(SegnetError, match=expected):
        install(INFO, models, urls=[url], retry=FAST)
    assert server.gets("/n.tar.gz") == [] and not (models / INFO.name).exists()


# -- stalled mirrors and the processes waiting for them ---------------------------------------------------------


def test_a_stalled_mirror_is_left_after_the_stall_limit_in_one_line(models, server, monkeypatch):
    """A server that accepts and never answers costs SEGNET_DOWNLOAD_STALL, not tries x the read timeout."""
    stalled = server.add(f"/zoo/{INFO.archive}.tar.gz", b"", stall=True)
    monkeypatch.setenv("SEGNET_MODEL_MIRROR", server.url("/zoo"))
    monkeypatch.setenv("SEGNET_DOWNLOAD_STALL", "0.5")
    before = tree(models)
    proc = download_cli("--models-dir", models, INFO.name)
    line = assert_one_line_error(proc, 1, prog="segnet-download-models")
    assert (f"tried {stalled} (no answer: nothing received for 0.5 s (a stalled server; SEGNET_DOWNLOAD_STALL "
            "gives more time))") in line
    assert len(server.gets(f"/zoo/{INFO.archive}.tar.gz")) == 1  # nothing will come: not asked again
    assert tree(models) == before


def test_a_process_waiting_for_a_stalled_download_gives_up_with_it(tmp_path, models, server):
    """Two real processes: the first gives up at its deadline and releases the lock; the second, which waited,
    says why in one line instead of trying the same stalled mirror again."""
    path = f"/zoo/{INFO.archive}.tar.gz"
    server.add(path, b"", stall=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "SEGNET_MODEL_MIRROR": server.url("/zoo"),
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("SEGNET_MODELS", None)
    before = tree(models)
    command = [sys.executable, "-m", "segnet.cli.download", "--models-dir", str(models), INFO.name]
    first = subprocess.Popen(command, env={**env, "SEGNET_DOWNLOAD_DEADLINE": "8"}, stderr=subprocess.PIPE,
                             text=True)
    try:
        assert server.wait_for_gets(path, 1, timeout=60)
        second = subprocess.Popen(command, env={**env, "SEGNET_DOWNLOAD_DEADLINE": "600"},
                                  stderr=subprocess.PIPE, text=True)
        try:
            said = second.stderr.readline()  # blocks until the second process says what it does
            assert said == f"segnet: waiting for another process installing {INFO.name}\n", said
            first_err = first.communicate(timeout=60)[1]
            gave_up = time.monotonic()
            second_err = said + second.communicate(timeout=60)[1]
            waited_after = time.monotonic() - gave_up
        finally:
            second.kill()
    finally:
        first.kill()
    first_line = assert_one_line_error(subprocess.CompletedProcess([], first.returncode, "", first_err), 1,
                                       prog="segnet-download-models")
    assert "(the download deadline passed (SEGNET_DOWNLOAD_DEADLINE gives more time))" in first_line
    assert "(not tried: the 8 s deadline had passed" in first_line  # no other mirror was reached
    second_line = assert_one_line_error(subprocess.CompletedProcess([], second.returncode, "", second_err), 1,
                                        prog="segnet-download-models")
    assert second_line == (f"segnet-download-models: error: another process gave up installing {INFO.name} while "
                           f"this one waited for it, so this one did not try again: {first_line.split(': ', 2)[2]}")
    assert waited_after < 30  # it ended with the first, not after its own 600 s
    assert len(server.gets(path)) == 1 and tree(models) == before


def test_waiting_for_another_download_is_bounded_by_the_download_deadline(models, server, monkeypatch):
    url = server.add("/n.tar.gz", make_archive())
    monkeypatch.setenv("SEGNET_DOWNLOAD_DEADLINE", "0.2")
    monkeypatch.setenv("SEGNET_MODEL_MIRROR", url.rsplit("/", 1)[0])
    with download._network_lock(INFO, models):  # held as by another process downloading the same network
        proc = download_cli("--models-dir", models, INFO.name)
    assert_one_line_error(proc, 1, f"gave up after 0.2 s waiting for another process installing {INFO.name} (lock ",
                          prog="segnet-download-models")
    assert proc.stderr.rstrip().endswith("or wait longer with SEGNET_DOWNLOAD_DEADLINE")
    assert server.gets("/n.tar.gz") == [] and not (models / INFO.name).exists()


# -- nothing derived in the models folder ---------------------------------------------------------------------


def test_a_download_leaves_only_the_network_in_the_models_folder(tmp_path, models, server, monkeypatch):
    server.add(f"/zoo/{INFO.archive}.tar.gz", make_archive())
    monkeypatch.setenv("SEGNET_MODEL_MIRROR", server.url("/zoo"))
    before = tree(models)
    proc = download_cli("--models-dir", models, INFO.name)
    assert proc.returncode == 0, proc.stderr
    added = sorted(set(tree(models)) - set(before))
    assert added == sorted([INFO.name, *(f"{INFO.name}/{n}" for n in (*NETWORK_FILES, MANIFEST_NAME))])
    assert list((tmp_path / "cache" / "segnet" / "locks").glob(f"{INFO.name}-*.lock"))  # the lock: user cache
    assert download_cli("--models-dir", models, "--verify", INFO.name).stdout == f"{INFO.name}: ok\n"


def test_verify_reports_files_that_are_not_part_of_a_network(models, server, monkeypatch):
    server.add(f"/zoo/{INFO.archive}.tar.gz", make_archive())
    monkeypatch.setenv("SEGNET_MODEL_MIRROR", server.url("/zoo"))
    assert download_cli("--models-dir", models, INFO.name).returncode == 0
    (models / INFO.name / "fcn_resnet18.fp16.0123456789abcdef.ort1.20.onnx").write_bytes(b"x" * 100)
    (models / INFO.name / ".fcn_resnet18.lock").touch()
    copy = models / SHIPPED.name  # the shipped network's files, and an FP16 copy an older segnet left
    copy.mkdir()
    for name in NETWORK_FILES:
        (copy / name).symlink_to(shipped_dir() / SHIPPED.name / name)
    (copy / "fcn_resnet18.fp16.onnx").touch()
    before = tree(models)

    proc = download_cli("--models-dir", models, "--verify", INFO.name, SHIPPED.name)

    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        f"segnet-download-models: error: {INFO.name}: unexpected files in {models / INFO.name}: .fcn_resnet18.lock, "
        "fcn_resnet18.fp16.0123456789abcdef.ort1.20.onnx (not part of the network; segnet keeps what it derives in "
        "the user cache: remove them)",
        f"segnet-download-models: error: {SHIPPED.name}: unexpected file in {copy}: fcn_resnet18.fp16.onnx (not "
        "part of the network; segnet keeps what it derives in the user cache: remove them)"]
    assert tree(models) == before  # reported, not removed
