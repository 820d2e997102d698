"""segnet.ray on a real Ray instance: two simulated nodes on this machine (``ray.cluster_utils.Cluster``),
one of them with a GPU that exists only as a Ray resource (the actors still run onnxruntime on the CPU),
started once for the module. Skipped where Ray Data is not installed, except the tests that need no Ray."""

from __future__ import annotations

import pickle
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from segnet import Options
from segnet.errors import SegnetError
from segnet.image_io import read_image, write_image
from segnet.segmenter import Segmenter
from tests.conftest import IMAGES
from tests.support import models

NAMES = ["void", "road", "car", "person", "sky"]
# six bundled images of different sizes: enough for several batches per actor, few enough to stay quick
REAL = [IMAGES / f"{name}.jpg" for name in ("camvid_0", "city_0", "humans_0", "object_0", "room_0", "trail_0")]


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    from ray.cluster_utils import Cluster

    small = {"num_cpus": 1, "object_store_memory": 100 * 2**20}
    nodes = Cluster(initialize_head=True, head_node_args={**small, "include_dashboard": False})
    nodes.add_node(**small, num_gpus=1)
    ray.init(address=nodes.address)
    try:
        yield nodes
    finally:
        ray.shutdown()
        nodes.shutdown()


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ray") / "net"
    return models.write_network(folder, models.pooling_model, NAMES, num_classes=5, width=160, height=96)


@pytest.fixture
def options(network):
    return Options(model=network, backend="onnxruntime")


def ray_run(inputs, outputs, options, **given):
    """The Ray executor with these options under the run loop's sink; (images done, [(input, error)...], the
    jobs in the order the sink saw them)."""
    from segnet.run import ray as ray_executor
    from segnet.run.job import Job

    jobs = [Job(i, str(p), lambda: None, o, path=Path(p)) for i, (p, o) in enumerate(zip(inputs, outputs))]
    seen = []
    ray_executor.run(jobs, seen.append, Options.create(options, **given))
    failures = [(inputs[job.index], str(job.error)) for job in seen if job.error is not None]
    return len(seen) - len(failures), failures, seen


def single_machine(options, inputs, folder, visualize):
    """What the one-machine run writes: ``Segmenter`` then ``write_image``, one image after another."""
    folder.mkdir()
    with Segmenter(options=options) as segmenter:
        for path in inputs:
            write_image(segmenter(path).render(visualize), folder / path.name)
    return folder


def assert_same_files(actual, expected, names):
    for name in names:
        assert (actual / name).read_bytes() == (expected / name).read_bytes(), name


def read_error(path) -> str:
    """The message the single-machine run gives for a bad image."""
    with pytest.raises(SegnetError) as failed:
        read_image(path)
    return str(failed.value)


