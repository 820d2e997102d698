"""Downloading and installing zoo networks, against a real HTTP server on 127.0.0.1.

The archives are built here in jetson's layout (``<Archive>/{fcn_resnet18.onnx,classes.txt,colors.txt}``)
around the shared tiny stride-32 model of ``tests/support/models.py``. Every failure test checks that the
models directory is exactly as it was before.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from segnet.cli.download import main
from segnet.errors import SegnetError
from segnet.zoo import download
from segnet.zoo.download import MANIFEST_NAME, RetryPolicy, install, verify
from segnet.zoo.registry import NETWORK_FILES, NETWORKS
from tests.support.archives import INFO, check_installed_model, closed_port_url, make_archive, member, network_files
from tests.support.http_server import ArchiveServer
from tests.zoo.conftest import FAST

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def archive() -> bytes:
    return make_archive()


# -- environment ---------------------------------------------------------------------------------------




@pytest.fixture
def server():
    with ArchiveServer() as srv:
        yield srv


@pytest.fixture
def models(tmp_path) -> Path:
    """A models directory that already holds something, so 'unchanged' means something."""
    root = tmp_path / "models"
    (root / "other-network").mkdir(parents=True)
    (root / "other-network" / "fcn_resnet18.onnx").write_bytes(b"not ours")
    (root / "notes.txt").write_text("keep me\n")
    return root


def tree(root: Path, skip=()) -> dict[str, str]:
    """Every path under ``root`` (hidden ones too) with its content hash, link target or 'dir'."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel.split("/")[0] in skip:
            continue
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def assert_installed(root: Path, archive_bytes: bytes) -> None:
    folder = root / INFO.name
    expected = {}
    with tarfile.open(fileobj=io.BytesIO(archive_bytes), mode="r:gz") as tar:
        for name in NETWORK_FILES:
            expected[name] = tar.extractfile(f"{INFO.archive}/{name}").read()
    for name, data in expected.items():
        assert (folder / name).read_bytes() == data
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    assert manifest["archive_sha256"] == hashlib.sha256(archive_bytes).hexdigest()
    assert verify(INFO, root) == []


def assert_no_temp_files(root: Path) -> None:
    leftovers = [p.name for p in root.iterdir() if p.name.startswith(".")]
    assert leftovers == []


# -- downloading ---------------------------------------------------------------------------------------


def test_download_installs_network_and_manifest(server, models, archive):
    url = server.add("/net.tar.gz", archive)

    folder = install(INFO, models, urls=[url], retry=FAST)

    assert folder == models / INFO.name
    assert_installed(models, archive)
    assert sorted(p.name for p in folder.iterdir()) == sorted([*NETWORK_FILES, MANIFEST_NAME])
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    assert manifest["source"] == url
    assert set(manifest["files"]) == set(NETWORK_FILES)
    check_installed_model(folder / "fcn_resnet18.onnx")
    assert_no_temp_files(models)


def test_installed_network_is_not_downloaded_again(server, models, archive):
    url = server.add("/net.tar.gz", archive)
    install(INFO, models, urls=[url], retry=FAST)

    install(INFO, models, urls=[url], retry=FAST)

    assert len(server.gets("/net.tar.gz")) == 1


def test_dropped_connection_resumes_with_range_request(server, models, archive):
    url = server.add("/net.tar.gz", archive, drop_after=20_000)

    install(INFO, models, urls=[url], retry=FAST)

    first, second = server.gets("/net.tar.gz")
    assert "Range" not in first.headers
    assert second.headers["Range"] == "bytes=20000-"
    assert second.headers["If-Range"] == '"v1"'
    assert_installed(models, archive)
    assert_no_temp_files(models)


def test_server_ignoring_range_restarts_download(server, models, archive):
    url = server.add("/net.tar.gz", archive, drop_after=20_000, ignore_range=True)

    install(INFO, models, urls=[url], retry=FAST)

    assert server.gets("/net.tar.gz")[1].headers["Range"] == "bytes=20000-"
    assert_installed(models, archive)


