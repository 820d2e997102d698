"""segnet-console and a missing pretrained network: downloaded on demand, or a clear error offline."""

import os

from tests.conftest import IMAGES
from tests.support.archives import INFO, closed_port_url, make_archive
from tests.support.cli import assert_one_line_error, run_cli
from tests.support.http_server import ArchiveServer


def _env(tmp_path, mirror):
    return {**os.environ, "SEGNET_MODEL_MIRROR": mirror, "XDG_CACHE_HOME": str(tmp_path / "cache")}


def test_segnet_console_downloads_a_missing_network(tmp_path):
    models = tmp_path / "models"
    with ArchiveServer() as server:
        server.add(f"/zoo/{INFO.archive}.tar.gz", make_archive())
        out = tmp_path / "out.png"
        proc = run_cli("--network=FCN-ResNet18-DeepScene", "--models-dir", models, IMAGES / "trail_0.jpg", out,
                       env=_env(tmp_path, server.url("/zoo")))
        assert proc.returncode == 0, proc.stderr
        assert len(server.gets(f"/zoo/{INFO.archive}.tar.gz")) == 1
    assert f"network {INFO.name} is not installed; downloading it" in proc.stderr
    assert (models / INFO.name / "fcn_resnet18.onnx").is_file() and out.is_file()
    # a second run uses the installed network, with the server gone
    again = run_cli("--network=fcn-resnet18-deepscene-576x320", "--models-dir", models, "--no-download",
                    IMAGES / "trail_0.jpg", tmp_path / "again.png", env=_env(tmp_path, closed_port_url("/")))
    assert again.returncode == 0, again.stderr


def test_no_download_offline_names_the_command(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    proc = run_cli("--network=fcn-resnet18-voc", "--no-download", "--models-dir", models, IMAGES / "object_0.jpg",
                   "--stats", env=_env(tmp_path, closed_port_url("/")))
    assert_one_line_error(proc, 2, "run 'segnet-download-models fcn-resnet18-voc-320x320' (or drop --no-download)")
    assert list(models.iterdir()) == []

