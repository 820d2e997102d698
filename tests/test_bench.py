"""segnet-bench runs both pipelines on real images and reports every stage."""

import json
import subprocess
import sys

from tests.conftest import IMAGES, ROOT
from tests.support import models


def test_benchmark_prints_a_table_and_writes_json(tmp_path):
    net = models.write_network(tmp_path / "net", models.pooling_model, num_classes=5, width=160, height=96)
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "benchmark"), "--model", str(net), "--images",
                           str(IMAGES / "city_[01].jpg"), "--image-size", "320x160", "--repeat", "2",
                           "--batch-size", "2", "--network-runs", "3", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "pipelined / sequential" in proc.stdout and "network only, batch 2" in proc.stdout
    report = json.loads(out.read_text())
    assert report["images"] == 4 and report["batch_size"] == 2
    for run in ("sequential", "pipelined"):
        assert set(report[run]["stage_seconds"]) == {"decode", "preprocess", "inference", "classmap",
                                                     "colorize", "encode"}
        assert all(v > 0 for v in report[run]["stage_seconds"].values())
        assert report[run]["images_per_s"] > 0
    assert report["speedup"] == report["sequential"]["seconds"] / report["pipelined"]["seconds"]
