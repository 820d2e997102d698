"""What a TensorRT backend's source touches, read from its syntax tree, and whether its ``TRT_API`` table says so.

The source declares ``TRT_VARIABLES`` (variable name -> TensorRT class) and ``TRT_API`` (per path
"common", "10", "11", "rtx": TensorRT name -> the arguments passed, or None for an attribute, property or enum
member). Functions named ``*_trt10`` / ``*_trt11`` / ``*_rtx`` are that path's; the rest is "common".
No TensorRT is needed here; ``conformance.py`` checks the table against the real bindings.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

PATHS = ("10", "11", "rtx")
#: The name ending of a function that runs on one path only.
SUFFIXES = {"10": "_trt10", "11": "_trt11", "rtx": "_rtx"}


@dataclass(frozen=True)
class Use:
    name: str  # "Builder.create_network", "BuilderFlag.FP16", "__version__"
    path: str  # "common", "10", "11" or "rtx"
    line: int
    call: tuple[int, tuple[str, ...]] | None = None  # (positional count, keyword names) when called
    override: tuple[str, ...] | None = None  # parameter names, for a method of a subclass of a TensorRT class


def declared(source: str) -> tuple[dict, dict]:
    """``TRT_VARIABLES`` and ``TRT_API`` as written (they must be literals)."""
    found = {}
    for node in ast.parse(source).body:
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None
        if isinstance(target, ast.Name) and target.id in ("TRT_VARIABLES", "TRT_API"):
            found[target.id] = ast.literal_eval(node.value)
    return found.get("TRT_VARIABLES", {}), found.get("TRT_API", {"common": {}})


def path_of(function_name: str, inherited: str) -> str:
    for path in PATHS:
        if function_name.endswith(SUFFIXES[path]):
            return path
    return inherited


class _Scanner(ast.NodeVisitor):
    def __init__(self, variables: dict[str, str]):
        self.variables = variables
        self.uses: list[Use] = []
        self.problems: list[str] = []
        self.path = "common"
        self.guards: list[set[str]] = []  # version strings that enclosing `if ... == "NN"` tests require

    def visit_FunctionDef(self, node):
        outer, self.path = self.path, path_of(node.name, self.path)
        self.generic_visit(node)
        self.path = outer

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node):
        """A subclass of a TensorRT class (the logger): each of its methods overrides TensorRT's."""
        for base in node.bases:
            name = self.resolve(base)
            if name is None:
                continue
            self.uses.append(Use(name, self.path, base.lineno))
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and not item.name.startswith("__"):
                    params = tuple(a.arg for a in item.args.args[1:])
                    self.uses.append(Use(f"{name}.{item.name}", self.path, item.lineno, override=params))
        for base in node.bases:
            if self.resolve(base) is None:
                self.visit(base)
        for item in node.body:
            self.visit(item)

    def visit_If(self, node):
        """The body of ``if <...> == "10":`` may call ``*_trt10`` functions."""
        self.visit(node.test)
        versions = set()
        for compare in ast.walk(node.test):
            if isinstance(compare, ast.Compare) and all(isinstance(op, ast.Eq) for op in compare.ops):
                versions |= {c.value for c in [compare.left, *compare.comparators]
                             if isinstance(c, ast.Constant) and c.value in PATHS}
        self.guards.append(versions)
        for item in node.body:
            self.visit(item)
        self.guards.pop()
        for item in node.orelse:
            self.visit(item)

    def visit_Call(self, node):
        if isinstance(node.func, ast.Name):
            target = path_of(node.func.id, "common")
            if target != "common" and target != self.path and not any(target in g for g in self.guards):
                self.problems.append(f"line {node.lineno}: {node.func.id}() is TensorRT {target} code, called "
                                     f"without an `if ... == \"{target}\"` gate")
        name = self.resolve(node.func)
        if name is None:
            self.visit(node.func)
        elif not self.whole_chain(node.func, name):  # trt.__version__.split(): a read of __version__
            self.visit_Attribute(node.func)
        else:
            self.uses.append(Use(name, self.path, node.lineno, call=(len(node.args),
                                                                      tuple(k.arg for k in node.keywords))))
            self.visit_inner(node.func)
        for arg in [*node.args, *node.keywords]:
            self.visit(arg)

    def visit_Attribute(self, node):
        name = self.resolve(node)
        if name is None:
            self.generic_visit(node)
        else:
            self.uses.append(Use(name, self.path, node.lineno))
            self.visit_inner(node)

    @staticmethod
    def whole_chain(node, name: str) -> bool:
        """Whether the TensorRT name is the whole attribute chain (so a call calls it)."""
        return isinstance(node, ast.Attribute) and node.attr == name.split(".")[-1]

    def visit_inner(self, node):
        """Visit what a resolved chain's base contains (e.g. the call in ``f().x``), not the chain itself."""
        while isinstance(node, ast.Attribute):
            node = node.value
        if not isinstance(node, ast.Name):
            self.visit(node)

    def resolve(self, node) -> str | None:
        """The TensorRT name an attribute chain stands for, or None when it is not TensorRT's."""
        parts = []
        while isinstance(node, ast.Attribute):
            parts.insert(0, node.attr)
            node = node.value
        if not isinstance(node, ast.Name) or not parts:
            return None
        if node.id == "trt":
            # trt.Class[.member[.NESTED...]]; a module attribute (trt.__version__) ends the chain
            kept = parts[:1] if not parts[0][0].isupper() else parts[:2]
            for part in parts[2:]:
                if not part[0].isupper():
                    break
                kept.append(part)
            return ".".join(kept)
        if node.id == "self" and len(parts) >= 2 and parts[0] in self.variables:
            return f"{self.variables[parts[0]]}.{parts[1]}"
        if node.id in self.variables:
            return f"{self.variables[node.id]}.{parts[0]}"
        return None


