"""Image URLs through segnet-console's entry point, against a real HTTP server on 127.0.0.1: failures in words
(connection refused, no answer, name not found, TLS), said before the network loads, and one fetch per image."""

from __future__ import annotations

import socket

import pytest
from PIL import Image

from tests.conftest import GRID, IMAGES, one_hot
from tests.support.cli import assert_one_line_error, run_cli
from tests.support.http_server import ArchiveServer
from tests.support.streams import free_port


@pytest.fixture
def broken_model(tmp_path):
    """A --model that fails to load: a URL error that shows instead proves the URL was tried first."""
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"not a model")
    return path


def test_a_refused_connection_says_so_before_the_network_loads(broken_model, tmp_path):
    url = f"http://127.0.0.1:{free_port(socket.SOCK_STREAM)}/pics/city.jpg"
    proc = run_cli("--model", broken_model, url, tmp_path / "out.jpg")
    assert_one_line_error(proc, 1, f"{url}: cannot fetch it: connection refused")
    assert "cannot load model" not in proc.stderr and not (tmp_path / "out.jpg").exists()


def test_a_server_that_never_answers_says_how_long_it_waited(broken_model, tmp_path):
    with ArchiveServer() as server:
        url = server.add("/slow.jpg", b"", delay=30)  # accepts, then says nothing
        proc = run_cli("--model", broken_model, "--input-timeout", "0.5", url, tmp_path / "out.jpg")
    assert_one_line_error(proc, 1, f"{url}: cannot fetch it: no answer in 0.5 s")
    assert "cannot load model" not in proc.stderr


def test_an_unknown_host_name_is_name_not_found(broken_model, tmp_path):
    url = "http://segnet-no-such-host.invalid/city.jpg"  # .invalid never resolves (RFC 6761)
    proc = run_cli("--model", broken_model, url, tmp_path / "out.jpg")
    assert_one_line_error(proc, 1, f"{url}: cannot fetch it: name not found (segnet-no-such-host.invalid)")


def test_tls_to_a_server_that_speaks_plain_http_is_a_tls_problem(broken_model, tmp_path):
    with ArchiveServer() as server:
        server.add("/city.jpg", (IMAGES / "city_0.jpg").read_bytes())
        url = server.url("/city.jpg").replace("http://", "https://")
        proc = run_cli("--model", broken_model, url, tmp_path / "out.jpg")
    assert_one_line_error(proc, 1, f"{url}: cannot fetch it: TLS/certificate problem")


def test_a_good_url_is_fetched_once_and_written(constant_net, tmp_path):
    net = constant_net(one_hot(GRID, 4), width=128, height=64)
    with ArchiveServer() as server:
        url = server.add("/pics/city_0.jpg", (IMAGES / "city_0.jpg").read_bytes())
        proc = run_cli("--model", net, url, tmp_path / "out/")
        assert len(server.gets("/pics/city_0.jpg")) == 1
    assert proc.returncode == 0, proc.stderr
    with Image.open(tmp_path / "out" / "city_0.jpg") as picture:
        assert picture.size == Image.open(IMAGES / "city_0.jpg").size
