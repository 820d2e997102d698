"""Models derived at start-up (the fused graph, the FP16 copy, the batch-axis copy) are kept in the cache, so a
later start loads them without importing onnx (about a second of every GPU start, BENCHMARKS.md issue 20), and a
cache that cannot keep them never fails a run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from segnet.backends.cache_dir import derived_model
from tests.conftest import IMAGES, ROOT
from tests.support import models

START = """
import json, sys
from segnet import Segmenter
from segnet.drawing import DrawSpec
with Segmenter(model=sys.argv[1], fuse="on", drawing=DrawSpec(), **json.loads(sys.argv[2])) as net:
    result = net(sys.argv[3])
    print(json.dumps({"onnx": "onnx" in sys.modules, "fused": net.fused, "classes": result.class_map.tolist()}))
"""


def start(net, cache, **given) -> dict:
    env = {**os.environ, "SEGNET_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", START, str(net), json.dumps(given), str(IMAGES / "city_0.jpg")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_second_start_loads_the_fused_graph_and_copies_without_importing_onnx(tmp_path):
    net = models.write_network(tmp_path / "net", models.pooling_model, num_classes=6, width=160, height=96)
    cache = tmp_path / "cache"
    for given in ({}, {"precision": "fp16", "batch_size": 4}):
        first, second = start(net, cache, **given), start(net, cache, **given)
        assert first["fused"] and second["fused"]
        assert first["onnx"] and not second["onnx"], given  # made once, then read back
        assert second["classes"] == first["classes"]
    kept = sorted(p.name.split(".")[1] for p in cache.glob("*.onnx"))
    assert kept == ["batch", "fp16", "fused", "fused"], kept  # the FP32 and the FP16 graph each fused once


def test_a_changed_model_gets_its_own_fused_graph(tmp_path):
    net = models.write_network(tmp_path / "net", models.pooling_model, num_classes=6, width=160, height=96)
    cache = tmp_path / "cache"
    before = start(net, cache)
    models.pooling_model(net / "fcn_resnet18.onnx", num_classes=6, width=160, height=96, seed=1)  # new weights
    after = start(net, cache)
    assert after["onnx"] and after["classes"] != before["classes"]  # rebuilt from the new model, not the old graph
    assert len(list(cache.glob("*.fused.*.onnx"))) == 2


def test_at_most_keep_files_of_a_kind_stay_the_least_recently_used_going(tmp_path):
    made = []

    def maker(i):
        def make():
            made.append(i)
            return f"model {i}".encode()
        return make

    paths = [derived_model(tmp_path, "net.fused", f"key {i}", maker(i), keep=2) for i in range(3)]
    assert made == [0, 1, 2] and not os.path.exists(paths[0])  # the oldest went
    assert derived_model(tmp_path, "net.fused", "key 1", maker(9), keep=2) == paths[1]  # found, not made
    derived_model(tmp_path, "net.fused", "key 3", maker(3), keep=2)
    assert os.path.exists(paths[1]) and not os.path.exists(paths[2])  # key 1 was used last: key 2 went
    assert made == [0, 1, 2, 3]
    assert derived_model(tmp_path, "net.batch", "key 0", maker(4), keep=2) != paths[0]  # kinds apart


def test_a_cache_that_cannot_keep_the_graph_runs_it_from_memory(tmp_path):
    key_path = derived_model(tmp_path, "net.fused", "key", lambda: b"first", keep=4)
    os.unlink(key_path)
    os.mkdir(key_path)  # a folder where the file would go: the write fails
    assert derived_model(tmp_path, "net.fused", "key", lambda: b"made again", keep=4) == b"made again"
    # and a real run through such a cache folder works the same
    net = models.write_network(tmp_path / "net", models.pooling_model, num_classes=6, width=160, height=96)
    want = start(net, tmp_path / "cache")["classes"]
    for graph in (tmp_path / "cache").glob("*.fused.*.onnx"):
        graph.unlink()
        graph.mkdir()
    again = start(net, tmp_path / "cache")
    assert again["onnx"] and again["classes"] == want
    assert np.array(want).size > 0
