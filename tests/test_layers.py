"""The package's layering, read from the source (ast), not from a running import.

- **No arrow up the layers.** Each package imports only from the layers below it, in the order
  that ``docs/architecture.md`` draws under "## Layers" (the block is parsed here, so the doc
  and this test cannot drift apart). An import under ``if TYPE_CHECKING:`` is a type's name,
  not an arrow, and is allowed; an import inside a function is an arrow like any other.
- **No private name across packages.** A module does not import ``_name`` from another
  package's module, and does not read or write ``obj._name`` where ``_name`` is defined only in
  another package (an attribute set on ``self``, a class attribute, a ``__slots__`` entry, a
  module-level name or function there): what a layer offers the others is public.
  A private top-level module the doc draws as a layer (``actorflow._errors``,
  ``actorflow._limits``: shared by all) is a layer of its own, and its module name is not a
  reach.
- **No import cycle**, between modules, other than TYPE_CHECKING-only ones.

``python tests/test_layers.py`` prints every violation, one a line.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARCHITECTURE = ROOT / "docs" / "architecture.md"
#: The public face: the package itself and its top-level modules other than the errors.
FACE = "face"


# -- the layers, from docs/architecture.md ---------------------------------------------------------


def layer_order(doc: Path = ARCHITECTURE) -> tuple[str, ...]:
    """The layers bottom-up, from the code block under "## Layers": one line per layer,
    ``actorflow/<pkg>/`` or ``actorflow/<module>.py``, drawn top-down. ``__init__.py`` is the
    public face (:data:`FACE`)."""
    text = doc.read_text()
    section = text.split("\n## Layers", 1)[1]
    block = section.split("```", 2)[1]
    order = []
    for line in block.splitlines():
        m = re.match(r"\s*actorflow/(\S+?)(/|\.py)?\s", line + " ")
        if not m:
            continue
        name = m.group(1)
        order.append(FACE if name == "__init__" else name)
    return tuple(reversed(order))


# -- reading the package ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Imp:
    """One imported module (and, for ``from M import a``, the names taken from it)."""

    importer: str
    target: str
    names: tuple[str, ...]
    path: Path
    line: int
    type_checking: bool


@dataclass
class Package:
    """The modules of a source tree, their imports and the private names each package
    defines."""

    root: Path  # the folder holding the top-level package
    top: str  # the top-level package's name
    modules: dict[str, Path] = field(default_factory=dict)
    trees: dict[str, ast.Module] = field(default_factory=dict)

    @classmethod
    def load(cls, root: Path, top: str) -> Package:
        pkg = cls(root, top)
        for path in sorted((root / top).rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            name = ".".join(parts)
            pkg.modules[name] = path
            pkg.trees[name] = ast.parse(path.read_text(), str(path))
        return pkg

    def is_package(self, module: str) -> bool:
        return self.modules[module].name == "__init__.py"

    def group(self, module: str) -> str:
        """The layer a module belongs to: its package under the top one, the name of a
        private top-level module (``_errors``, ``_limits``), or :data:`FACE` for the top
        package and its other top-level modules (``__main__``, ``testing``)."""
        parts = module.split(".")
        if len(parts) == 1:
            return FACE
        if len(parts) == 2 and not self.is_package(module):
            return parts[1] if _private(parts[1]) else FACE
        return parts[1]

    def is_shared_module(self, module: str) -> bool:
        """A private top-level module, a layer of its own (``actorflow._errors``)."""
        parts = module.split(".")
        return (len(parts) == 2 and module in self.modules and not self.is_package(module)
                and _private(parts[1]))

    def _resolve(self, module: str, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        base = module.split(".")
        if not self.is_package(module):
            base = base[:-1]
        base = base[: len(base) - (node.level - 1)]
        return ".".join([*base, *([node.module] if node.module else [])])

    def imports(self, module: str) -> Iterator[Imp]:
        """Every import of a module of this package in ``module``, with its line and
        whether it sits under ``if TYPE_CHECKING:``."""
        path = self.modules[module]

        def walk(node: ast.AST, tc: bool) -> Iterator[Imp]:
            if isinstance(node, ast.If) and _is_type_checking(node.test):
                for child in node.body:
                    yield from walk(child, True)
                for child in node.orelse:
                    yield from walk(child, tc)
                return
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if self._ours(alias.name):
                        yield Imp(module, alias.name, (), path, node.lineno, tc)
            elif isinstance(node, ast.ImportFrom):
                source = self._resolve(module, node)
                if self._ours(source):
                    plain: list[str] = []
                    for alias in node.names:
                        sub = f"{source}.{alias.name}"
                        if sub in self.modules:  # ``from pkg import submodule``
                            yield Imp(module, sub, (), path, node.lineno, tc)
                        else:
                            plain.append(alias.name)
                    if plain:
                        yield Imp(module, source, tuple(plain), path, node.lineno, tc)
            for child in ast.iter_child_nodes(node):
                yield from walk(child, tc)

        yield from walk(self.trees[module], False)

    def _ours(self, name: str) -> bool:
        return name == self.top or name.startswith(self.top + ".")

    def private_definitions(self) -> dict[str, set[str]]:
        """Layer -> the private names its modules define: module-level names and functions,
        class attributes and methods, ``__slots__`` entries, and attributes set on ``self``
        or ``cls``."""
        out: dict[str, set[str]] = {}
        for module, tree in self.trees.items():
            names = out.setdefault(self.group(module), set())
            for node in ast.walk(tree):
                for name in _defined_names(node):
                    if _private(name):
                        names.add(name)
        return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__") and name != "_"


def _targets(node: ast.AST) -> list[ast.expr]:
    if isinstance(node, ast.Assign):
        return list(node.targets)
    if isinstance(node, ast.AnnAssign | ast.AugAssign):
        return [node.target]
    return []


def _defined_names(node: ast.AST) -> Iterator[str]:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        yield node.name
    for target in _targets(node):
        for t in ast.walk(target):
            if isinstance(t, ast.Name):
                yield t.id
            elif (isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name)
                  and t.value.id in ("self", "cls")):
                yield t.attr
    if (isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets)):
        for c in ast.walk(node.value):
            if isinstance(c, ast.Constant) and isinstance(c.value, str):
                yield c.value


# -- the checks --------------------------------------------------------------------------------


def _where(pkg: Package, imp_path: Path, line: int) -> str:
    return f"{imp_path.relative_to(pkg.root)}:{line}"


def upward_imports(pkg: Package, order: tuple[str, ...]) -> list[str]:
    rank = {name: i for i, name in enumerate(order)}
    out = []
    for module in pkg.modules:
        mine = pkg.group(module)
        for imp in pkg.imports(module):
            theirs = pkg.group(imp.target)
            if imp.type_checking or theirs == mine:
                continue
            if mine not in rank or theirs not in rank:
                out.append(f"{_where(pkg, imp.path, imp.line)}: {imp.target} is in no layer of "
                           f"docs/architecture.md ({mine} -> {theirs})")
            elif rank[theirs] > rank[mine]:
                out.append(f"{_where(pkg, imp.path, imp.line)}: {mine} imports {imp.target} "
                           f"({theirs}, a layer above)")
    return out


def private_reaches(pkg: Package) -> list[str]:
    defined = pkg.private_definitions()
    out = []
    for module, tree in pkg.trees.items():
        mine = pkg.group(module)
        path = pkg.modules[module]
        for imp in pkg.imports(module):
            theirs = pkg.group(imp.target)
            if theirs == mine:
                continue
            where = _where(pkg, imp.path, imp.line)
            last = imp.target.rsplit(".", 1)[-1]
            if _private(last) and not pkg.is_shared_module(imp.target):
                out.append(f"{where}: {mine} imports the private module {imp.target}")
            for name in imp.names:
                if _private(name):
                    out.append(f"{where}: {mine} imports {name} from {imp.target} ({theirs})")
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute) or not _private(node.attr):
                continue
            if node.attr in defined.get(mine, set()):
                continue
            owners = sorted(g for g, names in defined.items() if node.attr in names)
            if owners:
                out.append(f"{_where(pkg, path, node.lineno)}: {mine} uses .{node.attr} "
                           f"(private to {', '.join(owners)})")
    return out


def import_cycles(pkg: Package) -> list[str]:
    """One line per strongly connected set of modules (TYPE_CHECKING imports left out), with
    one cycle through it."""
    graph: dict[str, set[str]] = {m: set() for m in pkg.modules}
    for module in pkg.modules:
        for imp in pkg.imports(module):
            if not imp.type_checking and imp.target in graph and imp.target != module:
                graph[module].add(imp.target)
    out = []
    for scc in _sccs(graph):
        if len(scc) > 1:
            cycle = _a_cycle(graph, scc)
            out.append(f"import cycle among {len(scc)} modules: {' -> '.join(cycle)}")
    return out


def _sccs(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components, iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                scc = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    scc.append(top)
                    if top == node:
                        break
                out.append(sorted(scc))
    return out


def _a_cycle(graph: dict[str, set[str]], scc: list[str]) -> list[str]:
    """A shortest cycle through the first module of ``scc`` (breadth first, inside it)."""
    members = set(scc)
    start = scc[0]
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for child in sorted(graph[node] & members):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [*reversed(path), start]
                if child not in parent:
                    parent[child] = node
                    nxt.append(child)
        frontier = nxt
    return scc


def violations(pkg: Package, order: tuple[str, ...]) -> dict[str, list[str]]:
    return {"upward import": upward_imports(pkg, order),
            "private name across packages": private_reaches(pkg),
            "import cycle": import_cycles(pkg)}


# -- the tests -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def actorflow_pkg() -> Package:
    return Package.load(ROOT, "actorflow")


def test_the_layers_are_the_architecture_docs(actorflow_pkg: Package) -> None:
    order = layer_order()
    assert order[0] == "_errors"
    assert {"runtime", "transport", "cluster", "api", "cli", FACE} <= set(order)
    assert order.index("runtime") < order.index("api") < order.index(FACE)
    packages = {actorflow_pkg.group(m) for m in actorflow_pkg.modules}
    assert packages <= set(order), f"packages the doc does not place: {packages - set(order)}"


def test_no_import_runs_up_the_layers(actorflow_pkg: Package) -> None:
    found = upward_imports(actorflow_pkg, layer_order())
    assert not found, "\n".join(found)


def test_no_private_name_crosses_packages(actorflow_pkg: Package) -> None:
    found = private_reaches(actorflow_pkg)
    assert not found, "\n".join(found)


def test_no_import_cycle(actorflow_pkg: Package) -> None:
    found = import_cycles(actorflow_pkg)
    assert not found, "\n".join(found)


def test_the_checks_find_what_they_look_for(tmp_path: Path) -> None:
    """A small package with one fault of each kind, and the allowed forms beside them."""
    files = {
        "pkg/__init__.py": "",
        "pkg/_errors.py": "class Boom(Exception):\n    pass\n",
        "pkg/_limits.py": "BIG = 1 << 30\n",
        "pkg/low/__init__.py": "",
        "pkg/low/core.py": (
            "from typing import TYPE_CHECKING\n"
            "from pkg._errors import Boom\n"
            "if TYPE_CHECKING:\n"
            "    from pkg.high.app import App\n"  # allowed: a type's name
            "class Slot:\n"
            "    __slots__ = ('_cell',)\n"
            "    def __init__(self):\n"
            "        self._cell = None\n"
            "        self._state = 0\n"
            "def _helper():\n"
            "    from pkg.high import tool\n"  # up, inside a function: still an arrow
            "    return tool\n"
            "from pkg._limits import BIG\n"),  # a shared private module, drawn below: fine
        "pkg/high/__init__.py": "",
        "pkg/high/app.py": (
            "from pkg.low.core import Slot, _helper\n"  # a private name imported
            "from . import other\n"
            "class App:\n"
            "    def __init__(self, slot: Slot):\n"
            "        self._mine = 1\n"
            "        self.cell = slot._cell\n"  # a private slot of another package
            "        self.mine = self._mine\n"),  # its own: fine
        "pkg/high/other.py": "from pkg.high import app\n",  # app <-> other
        "pkg/high/tool.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    pkg = Package.load(tmp_path, "pkg")
    order = ("_errors", "_limits", "low", "high", FACE)
    up = upward_imports(pkg, order)
    assert up == ["pkg/low/core.py:11: low imports pkg.high.tool (high, a layer above)"]
    reaches = private_reaches(pkg)
    assert reaches == ["pkg/high/app.py:1: high imports _helper from pkg.low.core (low)",
                       "pkg/high/app.py:6: high uses ._cell (private to low)"]
    cycles = import_cycles(pkg)
    assert len(cycles) == 1 and "pkg.high.app -> pkg.high.other -> pkg.high.app" in cycles[0]
    assert "pkg.low.core" not in cycles[0]  # core -> app is TYPE_CHECKING only


if __name__ == "__main__":
    pkg = Package.load(ROOT, "actorflow")
    total = 0
    for kind, found in violations(pkg, layer_order()).items():
        print(f"## {kind}: {len(found)}")
        print("\n".join(found))
        total += len(found)
    sys.exit(1 if total else 0)
