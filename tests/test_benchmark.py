"""segnet-bench: both loops write the pictures segnet-console writes, and the report adds up."""

import json

import pytest

from segnet import Options, Segmenter
from segnet.benchmark import pipelined, sequential
from tests.conftest import IMAGES
from tests.support import models
from tests.support.cli import run_cli


def test_both_loops_write_exactly_what_segnet_console_writes(tmp_path):
    net = models.write_network(tmp_path / "net", models.pooling_model, num_classes=5, width=160, height=96)
    paths = sorted(IMAGES.glob("city_[012].jpg"))
    console = tmp_path / "console"
    assert run_cli("--model", net, "--visualize=overlay,mask", IMAGES / "city_[012].jpg", console).returncode == 0
    seq_dir, pipe_dir, proc_dir = tmp_path / "seq", tmp_path / "pipe", tmp_path / "proc"
    for folder in (seq_dir, pipe_dir, proc_dir):
        folder.mkdir()
    options = Options(model=net, batch_size=2)
    with Segmenter(options=Options.create(options, batch_size=1)) as single, Segmenter(options=options) as batched:
        seq = sequential(single, paths, ("overlay", "mask"), seq_dir, "jpg")
        pipe = pipelined(batched, paths, ("overlay", "mask"), pipe_dir, "jpg", workers=2)
        proc = pipelined(batched, paths, ("overlay", "mask"), proc_dir, "jpg", workers=2, processes=2)
    for i, path in enumerate(paths):
        expected = (console / path.name).read_bytes()
        assert (seq_dir / f"seq{i}.jpg").read_bytes() == expected
        assert (pipe_dir / f"pipe{i}.jpg").read_bytes() == expected
        assert (proc_dir / f"pipe{i}.jpg").read_bytes() == expected
    # one thread did every stage of the sequential loop: its stages cannot add up to more than its wall time
    assert sum(seq["stage_seconds"].values()) <= seq["seconds"]
    assert all(v > 0 for v in pipe["stage_seconds"].values())
    # CPU time: a stage's never exceeds its wall time in that thread; the whole run's covers the stages'
    assert all(seq["cpu_stage_seconds"][k] <= seq["stage_seconds"][k] + 1e-3 for k in seq["stage_seconds"])
    for run in (pipe, proc):
        assert sum(run["cpu_stage_seconds"].values()) <= run["cpu_seconds"] + 0.05
    assert (pipe["kind"], proc["kind"], proc["workers"]) == ("threads", "processes", 2)
    assert proc["cpu_stage_seconds"]["decode"] > 0 and proc["cpu_stage_seconds"]["encode"] > 0  # from the workers


def test_the_command_prints_a_table_and_writes_json(tmp_path):
    net = models.write_network(tmp_path / "net", models.pooling_model, num_classes=5, width=160, height=96)
    out = tmp_path / "bench.json"
    proc = run_cli("--model", net, "--images", IMAGES / "city_[01].jpg", "--image-size", "320x160", "--repeat", "2",
                   "--batch-size", "2", "--network-runs", "3", "--processes", "0", "--compare", "processes=2",
                   "--json-file", out,
                   prog="segnet-bench")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert (report["images"], report["batch_size"], report["image_size"]) == (4, 2, "320x160")
    assert [n["batch"] for n in report["network_only"]] == [1, 2]
    assert f"{report['pipelined']['images_per_s']:.2f}" in proc.stdout
    assert "network only, batch 2" in proc.stdout and "pipelined / sequential" in proc.stdout
    # the bound: cores / CPU ms per image, and how far the measured rate is from it
    b = report["pipelined"]["bound"]
    assert b["cores"] == report["cores"] >= 1 and report["worker_kind"] == "threads"
    assert b["cores_bound_images_per_s"] == pytest.approx(b["cores"] * 1000 / b["cpu_ms_per_image_stages"])
    assert b["gap"] == pytest.approx(b["bound_images_per_s"] / report["pipelined"]["images_per_s"])
    assert f"bound: {b['cores']} cores / {b['cpu_ms_per_image_stages']:.1f} ms" in proc.stdout
    assert f"{b['gap']:.2f}x below the bound" in proc.stdout
    assert report["other"]["kind"] == "processes" and report["other"]["workers"] == 2
    assert "processes=2: the same with 2 worker processes" in proc.stdout


def test_json_prints_the_report_as_one_object_and_compare_takes_another_precision(tmp_path):
    net = models.write_network(tmp_path / "net", models.pooling_model, num_classes=5, width=160, height=96)
    proc = run_cli("--model", net, "--backend", "onnxruntime", "--images", IMAGES / "city_0.jpg", "--repeat", "2",
                   "--network-runs", "2", "--processes", "0", "--engine-cache", tmp_path / "cache",
                   "--compare", "precision=fp16", "--json", prog="segnet-bench")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)  # stdout is the JSON object alone
    assert report["other"]["options"] == "precision=fp16" and "fp16" in report["other"]["backend"].lower()
    assert report["images"] == 2


def test_bad_arguments_are_one_line_errors(tmp_path):
    proc = run_cli("--repeat", "0", prog="segnet-bench")
    assert proc.returncode == 2 and proc.stderr == "segnet-bench: error: --repeat 0: give a whole number of 1 or more\n"
    proc = run_cli("--images", tmp_path / "none", prog="segnet-bench")
    assert proc.returncode == 2 and "no such file or directory" in proc.stderr and "Traceback" not in proc.stderr