@pytest.mark.parametrize("status, tries", [(404, 1), (500, FAST.attempts)])
def test_http_error_falls_back_to_next_url(server, models, archive, status, tries):
    bad = server.add("/primary.tar.gz", b"", status=status)
    good = server.add("/mirror.tar.gz", archive)

    install(INFO, models, urls=[bad, good], retry=FAST)

    assert len(server.gets("/primary.tar.gz")) == tries  # 404 is final, 500 is retried
    assert_installed(models, archive)
    assert json.loads((models / INFO.name / MANIFEST_NAME).read_text())["source"] == good


def test_silent_server_times_out_and_next_url_is_used(server, models, archive):
    slow = server.add("/slow.tar.gz", archive, delay=1.0)
    good = server.add("/mirror.tar.gz", archive)
    impatient = RetryPolicy(attempts=2, backoff=0.01, connect_timeout=1, read_timeout=0.2)

    install(INFO, models, urls=[slow, good], retry=impatient)

    assert len(server.gets("/slow.tar.gz")) == 2
    assert_installed(models, archive)


def test_status_goes_to_the_segnet_logger_and_nothing_is_printed(server, models, archive, capsys, caplog):
    url = server.add("/net.tar.gz", archive)

    with caplog.at_level(logging.INFO, logger="segnet"):
        install(INFO, models, urls=[url], retry=FAST)

    assert capsys.readouterr() == ("", "")
    assert [r.getMessage() for r in caplog.records if r.name.startswith("segnet")] == [
        f"downloading {INFO.name} from {url}",
        f"installed {INFO.name} in {models / INFO.name}",
    ]


