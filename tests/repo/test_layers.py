"""The package's layers, enforced from its import graph (issue 14).

Every module under ``ingressd/`` belongs to one layer, and a module may import
its own layer and lower ones only, so that the folder names tell the pipeline:
sources feed one store, a pure builder turns snapshots into a table, a pure
decision turns a request and the table into an action, the data path carries
it out. Read from the source with ``ast``, not by importing: every import
counts, whether at module level, inside a function (a lazy import) or under
``if TYPE_CHECKING:``, relative or absolute.

A module lands in a layer by the folder it is in; a module directly in
``ingressd/`` (the process shell) is listed by name, so a new one there, or a
new folder, fails ``test_every_module_has_a_layer`` until it is placed here
deliberately.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from e2e_helpers import REPO_ROOT

PACKAGE = REPO_ROOT / "ingressd"

Layers = tuple[tuple[str, tuple[str, ...]], ...]

# Bottom to top: (layer, what it holds). "pkg.*" is the package and everything
# under it; any other name is that one module.
LAYERS: Layers = (
    # Every module imports the package's __init__ implicitly: it imports only
    # _build, which settles (first of all) whether the compiled build runs.
    ("package", ("ingressd", "ingressd._build")),
    # The pipeline's data: the store of Kubernetes objects, the routing table,
    # the typed policy a route carries. Plain types, importing no other layer.
    ("model", ("ingressd.model.*",)),
    # ingress-nginx's annotations and Secrets: parsing, validation, one module
    # per feature family (its settings come from model, its machinery is here).
    ("policy", ("ingressd.policy.*",)),
    # Kubernetes API plumbing: client configuration, leader election, status
    # and Events, YAML as Kubernetes reads it.
    ("kube", ("ingressd.kube.*",)),
    # What feeds the store: manifest folders, the cluster watch.
    ("sources", ("ingressd.sources.*",)),
    # The pure builder (snapshot -> table) and the pure decision (request -> action).
    ("routing", ("ingressd.routing.*",)),
    # Request counts, /metrics, the access log, the process log.
    ("observe", ("ingressd.observe.*",)),
    # The layer-4 data path (nginx's stream module): the PROXY protocol, peeking
    # at first bytes, TCP and UDP splicing. Below proxy, which takes the PROXY
    # protocol's client address from it.
    ("stream", ("ingressd.stream.*",)),
    # The data path.
    ("proxy", ("ingressd.proxy.*",)),
    # Keeping the live table current: build, warm TLS, swap, report; cluster mode.
    ("control", ("ingressd.control.*",)),
    # The process shell: the command line, the serving process, its workers.
    (
        "shell",
        (
            "ingressd.__main__",
            "ingressd.admission_options",
            "ingressd.app",
            "ingressd.check",
            "ingressd.cli",
            "ingressd.config",
            "ingressd.demo",
            "ingressd.diff.*",
            "ingressd.echo",
            "ingressd.export",
            "ingressd.gateway_api",
            "ingressd.listeners",
            "ingressd.serving",
            "ingressd.workers",
        ),
    ),
)


@dataclass(frozen=True, slots=True)
class Import:
    module: str  # the importing module
    target: str  # the ingressd module it imports
    file: str  # the importing file, from the repository's root
    line: int

    def where(self) -> str:
        return f"{self.file}:{self.line}"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules(root: Path = PACKAGE) -> dict[str, Path]:
    """Every module of the package by dotted name (packages by their ``__init__.py``)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" not in path.parts:
            found[module_name(path, root)] = path
    return found


def package_of(module: str, path: Path) -> str:
    """The package relative imports in ``module`` start from."""
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def imported(module: str, path: Path, file: str, known: set[str]) -> Iterator[Import | str]:
    """The ingressd modules ``module`` imports, anywhere in its source; a string
    for an ingressd name that is no module (an import that cannot work)."""
    top = module.split(".")[0]
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == top or alias.name.startswith(top + "."):
                    yield _resolve(module, alias.name, file, node.lineno, known)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_of(module, path).split(".")
                if node.level - 1 >= len(base):
                    yield f"{file}:{node.lineno}: relative import beyond the package"
                    continue
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
                if target != top and not target.startswith(top + "."):
                    continue
            for alias in node.names:
                # ``from pkg import sub``: the submodule; ``from mod import name``: mod.
                sub = f"{target}.{alias.name}"
                name = sub if sub in known else target
                yield _resolve(module, name, file, node.lineno, known)


