"""The import rules of ARCHITECTURE.md, read from the source's syntax trees (every import, the lazy ones
inside functions too):

- each part of the package imports only from its own layer or the layers below it (``LAYERS``);
- nothing outside ``segnet/backends/tensorrt/`` imports TensorRT or CUDA;
- nothing in the library imports the CLI;
- no import cycle anywhere, lazy imports included: an import inside a function is still a dependency;
- inside ``segnet/run/``, each role imports only the roles below it (``RUN_ROLES``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "segnet"

#: Lowest first. A module may import from its own layer and the ones before it, never from a later one.
LAYERS = [
    ("foundation", ["segnet", "segnet.errors", "segnet.options", "segnet.util", "segnet.progress",
                    "segnet.cuda_runtime"]),
    ("stages", ["segnet.image_io", "segnet.preprocess", "segnet.classmap", "segnet.colorize", "segnet.labels",
                "segnet.model_format", "segnet.legend", "segnet.drawing", "segnet.gpu_codec"]),
    ("zoo", ["segnet.zoo"]),
    ("backends", ["segnet.backends"]),
    ("segmenter", ["segnet.segmenter"]),
    ("features", ["segnet.run", "segnet.evaluation", "segnet.benchmark", "segnet.training"]),
    ("cli", ["segnet.cli", "segnet.__main__"]),
]
GPU_ONLY = ("tensorrt", "tensorrt_bindings", "tensorrt_rtx", "tensorrt_rtx_bindings", "cuda", "pycuda")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


ALL = modules()


def imports(name: str, path: Path) -> list[tuple[str, bool]]:
    """(imported module, at top level) for every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    top = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:  # ``from package import module`` needs only the module
                submodule = f"{base}.{alias.name}"
                found.append((submodule if submodule in ALL else base, id(node) in top))
    return found


def layer_of(module: str) -> int | None:
    best = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            inside = module == prefix or (prefix != "segnet" and module.startswith(prefix + "."))
            if inside and (best is None or len(prefix) > best[1]):
                best = (index, len(prefix))
    return None if best is None else best[0]




def test_every_module_has_a_layer():
    assert [m for m in ALL if layer_of(m) is None] == []


@pytest.mark.parametrize("name", sorted(ALL))
def test_imports_go_down_the_layers_only(name):
    mine = layer_of(name)
    wrong = []
    for target, top in imports(name, ALL[name]):
        if name == "segnet" and not top:
            continue  # the package's lazy re-exports (segnet.Segmenter) are its public face, not a dependency
        if target.split(".")[0] != "segnet" or target not in ALL:
            continue
        theirs = layer_of(target)
        if theirs is not None and theirs > mine:
            wrong.append(f"{name} ({LAYERS[mine][0]}) imports {target} ({LAYERS[theirs][0]})")
    assert wrong == []


@pytest.mark.parametrize("name", sorted(ALL))
def test_only_the_tensorrt_package_imports_tensorrt_or_cuda(name):
    if name.startswith("segnet.backends.tensorrt"):
        return
    assert [t for t, _ in imports(name, ALL[name]) if t.split(".")[0] in GPU_ONLY] == []


def test_the_library_never_imports_the_cli():
    offenders = [(name, target) for name, path in ALL.items() if layer_of(name) != len(LAYERS) - 1
                 for target, _ in imports(name, path) if target == "segnet.cli" or target.startswith("segnet.cli.")]
    assert offenders == []


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, int] = {}
    cycles = []

    def visit(node, trail):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(trail[trail.index(nxt):] + [nxt] if nxt in trail else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    return cycles


def dependencies(lazy: bool) -> dict[str, set[str]]:
    """Who imports whom inside the package (a module importing its own package's ``__init__`` aside); the
    package's lazy re-exports (``segnet.Segmenter``) are its public face, not a dependency."""
    graph = {}
    for name, path in ALL.items():
        found = set()
        for target, top in imports(name, path):
            if target not in ALL or target == name or (name == "segnet" and not top) or (not lazy and not top):
                continue
            if name.startswith(target + "."):  # a module's own package: imported first by Python anyway
                continue
            found.add(target)
        graph[name] = found
    return graph


def test_top_level_imports_have_no_cycle():
    assert find_cycles(dependencies(lazy=False)) == []


def test_no_import_cycle_even_through_imports_inside_functions():
    assert find_cycles(dependencies(lazy=True)) == []


#: ``segnet/run/`` by role, lowest first: a module imports only from roles before its own (lazily or not).
RUN_ROLES = [
    ["segnet.run.job", "segnet.run.events", "segnet.run.stats", "segnet.run.video", "segnet.run.children"],  # leaves
    # what a string names; the one rule about what is written; a network output's sending process
    ["segnet.run.uris", "segnet.run.writes", "segnet.run.sending"],
    ["segnet.run.inputs", "segnet.run.outputs"],  # the kinds of inputs and outputs, and their registries
    ["segnet.run.feeds"],  # what the loop consumes
    ["segnet.run.planning", "segnet.run.threads", "segnet.run.processes", "segnet.run.ray",  # plan, executors
     "segnet.run.device"],
    ["segnet.run.shards"],  # an executor made of executors: the device executor in several processes
    ["segnet.run.loop"],
    ["segnet.run"],
]


def test_run_roles_cover_the_package():
    assert sorted(m for m in ALL if m == "segnet.run" or m.startswith("segnet.run.")) == \
        sorted(m for role in RUN_ROLES for m in role)


@pytest.mark.parametrize("name", [m for role in RUN_ROLES for m in role])
def test_run_roles_import_downwards_only(name):
    rank = {m: i for i, role in enumerate(RUN_ROLES) for m in role}
    wrong = [target for target, _ in imports(name, ALL[name])
             if target in rank and target != name and rank[target] >= rank[name]]
    assert wrong == []


def test_a_cycle_hidden_in_a_function_is_found():
    graph = {"a": {"b"}, "b": {"a"}}
    assert find_cycles(graph) == [["a", "b", "a"]]


def test_the_rules_bite():
    """The checks above find what they look for: a made-up module breaking each rule."""
    source = "import tensorrt\nfrom ..cli import console\nfrom .. import segmenter\n"
    fake = PACKAGE / "zoo" / "_made_up.py"
    found = {t for t, _ in imports_of_source("segnet.zoo._made_up", fake, source)}
    assert {"tensorrt", "segnet.cli.console", "segnet.segmenter"} <= found
    assert layer_of("segnet.segmenter") > layer_of("segnet.zoo._made_up")


def imports_of_source(name, path, source):
    original = Path.read_text
    try:
        Path.read_text = lambda self, *a, **k: source if self == path else original(self, *a, **k)
        return imports(name, path)
    finally:
        Path.read_text = original