def scan(source: str) -> tuple[list[Use], list[str]]:
    """Every TensorRT use in ``source`` and any ungated call of version-specific code."""
    variables, _ = declared(source)
    scanner = _Scanner(variables)
    scanner.visit(ast.parse(source))
    return scanner.uses, scanner.problems


def check_table(source: str) -> list[str]:
    """Problems with the source's own ``TRT_API``: uses it does not list (or lists for another path), calls
    whose arguments differ from the listed ones, and listed names nothing uses."""
    _, table = declared(source)
    uses, problems = scan(source)
    used = set()
    for use in uses:
        allowed = dict(table.get("common", {}))
        if use.path != "common":
            allowed.update(table.get(use.path, {}))
        if use.name not in allowed:
            elsewhere = [p for p in table if use.name in table[p]]
            where = f" (listed for {', '.join(elsewhere)} only)" if elsewhere else ""
            problems.append(f"line {use.line}: {use.name} is used on the {use.path} path but not listed "
                            f"for it in TRT_API{where}")
            continue
        used.add((use.path, use.name))
        listed = allowed[use.name]
        if use.override is not None:
            if listed != use.override:
                problems.append(f"line {use.line}: {use.name} overridden with {use.override}, listed as {listed}")
        elif use.call is not None:
            positional, keywords = use.call
            if listed is None:
                problems.append(f"line {use.line}: {use.name} is called but listed as an attribute")
            elif positional + len(keywords) != len(listed) or not set(keywords) <= set(listed[positional:]):
                problems.append(f"line {use.line}: {use.name} called with {positional} positional and "
                                f"{list(keywords)} keyword arguments, listed as {listed}")
        elif listed is not None and "." in use.name:
            problems.append(f"line {use.line}: {use.name} is listed as called {listed} but only read")
    for path, names in table.items():
        for name in names:
            if not any(n == name and (p == path or path == "common") for p, n in used):
                problems.append(f"TRT_API[{path!r}] lists {name}, which nothing on that path uses")
    return problems
