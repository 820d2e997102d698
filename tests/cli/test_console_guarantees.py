"""Issue 23 through segnet-console's entry point: nothing the run writes can be an input or another output,
no secret in a URL is shown or written, bad URLs are one-line usage errors, and every case leaves every
input as it was (checksums before and after)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import IMAGES
from tests.support import models, streams
from tests.support.cli import assert_one_line_error, run_cli
from tests.support.http_server import ArchiveServer

SECRET = "PW-s3cret"


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    return models.write_network(tmp_path_factory.mktemp("pool") / "net", models.pooling_model,
                                [f"c{i}" for i in range(5)], num_classes=5, width=64, height=64)


def checksums(*roots: Path) -> dict[str, str]:
    """SHA-256 of every file under ``roots`` (files or folders), by path."""
    found = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            found[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return found


def images(folder: Path, count: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for source in sorted(IMAGES.glob("*.jpg"))[:count]:
        shutil.copy(source, folder / source.name)
    return folder


# -- item 4: credentials ------------------------------------------------------------------------------------


def test_passwords_and_tokens_in_urls_are_never_shown_or_written(net, tmp_path):
    stats = tmp_path / "stats.jsonl"
    picture = (IMAGES / "city_0.jpg").read_bytes()
    with ArchiveServer() as server:
        server.add(f"/city.jpg?token={SECRET}", picture)
        base = server.base_url.replace("http://", f"http://user:{SECRET}@")
        good = run_cli("--model", net, f"{base}/city.jpg?token={SECRET}", tmp_path / "out.jpg", "--json",
                       "--stats-file", stats)
        missing = run_cli("--model", net, f"{base}/404.jpg", tmp_path / "out2.jpg", "--stats-file", stats)
    assert good.returncode == 0, good.stderr
    record = json.loads(good.stdout)
    assert record["source"] == f"{server.base_url}/city.jpg?token=***"
    assert SECRET not in good.stdout + good.stderr + stats.read_text()
    assert "out.jpg" in good.stderr  # the status line names the picture, and the URL without its secrets
    assert_one_line_error(missing, 1, f"{server.base_url}/404.jpg: HTTP 404")
    assert SECRET not in missing.stderr and "user" not in missing.stderr


def test_rtsp_input_and_output_errors_leave_the_password_out(net, tmp_path):
    port = streams.free_port(streams.socket.SOCK_STREAM)  # nothing listens there: refused at once
    clip = tmp_path / "clip.mp4"
    streams.make_video(clip, 3)
    before = checksums(clip)
    source = run_cli("--model", net, f"rtsp://admin:{SECRET}@127.0.0.1:{port}/live", tmp_path / "out",
                     "--input-timeout", "5")
    output = run_cli("--model", net, clip, f"rtsp://admin:{SECRET}@127.0.0.1:{port}/live")
    assert_one_line_error(source, 1, f"rtsp://127.0.0.1:{port}/live")
    assert_one_line_error(output, 1, f"rtsp://127.0.0.1:{port}/live")
    assert SECRET not in source.stderr + output.stderr
    assert checksums(clip) == before


# -- item 12: bad ports and hosts ---------------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["rtp://@:99999", "out/"], "rtp://@:99999: not a valid URL (port out of range"),
    (["udp://[::1:5000", "out/"], "udp://[::1:5000: not a valid URL (invalid ipv6"),
    (["CLIP", "udp://127.0.0.1:99999"], "udp://127.0.0.1:99999: not a valid URL (port out of range"),
    (["CLIP", f"rtsp://u:{SECRET}@[::1/live"], "rtsp://[::1/live: not a valid URL"),
    ([f"http://127.0.0.1:70000/a.jpg?key={SECRET}", "out.jpg"], "http://127.0.0.1:70000/a.jpg?key=***: not a"),
])
def test_bad_ports_and_hosts_are_one_line_usage_errors(net, tmp_path, args, message):
    clip = streams.make_video(tmp_path / "clip.mp4", 2)
    before = checksums(clip)
    proc = run_cli("--model", net, *[str(clip) if a == "CLIP" else a for a in args], cwd=tmp_path)
    assert_one_line_error(proc, 2, message)
    assert SECRET not in proc.stderr
    assert checksums(clip) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]  # nothing written or created