def test_damaged_archive_falls_back_to_next_url(server, models, archive):
    bad = server.add("/primary.tar.gz", archive[: len(archive) // 2])
    good = server.add("/mirror.tar.gz", archive)

    install(INFO, models, urls=[bad, good], retry=FAST)

    assert_installed(models, archive)
    assert_no_temp_files(models)


def test_mirror_env_is_tried_before_registry_urls(server, models, archive, monkeypatch, capsys):
    server.add(f"/zoo/{INFO.archive}.tar.gz", archive)
    monkeypatch.setenv(download.MIRROR_ENV, server.url("/zoo/"))

    assert main(["--models-dir", str(models), "--quiet", "fcn-resnet18-deepscene"]) == 0

    assert_installed(models, archive)
    assert [r.path for r in server.requests] == [f"/zoo/{INFO.archive}.tar.gz"]


def test_mirror_may_be_a_local_folder(tmp_path, models, archive):
    folder = tmp_path / "share"
    folder.mkdir()
    (folder / f"{INFO.archive}.tar.gz").write_bytes(archive)

    install(INFO, models, mirror=str(folder), retry=FAST)

    assert_installed(models, archive)


def test_concurrent_processes_download_once(server, models, archive):
    url = server.add("/net.tar.gz", archive, delay=2.0)  # long enough for both processes to meet
    child = (
        "import logging, sys; from pathlib import Path; from segnet.zoo.download import install; "
        "logging.basicConfig(level=logging.INFO); "
        "from segnet.zoo import find_network; "
        "install(find_network(sys.argv[1]), Path(sys.argv[2]), urls=[sys.argv[3]])"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    procs = [
        subprocess.Popen([sys.executable, "-c", child, INFO.name, str(models), url], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [(p.wait(60), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()

    assert [rc for rc, _ in results] == [0, 0], results
    assert len(server.gets("/net.tar.gz")) == 1
    assert any("waiting for another process" in err for _, err in results), results
    assert_installed(models, archive)
    assert_no_temp_files(models)


def test_stale_temp_files_of_a_killed_process_are_swept(server, models, archive):
    stale = models / f".{INFO.name}.abc123.part"
    stale.write_bytes(b"partial")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    url = server.add("/net.tar.gz", archive)

    install(INFO, models, urls=[url], retry=FAST)

    assert not stale.exists()


# -- failures leave the models directory as it was --------------------------------------------------------


def install_fails(models: Path, urls: list[str], **kwargs) -> str:
    """Run a failing install and check the models directory is byte-for-byte unchanged; return the error."""
    before = tree(models)
    with pytest.raises(SegnetError) as caught:
        install(INFO, models, urls=urls, retry=FAST, **kwargs)
    assert tree(models) == before
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("cut", ["half", "trailer"])
def test_truncated_gzip_is_refused(server, models, archive, cut):
    data = archive[: len(archive) // 2] if cut == "half" else archive[:-4]  # trailer: CRC and size
    url = server.add("/net.tar.gz", data)

    message = install_fails(models, [url])

    assert "gzip" in message and url in message


UNSAFE = {
    "parent": [member("../evil.txt", b"owned")],
    "absolute": [member("/tmp/segnet-evil-absolute.txt", b"owned")],
    "symlink": [member(f"{INFO.archive}/link", kind=tarfile.SYMTYPE, link="../../.."),
                member(f"{INFO.archive}/link/evil.txt", b"owned")],
    "hardlink": [member(f"{INFO.archive}/hard", kind=tarfile.LNKTYPE, link="../../etc/passwd")],
    "device": [member(f"{INFO.archive}/null", kind=tarfile.CHRTYPE)],
}


@pytest.mark.parametrize("kind", list(UNSAFE))
def test_unsafe_archive_members_are_refused(server, models, tmp_path, kind):
    url = server.add("/net.tar.gz", make_archive(extra=UNSAFE[kind]))
    outside = tree(tmp_path, skip={"models", "cache"})

    message = install_fails(models, [url])

    assert "unsafe archive member" in message
    assert tree(tmp_path, skip={"models", "cache"}) == outside
    assert not Path("/tmp/segnet-evil-absolute.txt").exists()


def test_archive_missing_colors_txt_is_refused(server, models):
    url = server.add("/net.tar.gz", make_archive(omit={"colors.txt"}))

    message = install_fails(models, [url])

    assert f"{INFO.archive}/colors.txt" in message


def test_files_in_wrong_folder_are_refused(server, models):
    url = server.add("/net.tar.gz", make_archive(folder="Some-Other-Net"))

    assert f"{INFO.archive}/fcn_resnet18.onnx" in install_fails(models, [url])


def test_invalid_onnx_model_is_refused(server, models):
    url = server.add("/net.tar.gz", make_archive(replace={"fcn_resnet18.onnx": b"\x08\x07garbage" * 50}))

    assert "not a valid ONNX model" in install_fails(models, [url])


def test_html_page_instead_of_archive_is_refused(server, models):
    url = server.add("/net.tar.gz", b"<html>Sign in to box.com</html>")

    assert "not an intact gzip file" in install_fails(models, [url])


def test_offline_error_names_every_url_tried(models):
    urls = [closed_port_url("/a.tar.gz"), closed_port_url("/b.tar.gz")]

    message = install_fails(models, urls)

    for url in urls:
        assert url in message
    assert "Connection refused" in message
    assert f"--archive FILE {INFO.name}" in message and download.MIRROR_ENV in message


def test_failed_reinstall_keeps_previous_install(server, models, archive):
    install(INFO, models, urls=[server.add("/net.tar.gz", archive)], retry=FAST)

    install_fails(models, [server.add("/bad.tar.gz", archive[:100])], force=True)

    assert_installed(models, archive)


def test_models_dir_created_for_a_failed_install_is_removed(tmp_path):
    root = tmp_path / "new" / "models"

    with pytest.raises(SegnetError):
        install(INFO, root, urls=[closed_port_url()], retry=FAST)

    assert not (tmp_path / "new").exists()


def test_force_reinstall_replaces_modified_files(server, models, archive):
    url = server.add("/net.tar.gz", archive)
    install(INFO, models, urls=[url], retry=FAST)
    (models / INFO.name / "colors.txt").write_text("0 0 0\n")
    (models / INFO.name / "stale.engine").write_bytes(b"old engine")

    install(INFO, models, urls=[url], retry=FAST, force=True)

    assert_installed(models, archive)
    assert not (models / INFO.name / "stale.engine").exists()
    assert_no_temp_files(models)


# -- the segnet-download-models command ---------------------------------------------------------------


def test_cli_offline_prints_one_error_line_naming_registry_urls(models, monkeypatch, capsys):
    mirror = closed_port_url("/zoo")
    monkeypatch.setenv(download.MIRROR_ENV, mirror)
    before = tree(models)

    code = main(["--models-dir", str(models), "--quiet", "fcn-resnet18-deepscene"])

    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("segnet-download-models: error: could not download")
    for url in (f"{mirror}/{INFO.archive}.tar.gz", INFO.url, INFO.mirror_url):
        assert url in err
    assert err.index(mirror) < err.index(INFO.url) < err.index(INFO.mirror_url)
    assert tree(models) == before


def test_cli_verify_detects_modified_file(server, models, archive, capsys):
    install(INFO, models, urls=[server.add("/net.tar.gz", archive)], retry=FAST)

    assert main(["--models-dir", str(models), "--verify"]) == 0
    shipped = NETWORKS[0].name  # the default network: checked against the checksums committed with it
    assert capsys.readouterr().out == f"{shipped}: ok (as shipped with segnet)\n{INFO.name}: ok\n"

    with open(models / INFO.name / "colors.txt", "a") as f:
        f.write("1 2 3\n")
    assert main(["--models-dir", str(models), "--verify", "fcn-resnet18-deepscene"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"segnet-download-models: error: {INFO.name}: colors.txt was modified")


def test_cli_verify_without_manifest_says_so(models, capsys):
    folder = models / INFO.name
    folder.mkdir()
    for name, data in network_files().items():
        (folder / name).write_bytes(data)

    assert main(["--models-dir", str(models), "--verify"]) == 1
    assert MANIFEST_NAME in capsys.readouterr().err


def test_cli_list_shows_every_network_and_install_state(server, models, archive, capsys):
    install(INFO, models, urls=[server.add("/net.tar.gz", archive)], retry=FAST)

    assert main(["--models-dir", str(models), "--list"]) == 0

    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"models directory: {models}"
    rows = {line.split()[0]: line for line in out.splitlines()[2:-1] if not line.startswith((" ", "*", "accuracy:"))}
    assert out.splitlines()[-1] == "a network's classes and colours: segnet-console --network NAME --legend legend.png"
    assert set(rows) == {info.name for info in NETWORKS}
    assert "576x320" in rows[INFO.name] and "DeepScene" in rows[INFO.name] and "96.4%" in rows[INFO.name]
    assert "installed (" in rows[INFO.name] and "KiB)" in rows[INFO.name]
    assert rows["fcn-resnet18-voc-320x320"].endswith("not installed")
    assert "    aliases: fcn-resnet18-voc, fcn-resnet18-pascal-voc, fcn-resnet18-pascal-voc-320x320" in out


@pytest.mark.parametrize("with_name", [True, False])
def test_cli_installs_from_local_archive(tmp_path, models, archive, with_name):
    path = tmp_path / f"{INFO.archive}.tar.gz"
    path.write_bytes(archive)

    names = ["fcn-resnet18-deepscene-576x320"] if with_name else []
    assert main(["--models-dir", str(models), "--quiet", "--archive", str(path), *names]) == 0

    assert_installed(models, archive)
    assert json.loads((models / INFO.name / MANIFEST_NAME).read_text())["source"] == f"file:{path.name}"


def test_cli_damaged_local_archive_fails_cleanly(tmp_path, models, archive, capsys):
    path = tmp_path / "net.tar.gz"
    path.write_bytes(gzip.compress(b"not a tar file" * 100))
    before = tree(models)

    assert main(["--models-dir", str(models), "--quiet", "--archive", str(path), INFO.name]) == 1

    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a readable tar archive" in err
    assert tree(models) == before


@pytest.mark.parametrize("argv, words", [
    ([], "name the networks"),
    (["no-such-net"], "unknown network"),
    (["--list", "fcn-resnet18-voc"], "--list takes no"),
    (["--all", "fcn-resnet18-voc"], "not both"),
    (["--archive", "x.tar.gz", "fcn-resnet18-voc", "fcn-resnet18-sun"], "one network"),
    (["--archive", "mystery.tar.gz"], "cannot tell which network"),
    (["--verify", "--list"], "cannot be combined"),
    (["--bogus"], "unrecognized option --bogus"),
])
def test_cli_usage_errors_exit_2_with_one_line(models, capsys, argv, words):
    assert main(["--models-dir", str(models), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("segnet-download-models: error: ") and words in err
