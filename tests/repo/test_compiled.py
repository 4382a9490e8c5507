"""The compiled build (setup.py, mypyc) and the pure-Python fallback.

``scripts/test.sh`` runs the whole suite on the compiled build, then the unit
tests again on pure Python; ``INGRESSD_EXPECT_BUILD`` tells these tests which
one they are meant to be on, so a build that silently fell back fails here.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import importlib
import ipaddress
import json
import os
import pickle
import subprocess
import sys
import types
from pathlib import Path

import pytest
from e2e_helpers import REPO_ROOT

import ingressd
from ingressd._build import decide
from ingressd.config import ServeConfig
from ingressd.kube.config import ClusterConfig
from ingressd.model.problems import Problem
from ingressd.observe.stats import Report
from ingressd.proxy.settings import ProxySettings
from ingressd.routing.build import BuildOptions
from ingressd.workers import DRAIN, Delta


def compiled_modules() -> list[str]:
    """setup.py's COMPILED, read without running setup.py."""
    tree = ast.parse((REPO_ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "COMPILED":
            return [elt.value for elt in node.value.elts]  # type: ignore[attr-defined]
    raise AssertionError("setup.py has no COMPILED")


def test_the_compiled_modules_type_check() -> None:
    """mypyc compiles only what mypy accepts; a type error would quietly make
    the build pure Python (or fail it where compiling is required)."""
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--follow-imports=silent", *compiled_modules()],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_build_is_the_one_expected() -> None:
    expected = os.environ.get("INGRESSD_EXPECT_BUILD")
    if expected is None:
        pytest.skip("INGRESSD_EXPECT_BUILD not set (scripts/test.sh sets it)")
    names = [m[:-3].replace("/", ".") for m in compiled_modules()]
    files = [importlib.import_module(name).__file__ or "" for name in names]
    if expected == "compiled":
        assert ingressd.BUILD == "compiled with mypyc", ingressd.BUILD
        assert all(f.endswith(".so") for f in files), files
    else:
        assert ingressd.BUILD.startswith("pure Python"), ingressd.BUILD
        assert all(f.endswith(".py") for f in files), files


# -- what crosses to and from worker processes (workers.py: pickled) ---------------------------


def unlike_defaults(cls: type) -> object:
    """An instance of dataclass ``cls`` with every plain field off its default, so a
    field lost or shifted in pickling shows."""
    values: dict[str, object] = {}
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else None
        if isinstance(default, bool):
            values[f.name] = not default
        elif isinstance(default, int | float):
            values[f.name] = default + 7
        elif isinstance(default, str):
            values[f.name] = default + "-x" if default else "x"
    return cls(**values)


def worker_traffic() -> list[object]:
    """Each type that crosses the process boundary: a worker's spawn arguments
    (ServeConfig and what it holds), the deltas it is fed, its reports."""
    proxy = dataclasses.replace(
        unlike_defaults(ProxySettings),  # type: ignore[type-var]
        trusted_proxies=(ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")),
    )
    config = ServeConfig(
        manifests=None,
        cluster=ClusterConfig(publish_status_address=("192.0.2.1",), identity="pod-1"),
        build=BuildOptions(controller_name="example.com/x", ingress_class="x"),
        proxy=proxy,
        workers=2,
        log_format="json",
    )
    obj = {"kind": "Ingress", "metadata": {"namespace": "ns", "name": "web"}}
    delta = Delta(
        3,
        True,
        ((obj, "a.yaml"),),
        (("Service", "ns", "gone"),),
        (Problem("Ingress ns/web", "bad", "a.yaml", ("Ingress", "ns", "web")),),
    )
    report = Report({("ns/web", "ns/svc:80", "GET", 200): [1.0, 2.0]}, {}, {}, 5, 1)
    return [config, proxy, delta, report, DRAIN]


@pytest.mark.parametrize("value", worker_traffic(), ids=lambda v: type(v).__name__)
def test_what_crosses_to_worker_processes_pickles(value: object) -> None:
    """Every --workers mode spawns workers with these and talks to them in them.
    Compiled by mypyc, a frozen dataclass pickled the default way (a bare
    instance, then its fields set one by one) cannot be loaded: each compiled
    one that crosses says how it is rebuilt (``__reduce__``)."""
    loaded = pickle.loads(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
    assert type(loaded) is type(value)
    assert loaded == value


def model_values() -> list[object]:
    """Values of the compiled model's frozen dataclasses (model/pickling.py): a
    route's policy with nested ones, and the controller ConfigMap's settings."""
    from ingressd.model.globals import GlobalConfig, TracingConfig
    from ingressd.model.policy import CorsPolicy, LimitConfig, NextUpstream, RoutePolicy

    policy = dataclasses.replace(
        unlike_defaults(RoutePolicy),  # type: ignore[type-var]
        cors=unlike_defaults(CorsPolicy),
        limits=LimitConfig(rps=5, connections=2),
        next_upstream=unlike_defaults(NextUpstream),
        allow_source=(ipaddress.ip_network("10.0.0.0/8"),),
    )
    config = dataclasses.replace(
        unlike_defaults(GlobalConfig),  # type: ignore[type-var]
        tracing=unlike_defaults(TracingConfig),
    )
    return [policy, config, LimitConfig(rpm=60)]


@pytest.mark.parametrize("module", ["ingressd.model.policy", "ingressd.model.globals"])
def test_every_model_dataclass_pickles_by_its_fields(module: str) -> None:
    """A dataclass added to these modules without joining their
    ``pickle_by_fields`` list would pickle on pure Python and fail to load
    once compiled."""
    import copyreg

    from ingressd.model.pickling import by_fields

    loaded = importlib.import_module(module)
    classes = [
        value
        for value in vars(loaded).values()
        if isinstance(value, type)
        and dataclasses.is_dataclass(value)
        and value.__module__ == module
    ]
    assert classes
    assert [c.__name__ for c in classes if copyreg.dispatch_table.get(c) is not by_fields] == []


@pytest.mark.parametrize("value", model_values(), ids=lambda v: type(v).__name__)
def test_model_values_pickle(value: object) -> None:
    """A spawned process is handed them (the shared limits' tests do): each
    loads equal, with what ``__post_init__`` derives made again."""
    loaded = pickle.loads(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
    assert type(loaded) is type(value)
    assert loaded == value
    # Fields left out of equality, derived again on loading:
    cors = getattr(value, "cors", None)
    if cors is not None:
        assert loaded.cors.encoded == cors.encoded != ()  # type: ignore[attr-defined]
    if hasattr(value, "hsts_header"):
        assert loaded.hsts_header == value.hsts_header  # type: ignore[attr-defined]


# -- what is built per request ----------------------------------------------------------


def per_request_classes() -> list[type]:
    from ingressd.model.variables import RequestVars
    from ingressd.proxy.peer import Peer
    from ingressd.routing.decide import Forward, RequestHead, Respond

    return [RequestHead, Forward, Respond, Peer, RequestVars]


@pytest.mark.parametrize("cls", per_request_classes(), ids=lambda c: c.__name__)
def test_what_each_request_builds_is_built_natively(cls: type) -> None:
    """A compiled dataclass keeps the ``__init__`` the dataclasses module
    generates, a Python function (0.78 µs to build a frozen Forward, against
    0.12 native); these are built per request (Peer per connection), so they
    are plain classes, native once compiled."""
    if ingressd.BUILD != "compiled with mypyc":
        pytest.skip(f"not the compiled build: {ingressd.BUILD}")
    assert not dataclasses.is_dataclass(cls)
    assert not isinstance(cls.__init__, types.FunctionType), cls.__init__  # type: ignore[misc]


# Module-level names a compiled module may read without Final: type aliases, which
# only annotations use (a use at run time would be caught by mypy's checks anyway).
TYPE_ALIASES = {"Action", "EventKey", "Header", "Headers", "K", "Parts", "PoolKey"}
TYPE_ALIASES |= {"RequestKey", "StreamKey", "V"}


def module_constants_read_without_final(path: Path) -> list[str]:
    """Module-level names bound once (never rebound by a ``global`` statement)
    that functions of ``path`` read, and that are not declared Final."""
    tree = ast.parse(path.read_text())
    bound: dict[str, int] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                elements = target.elts if isinstance(target, ast.Tuple) else [target]
                for element in elements:
                    if isinstance(element, ast.Name):
                        bound[element.id] = node.lineno
        elif (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.value is not None
            and "Final" not in ast.unparse(node.annotation)
        ):
            bound[node.target.id] = node.lineno
    read: set[str] = set()
    rebound: set[str] = set()
    for function in ast.walk(tree):
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(function):
                if isinstance(node, ast.Name) and node.id in bound:
                    read.add(node.id)
                elif isinstance(node, ast.Global):
                    rebound.update(node.names)
    names = read - rebound - TYPE_ALIASES
    return sorted(f"{path.name}:{bound[name]} {name}" for name in names)


@pytest.mark.parametrize("module", compiled_modules())
def test_constants_of_compiled_modules_are_final(module: str) -> None:
    """mypyc reads a module-level name that is not Final from the module's
    dict at every use: a hash, a lookup and a type check each time (in
    _add_header, seven per request header line). A Final one is a C constant,
    or a static for what is not a literal. Found by the profile of a browser
    request; this keeps the next constant from costing the same."""
    assert module_constants_read_without_final(REPO_ROOT / module) == []


# The objects of other libraries a compiled module calls: attribute access on them
# is generic whatever their type says, so ignoring None on them costs nothing.
FOREIGN_RECEIVERS = ("transport", "parser")


def union_attr_ignores(path: Path) -> list[str]:
    """Lines of ``path`` that ignore mypy's union-attr other than on foreign objects."""
    found = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if "type: ignore[union-attr" in line and not any(
            f"{name}." in line or f"{name}," in line for name in FOREIGN_RECEIVERS
        ):
            found.append(f"{path.name}:{number} {line.strip()}")
    return found


@pytest.mark.parametrize("module", compiled_modules())
def test_compiled_modules_narrow_unions_rather_than_ignore_them(module: str) -> None:
    """``x.attr  # type: ignore[union-attr]`` on an ``Exchange | None`` makes mypyc
    read the attribute, and everything read from what it returns, by name, as
    for any object: on_response_head made 40 such lookups per request, found in
    mypyc's IR. An ``assert x is not None`` keeps them native."""
    assert union_attr_ignores(REPO_ROOT / module) == []


def test_the_final_check_finds_a_constant_without_final(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import Final\nA = 1\nB: Final = 2\nC, D = 3, 4\n_x = 0\n"
        "def f() -> int:\n    global _x\n    _x += 1\n    return A + B + C + _x\n"
    )
    assert module_constants_read_without_final(source) == ["m.py:2 A", "m.py:4 C"]


# -- which build runs (ingressd/_build.py), on a package made up in tmp_path ---------------


def package(tmp_path: Path, *, compiled: bool = True, so: bool = True) -> Path:
    pkg = tmp_path / "ingressd" / "routing"
    pkg.mkdir(parents=True)
    source = pkg / "decide.py"
    source.write_text("X = 1\n")
    if so:
        (pkg / "decide.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    info = {"compiled": compiled, "reason": "" if compiled else "no compiler", "modules": {}}
    if compiled:
        info["modules"] = {"ingressd.routing.decide": digest}
    (tmp_path / "ingressd" / "_build.json").write_text(json.dumps(info))
    return source


def test_a_build_matching_its_sources_runs_compiled(tmp_path: Path) -> None:
    package(tmp_path)
    assert decide(tmp_path, pure=False) == (True, "", frozenset({"ingressd.routing.decide"}))


def test_an_edited_source_makes_every_module_run_from_source(tmp_path: Path) -> None:
    source = package(tmp_path)
    source.write_text("X = 2\n")
    compiled, reason, names = decide(tmp_path, pure=False)
    assert not compiled
    assert reason == "compiled modules are stale (ingressd.routing.decide changed since the build)"
    assert names == {"ingressd.routing.decide"}  # loaded from source by _FromSource


@pytest.mark.parametrize(
    ("kwargs", "pure", "reason"),
    [
        ({}, True, "INGRESSD_PURE_PYTHON=1"),
        ({"compiled": False}, False, "no compiler"),
        ({"so": False}, False, "no compiled module for ingressd.routing.decide"),
    ],
)
def test_pure_python_when_asked_or_not_built(
    tmp_path: Path, kwargs: dict[str, bool], pure: bool, reason: str
) -> None:
    package(tmp_path, **kwargs)
    compiled, why, _ = decide(tmp_path, pure=pure)
    assert not compiled
    assert why.startswith(reason), why


def test_a_compiled_module_an_earlier_build_left_runs_from_source(tmp_path: Path) -> None:
    source = package(tmp_path)
    (source.parent / "build.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")
    compiled, reason, names = decide(tmp_path, pure=False)
    assert not compiled
    assert reason == "build.cpython-311-x86_64-linux-gnu.so is left from an earlier build"
    assert "ingressd.routing.build" in names


def test_no_build_record_means_a_source_tree(tmp_path: Path) -> None:
    compiled, reason, names = decide(tmp_path, pure=False)
    assert (compiled, names) == (False, frozenset())
    assert "no ingressd/_build.json" in reason


def test_version_says_which_build() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ingressd", "--version"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert out.strip() == f"ingressd {ingressd.__version__}, {ingressd.BUILD}"