def _resolve(module: str, target: str, file: str, line: int, known: set[str]) -> Import | str:
    if target not in known:
        return f"{file}:{line}: {module} imports {target}, which is no module"
    return Import(module, target, file, line)


def layer_of(module: str, layers: Layers = LAYERS) -> int | None:
    for index, (_, members) in enumerate(layers):
        for member in members:
            if member.endswith(".*"):
                package = member[:-2]
                if module == package or module.startswith(package + "."):
                    return index
            elif module == member:
                return index
    return None


def graph(root: Path = PACKAGE) -> tuple[list[Import], list[str]]:
    """Every import between ingressd modules, and the imports of names that are no module."""
    known = modules(root)
    names = set(known)
    edges: list[Import] = []
    broken: list[str] = []
    for module, path in known.items():
        file = path.relative_to(root.parent).as_posix()
        for found in imported(module, path, file, names):
            if isinstance(found, str):
                broken.append(found)
            elif found.target != module and found not in edges:
                edges.append(found)  # once per line, however many names it imports
    return edges, broken


def upward(edges: Iterable[Import], layers: Layers = LAYERS) -> list[str]:
    out = []
    for edge in edges:
        mine, theirs = layer_of(edge.module, layers), layer_of(edge.target, layers)
        if mine is not None and theirs is not None and theirs > mine:
            out.append(
                f"{edge.where()}: {edge.module} (layer {layers[mine][0]}) imports "
                f"{edge.target} (layer {layers[theirs][0]}), a higher layer"
            )
    return out


