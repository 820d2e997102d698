"""Real TensorRT-RTX work with segnet's own code, run by ``test_real_builds.py`` in a subprocess whose
``PYTHONPATH`` holds the TensorRT-RTX folder (never the test environment's site-packages, where it would change
the backend-choice tests).

    python realbuild.py JOBS.json   ->   one JSON list of results on stdout

Jobs (a JSON list):
- ``{"id", "kind": "build", "options": {...}, "targets": [[8, 9], ...] | null, "generate": [w, h, classes]}``:
  ``segnet.backends.tensorrt.build_ahead`` with these options (``generate``: first write a jetson-layout
  FCN-ResNet18 of that size to ``options["model"]``; ``"remove": true`` deletes model and engine afterwards,
  ``"remove": "engine"`` the engine only, keeping the disk small). ``"fused": "class map"`` or a kind of picture
  (``"overlay"``...): the engine of the fused graph a run on a GPU loads (``segmenter.fused_graphs``), that draws
  that picture. Parse, build, serialise and write to the cache, all for real; nothing is loaded.
- ``{"id", "kind": "open", "options": {...}, "gpu": [name, [major, minor]]}``: ``open_backend`` on a stand-in GPU
  of that name and compute capability (the CUDA layer is faked; TensorRT-RTX is real), then infer one blank image
  on whatever opened. Reports the status lines, the error, and what ran.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np


class StandInGpu:
    """What ``cuda.open_cuda`` gives, for a GPU that is not there: its name and compute capability only. Nothing
    reaches its buffers: TensorRT-RTX refuses to load an engine without a usable GPU first."""

    def __init__(self, name: str, compute_capability):
        from segnet.backends.tensorrt.cuda import GpuInfo

        self.info = GpuInfo(name, tuple(compute_capability))

    def device_info(self):
        return self.info

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        pass


def build(job: dict) -> dict:
    from segnet.backends.tensorrt import build_ahead, engine_cache

    options = dict(job["options"])
    if job.get("generate"):
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from fcn_resnet18 import fcn_resnet18

        width, height, classes = job["generate"]
        Path(options["model"]).parent.mkdir(parents=True, exist_ok=True)
        fcn_resnet18(Path(options["model"]), width, height, classes)
    targets = tuple(tuple(t) for t in job["targets"]) if job.get("targets") else None
    graph = {}
    if job.get("fused"):
        from segnet import Options
        from segnet.segmenter import fused_graphs

        ((spec, _), *_) = fused_graphs(Options(**options))
        graph = {"fused": spec, "draws": None if job["fused"] == "class map" else job["fused"]}
    built = build_ahead(targets=targets, **graph, **options)
    record = json.loads(built.path.with_name(built.path.name + ".json").read_text())
    engine_cache.read_engine(built.path)  # the record matches the file: size and SHA-256
    result = {"path": str(built.path), "name": built.path.name, "size": built.size, "seconds": built.seconds,
              "built": built.built, "description": built.description, "key": record["key"],
              "magic": built.path.read_bytes()[:4].hex()}
    if job.get("remove"):
        built.path.unlink()
        if job["remove"] is True:
            Path(options["model"]).unlink()
    return result


def open_run(job: dict) -> dict:
    import segnet.backends
    import segnet.backends.tensorrt.cuda as cuda
    from segnet import Options
    from segnet.backends import open_backend

    name, compute_capability = job["gpu"]
    cuda.open_cuda = lambda *args, **kwargs: StandInGpu(name, compute_capability)
    segnet.backends.NVIDIA_GPU_SIGNS = ("/",)  # the stand-in GPU's machine shows one
    with open_backend(job["options"]["model"], Options(**job["options"])) as backend:
        scores = backend.infer(np.zeros((1, *backend.input.shape[1:]), np.float32))
        return {"description": backend.description, "shape": list(scores.shape)}


def main() -> None:
    for package in ("cuda", "pycuda"):  # like a build server: no CUDA package for Python, so none can be used
        sys.modules[package] = None  # type: ignore[assignment]
    from segnet.backends import tensorrt
    from segnet.errors import SegnetError, name_options_as_flags

    name_options_as_flags()  # messages as a command-line user reads them
    status = io.StringIO()
    handler = logging.StreamHandler(status)
    logging.getLogger("segnet").addHandler(handler)
    logging.getLogger("segnet").setLevel(logging.INFO)
    results = []
    for job in json.loads(Path(sys.argv[1]).read_text()):
        status.seek(0)
        status.truncate()
        tensorrt.unusable_reason.cache_clear()
        import segnet.backends

        segnet.backends._auto_fallback = None
        start = time.perf_counter()
        result: dict = {"id": job["id"]}
        try:
            result.update(build(job) if job["kind"] == "build" else open_run(job))
        except SegnetError as exc:
            result["error"] = str(exc)
        result["wall_seconds"] = time.perf_counter() - start
        result["status"] = status.getvalue().splitlines()
        results.append(result)
    trt = tensorrt.import_tensorrt("tensorrt_rtx")
    print(json.dumps({"results": results, "module": trt.__name__,
                      "version": trt.__version__, "library": sys.modules["tensorrt_rtx_libs"].__file__}))


if __name__ == "__main__":
    main()