def test_cpu_actors_write_the_files_of_the_single_machine_run(cluster, options, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    inputs = [*REAL[:3], bad, *REAL[3:]]
    out = tmp_path / "ray"
    out.mkdir()
    done, failures, events = ray_run(inputs, [out / p.name for p in inputs], options, stats=True)
    assert (done, failures) == (len(REAL), [(bad, read_error(bad))])
    assert_same_files(out, single_machine(options, REAL, tmp_path / "one", ("overlay",)), [p.name for p in REAL])
    assert not (out / bad.name).exists()
    assert [e.index for e in events] == list(range(len(inputs)))  # in input order, whatever order rows came in
    with Segmenter(options=options) as segmenter:  # with the --stats tables
        assert [e.table for e in events if e.index != 3] == [segmenter(p).stats() for p in REAL]


def test_gpu_actors_read_and_write_in_cpu_tasks_with_the_same_files(cluster, options, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths: the workers do not share the driver's directory
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    inputs = [Path("in") / p.name for p in REAL[:5]]
    for path, real in zip(inputs, REAL):
        path.write_bytes(real.read_bytes())
    inputs[3].write_bytes(REAL[3].read_bytes()[:3000])  # truncated
    outputs = [Path("out") / f"{p.stem}.png" for p in inputs]
    outputs[2] = None  # segmented, nothing written
    done, failures, _ = ray_run(inputs, outputs, options, visualize="overlay,mask", ray_gpus=1)
    assert (done, failures) == (4, [(inputs[3], read_error(inputs[3]))])
    assert sorted(p.name for p in Path("out").iterdir()) == sorted(outputs[i].name for i in (0, 1, 4))
    with Segmenter(options=options) as segmenter:
        for i in (0, 1, 4):
            expected = tmp_path / outputs[i].name
            write_image(segmenter(inputs[i]).render(("overlay", "mask")), expected)
            assert outputs[i].read_bytes() == expected.read_bytes(), inputs[i]


def test_corrupt_image_is_an_error_entry_and_the_rest_complete(cluster, options, tmp_path):
    import ray

    from segnet.run.ray import SegmentBatch

    folder = tmp_path / "in"
    folder.mkdir()
    for path in REAL[:4]:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "broken.jpg").write_bytes(REAL[0].read_bytes()[:2000])  # truncated JPEG
    (folder / "text.jpg").write_bytes(b"not an image")
    rows = (ray.data.read_binary_files(str(folder), include_paths=True, override_num_blocks=3)
            .map_batches(SegmentBatch, fn_constructor_kwargs={"options": options}, batch_size=2,
                         # one actor: the read tasks need the other CPU, or the job waits forever
                         compute=ray.data.ActorPoolStrategy(size=1), udf_modifying_row_count=False)
            .take_all())
    by_name = {row["path"].rsplit("/", 1)[-1]: row for row in rows}
    assert sorted(by_name) == sorted(p.name for p in folder.iterdir())
    assert "truncated or corrupt" in by_name["broken.jpg"]["error"]
    assert "not an image Pillow can read" in by_name["text.jpg"]["error"]
    assert by_name["text.jpg"]["class_map"].size == 0
    with Segmenter(options=options) as segmenter:
        for path in REAL[:4]:
            assert by_name[path.name]["error"] == ""
            np.testing.assert_array_equal(by_name[path.name]["class_map"], segmenter(path).class_map)


def test_actors_spread_over_both_nodes(cluster, options):
    import ray

    from segnet.run.ray import SegmentBatch

    class WhereItRan(SegmentBatch):  # defined here, so it travels by value: workers need not import tests
        def __call__(self, batch):
            time.sleep(0.25)  # slow enough that one actor cannot take every row while the other starts
            out = super().__call__(batch)
            out["node"] = np.array([ray.get_runtime_context().get_node_id()] * len(out["error"]))
            return out

    images = [read_image(p) for p in REAL] * 2
    rows = (ray.data.from_items([{"index": i, "image": image} for i, image in enumerate(images)],
                                override_num_blocks=len(images))
            .map_batches(WhereItRan, fn_constructor_kwargs={"options": options, "visualize": "mask"},
                         batch_size=1, compute=ray.data.ActorPoolStrategy(size=2), udf_modifying_row_count=False)
            .take_all())
    assert {row["node"] for row in rows} == {node["NodeID"] for node in ray.nodes() if node["Alive"]}
    assert len(rows) == len(images)
    with Segmenter(options=options) as segmenter:
        for row in rows:
            np.testing.assert_array_equal(row["picture"], segmenter(images[row["index"]]).mask())


def test_a_network_that_cannot_load_fails_the_job_with_its_message(cluster, tmp_path):
    (tmp_path / "fcn_resnet18.onnx").write_bytes(b"not a model")
    with pytest.raises(SegnetError, match=r"^cannot load model .*fcn_resnet18.onnx: [^\n]*$"):
        ray_run(REAL[:2], [None, None], Options(model=tmp_path, backend="onnxruntime"))


def test_pools_ray_could_never_place_are_refused(cluster, options):
    with pytest.raises(SegnetError, match="has 2 CPUs, fewer than the 3 actors"):
        ray_run(REAL[:4], [None] * 4, options, ray_actors=3)
    with pytest.raises(SegnetError, match="2 CPUs for 2 GPU actors"):  # none left for the read tasks
        ray_run(REAL[:4], [None] * 4, options, ray_gpus=0.5)


def test_segment_batch_loads_lazily_and_pickles_without_its_network(options, tmp_path):
    from segnet.run.ray import SegmentBatch

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"")
    stage = SegmentBatch(options, visualize="overlay", output_dir=tmp_path / "out")
    assert stage._segmenter is None  # constructing it (on the driver) loads nothing
    (tmp_path / "out").mkdir()
    out = stage({"path": np.array([str(REAL[0]), str(bad)], dtype=object)})
    assert list(out["error"]) == ["", f"{bad}: the file is empty"]
    assert list(out["output"]) == [str(tmp_path / "out" / REAL[0].name), str(tmp_path / "out" / bad.name)]
    assert (tmp_path / "out" / REAL[0].name).exists() and not (tmp_path / "out" / bad.name).exists()
    copy = pickle.loads(pickle.dumps(stage))
    assert stage._segmenter is not None and copy._segmenter is None


def test_segment_batch_returns_pictures_only_where_no_output_is_named(options, tmp_path):
    from segnet.run.ray import SegmentBatch

    stage = SegmentBatch(options, visualize="overlay")
    written = tmp_path / "written.jpg"  # an empty output: nothing rendered, nothing returned
    out = stage({"path": np.array([str(REAL[0])] * 2, dtype=object), "output": np.array([str(written), ""])})
    assert list(out["output"]) == [str(written), ""] and "picture" not in out and written.exists()
    out = stage({"image": np.stack([read_image(REAL[0])])})  # no outputs named at all: pictures come back
    with Segmenter(options=options) as segmenter:
        np.testing.assert_array_equal(out["picture"][0], segmenter(REAL[0]).overlay())


def test_without_ray_it_says_how_to_install(monkeypatch, options):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(SegnetError, match=r"pip install 'segnet\[ray\]'"):
        ray_run(REAL[:1], [None], options)


def test_segnet_console_ray_writes_what_the_local_run_writes(cluster, network, tmp_path):
    """Through the real entry point, with the path first and --ray last (argparse would otherwise take the
    path for the address)."""
    from tests.support.cli import run_cli

    folder = tmp_path / "in"
    folder.mkdir()
    for path in REAL:
        (folder / path.name).write_bytes(path.read_bytes())
    local = run_cli("--model", network, "--visualize=overlay,mask", "--json", folder, tmp_path / "local")
    assert local.returncode == 0, local.stderr
    on_ray = run_cli("--model", network, "--visualize=overlay,mask", "--ray-actors=2", "--json", "--stats-file",
                     tmp_path / "ray.jsonl", folder, tmp_path / "ray", f"--ray={cluster.address}")
    assert on_ray.returncode == 0, on_ray.stderr
    assert f"{len(REAL)} of {len(REAL)} images done on Ray" in on_ray.stderr
    assert_same_files(tmp_path / "ray", tmp_path / "local", [p.name for p in REAL])
    assert on_ray.stdout == local.stdout and len(local.stdout.splitlines()) == len(REAL)  # the same JSON lines
    assert (tmp_path / "ray.jsonl").read_text() == local.stdout
    swapped = run_cli("--model", network, "--ray", folder, tmp_path / "swapped", "-q",
                      env={"RAY_ADDRESS": cluster.address})
    assert swapped.returncode == 0, swapped.stderr
    assert sorted(p.name for p in (tmp_path / "swapped").iterdir()) == [p.name for p in REAL]