def cycles(edges: Iterable[Import]) -> list[tuple[list[str], list[Import]]]:
    """Each group of modules that import each other in a cycle (a strongly connected
    component, found with Tarjan's algorithm), with one cycle of imports through it."""
    out_edges: dict[str, list[Import]] = {}
    for edge in edges:
        out_edges.setdefault(edge.module, []).append(edge)
        out_edges.setdefault(edge.target, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for edge in out_edges[node]:
            if edge.target not in index:
                visit(edge.target)
                low[node] = min(low[node], low[edge.target])
            elif edge.target in on_stack:
                low[node] = min(low[node], index[edge.target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(out_edges):
        if node not in index:
            visit(node)
    return [(group, _cycle_in(group, out_edges)) for group in sorted(groups)]


def _cycle_in(group: list[str], out_edges: dict[str, list[Import]]) -> list[Import]:
    """The shortest cycle through the group's first module (breadth first)."""
    members = set(group)
    start = group[0]
    came: dict[str, Import] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for edge in sorted(out_edges[node], key=lambda e: (e.target, e.line)):
                if edge.target not in members or edge.target in came:
                    continue
                came[edge.target] = edge
                if edge.target == start:
                    path = [edge]
                    while path[0].module != start:
                        path.insert(0, came[path[0].module])
                    return path
                following.append(edge.target)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # a strongly connected group has one


def describe_cycle(group: list[str], cycle: list[Import]) -> str:
    steps = [cycle[0].module] + [f"{e.target} ({e.where()})" for e in cycle]
    return f"{len(group)} modules in a cycle: {', '.join(group)}\n    for one: {' -> '.join(steps)}"


# -- the tests ------------------------------------------------------------------------------


def test_every_module_has_a_layer() -> None:
    unplaced = [m for m in modules() if layer_of(m) is None]
    if unplaced:
        pytest.fail(
            "modules the layer map does not place (put them in a layer's folder, or list "
            f"them in LAYERS in {Path(__file__).name}): {', '.join(unplaced)}",
            pytrace=False,
        )


def test_the_layer_map_names_only_existing_modules() -> None:
    known = modules()
    stale = []
    for _, members in LAYERS:
        for member in members:
            name = member.removesuffix(".*")
            if name not in known:
                stale.append(member)
    if stale:
        pytest.fail(f"LAYERS names what does not exist: {', '.join(stale)}", pytrace=False)


def test_every_import_names_a_module() -> None:
    _, broken = graph()
    if broken:
        pytest.fail(
            "imports of ingressd names that are no module:\n" + "\n".join(broken), pytrace=False
        )


def test_no_module_imports_a_higher_layer() -> None:
    edges, _ = graph()
    found = upward(edges)
    if found:
        pytest.fail("imports that go up a layer:\n" + "\n".join(found), pytrace=False)


def test_no_import_cycle() -> None:
    edges, _ = graph()
    found = cycles(edges)
    if found:
        text = "\n".join(describe_cycle(group, cycle) for group, cycle in found)
        pytest.fail(f"import cycles:\n{text}", pytrace=False)


def test_each_package_says_its_job_in_one_line() -> None:
    for name, path in modules().items():
        if path.name != "__init__.py" or name == "ingressd":
            continue
        tree = ast.parse(path.read_text())
        doc = ast.get_docstring(tree)
        assert doc and "\n" not in doc.strip(), f"{path}: a one-line docstring saying its job"
        assert len(tree.body) == 1, f"{path}: the docstring only (no re-exports)"


# -- the checks check ------------------------------------------------------------------------


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "ingressd"


TOY_LAYERS: Layers = (
    ("package", ("ingressd",)),
    ("low", ("ingressd.low.*",)),
    ("high", ("ingressd.high.*", "ingressd.top")),
)


def test_every_kind_of_import_is_seen(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "ingressd/__init__.py": '"""x"""\n',
            "ingressd/top.py": "import ingressd.high.b\n",
            "ingressd/low/__init__.py": '"""x"""\n',
            "ingressd/low/a.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n"
                "    from ..high.b import B\n"  # TYPE_CHECKING, relative
                "def f():\n"
                "    from ingressd.high import c\n"  # in a function, absolute, a submodule
                "    from .. import top\n"  # relative, a module of the package
            ),
            "ingressd/high/__init__.py": '"""x"""\n',
            "ingressd/high/b.py": "from ..low import a\nfrom ..low.a import f\n",
            "ingressd/high/c.py": "from . import b\nfrom .missing import x\n",
        },
    )
    edges, broken = graph(root)
    seen = {(e.module, e.target, e.line) for e in edges}
    assert seen == {
        ("ingressd.top", "ingressd.high.b", 1),
        ("ingressd.low.a", "ingressd.high.b", 3),
        ("ingressd.low.a", "ingressd.high.c", 5),
        ("ingressd.low.a", "ingressd.top", 6),
        ("ingressd.high.b", "ingressd.low.a", 1),
        ("ingressd.high.b", "ingressd.low.a", 2),
        ("ingressd.high.c", "ingressd.high.b", 1),
    }
    assert broken == [
        "ingressd/high/c.py:2: ingressd.high.c imports ingressd.high.missing, which is no module"
    ]
    up = upward(edges, TOY_LAYERS)
    tail = "(layer high), a higher layer"
    assert up == [
        f"ingressd/low/a.py:3: ingressd.low.a (layer low) imports ingressd.high.b {tail}",
        f"ingressd/low/a.py:5: ingressd.low.a (layer low) imports ingressd.high.c {tail}",
        f"ingressd/low/a.py:6: ingressd.low.a (layer low) imports ingressd.top {tail}",
    ]
    [(group, cycle)] = cycles(edges)
    assert group == ["ingressd.high.b", "ingressd.high.c", "ingressd.low.a", "ingressd.top"]
    assert [e.module for e in cycle] == ["ingressd.high.b", "ingressd.low.a"]
    assert describe_cycle(group, cycle) == (
        "4 modules in a cycle: ingressd.high.b, ingressd.high.c, ingressd.low.a, ingressd.top\n"
        "    for one: ingressd.high.b -> ingressd.low.a (ingressd/high/b.py:1) -> "
        "ingressd.high.b (ingressd/low/a.py:3)"
    )
    assert layer_of("ingressd.elsewhere", TOY_LAYERS) is None
    assert layer_of("ingressd.high", TOY_LAYERS) == 2
