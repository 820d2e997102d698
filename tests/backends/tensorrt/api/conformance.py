"""Checks a backend source's ``TRT_API`` against one real version of TensorRT's Python bindings.

Run by ``test_trt_api.py`` in a subprocess whose ``PYTHONPATH`` holds an unpacked ``tensorrt_bindings`` wheel
and whose ``LD_LIBRARY_PATH`` holds stand-in ``libnvinfer``/``libnvonnxparser``/``libnvinfer_plugin``
libraries: enough to import the bindings and read TensorRT's real classes, enums and signatures (pybind11
writes each function's signatures into its docstring), not to build anything. For TensorRT-RTX
(``--module tensorrt_rtx_bindings``) the ``PYTHONPATH`` holds the real bindings and libraries.

    python conformance.py SOURCE [--model ONNX] [--module NAME]   ->   one JSON object on stdout
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import json
import re
import sys
from pathlib import Path

import apiscan


def parameters(text: str) -> list[tuple[str, bool]]:
    """``a: int, b: X = <E.V: 2>`` -> [("a", False), ("b", True)], splitting on top-level commas only."""
    params, depth, current = [], 0, ""
    for ch in text + ",":
        if ch in "([{<":
            depth += 1
        elif ch in ")]}>":
            depth -= 1
        if ch == "," and depth == 0:
            if current.strip():
                params.append((re.split(r"[:=]", current)[0].strip(), "=" in current))
            current = ""
        else:
            current += ch
    return params


def signatures(obj, name: str) -> list[list[tuple[str, bool]]]:
    """Every overload's parameters, ``self`` included, from pybind11's docstring (or Python's own)."""
    if inspect.isfunction(obj):  # written in Python (the bindings' __init__.py helpers)
        return [[(p.name if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) else "*" + p.name,
                  p.default is not p.empty) for p in inspect.signature(obj).parameters.values()]]
    pattern = re.compile(rf"^\s*(?:\d+\.\s*)?{re.escape(name)}\((.*)\)\s*->")
    return [parameters(m.group(1)) for line in (obj.__doc__ or "").splitlines() if (m := pattern.match(line))]


def accepts(overload: list[tuple[str, bool]], passed: tuple[str, ...]) -> bool:
    """Whether a call passing ``passed`` (names in order) fits: same leading names, the rest defaulted."""
    if any(name.startswith("*") for name, _ in overload):
        return True
    names = [name for name, _ in overload]
    return names[:len(passed)] == list(passed) and all(default for _, default in overload[len(passed):])


def check_bindings(table: dict, path: str, trt) -> list[str]:
    """Problems with the names ``table`` lists for ``path`` (plus "common") in this TensorRT."""
    problems, version = [], trt.__version__
    for name, passed in {**table.get("common", {}), **table.get(path, {})}.items():
        owner, obj = None, trt
        try:
            for part in name.split("."):
                owner, obj = obj, getattr(obj, part)
        except AttributeError:
            problems.append(f"{name} does not exist in TensorRT {version}")
            continue
        if passed is None:
            if callable(obj) and not isinstance(obj, type):
                problems.append(f"{name} is a method in TensorRT {version}, but used as an attribute")
            continue
        if not callable(obj):
            problems.append(f"{name} is not callable in TensorRT {version}")
            continue
        is_class = isinstance(obj, type)
        overloads = signatures(obj.__init__, "__init__") if is_class else signatures(obj, name.split(".")[-1])
        if not overloads:
            problems.append(f"{name}: TensorRT {version} shows no signature to check against")
            continue
        if is_class or isinstance(owner, type):  # constructor or method: drop self
            overloads = [o[1:] for o in overloads]
        if not any(accepts(o, passed) for o in overloads):
            shown = " | ".join("(" + ", ".join(n + ("=…" if d else "") for n, d in o) + ")" for o in overloads)
            problems.append(f"{name}{passed} does not fit TensorRT {version}'s {shown}")
    return problems


def backend_behaviour(model: str) -> dict:
    """What the real backend module does with these bindings on a machine where TensorRT cannot run."""
    import numpy as np

    from segnet import Options
    from segnet.backends import nvidia_gpu_present, open_backend
    from segnet.backends import tensorrt as backend
    from segnet.cli.common import configure_output
    from segnet.errors import SegnetError, name_options_as_flags

    name_options_as_flags()  # what a user of segnet-console sees
    result = {"module": backend.import_tensorrt().__name__, "unusable_reason": backend.unusable_reason()}
    try:
        open_backend(model, Options(backend="tensorrt"))
        result["tensorrt_error"] = None
    except SegnetError as exc:
        result["tensorrt_error"] = str(exc)
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        configure_output()
        for _ in range(2):
            with open_backend(model, Options(backend="auto")) as opened:
                result["auto_shape"] = list(opened.infer(np.zeros(opened.input.shape, np.float32)).shape)
                result["auto_description"] = opened.description
    result["auto_stderr"] = stderr.getvalue()
    result["nvidia_gpu_present"] = nvidia_gpu_present()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("source")
    parser.add_argument("--model", help="also report how segnet.backends.tensorrt behaves (tiny ONNX model)")
    parser.add_argument("--module", default="tensorrt_bindings", help="the bindings module to check against")
    args = parser.parse_args()
    import importlib

    trt = importlib.import_module(args.module)

    from segnet.backends.tensorrt import api_path

    source = Path(args.source).read_text()
    _, table = apiscan.declared(source)
    path = api_path(trt)
    result = {"version": trt.__version__, "path": path, "problems": check_bindings(table, path, trt)}
    if args.model:
        result.update(backend_behaviour(args.model))
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
