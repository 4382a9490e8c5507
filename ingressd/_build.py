"""Which build runs: the hot modules compiled by mypyc, or all pure Python.

``setup.py`` compiles the modules it lists and records, in ``_build.json``,
the digest of each source it compiled. Before any of them is imported this
module checks those digests against the sources beside them: if one changed
since (an editable install being edited), every compiled module is loaded
from source instead, since compiled modules call each other directly and a
mix would run stale code. ``INGRESSD_PURE_PYTHON=1`` in the environment forces
pure Python too. ``BUILD`` says which, and why, for ``--version`` and /metrics.

It imports nothing of ingressd: it runs first, from the package's ``__init__``.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

_ROOT = Path(__file__).resolve().parent.parent


class _FromSource(importlib.abc.MetaPathFinder):
    """Finds ``names`` as their ``.py`` source, never as a compiled extension."""

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.names:
            return None
        source = _ROOT.joinpath(*fullname.split(".")).with_suffix(".py")
        if not source.is_file():
            return None
        return importlib.util.spec_from_file_location(fullname, source)


def decide(
    root: Path = _ROOT, pure: bool = os.environ.get("INGRESSD_PURE_PYTHON") == "1"
) -> tuple[bool, str, frozenset[str]]:
    """(compiled, why not, the modules built compiled), for the ``ingressd``
    package under ``root``; ``pure``: pure Python is asked for."""
    try:
        info = json.loads((root / "ingressd" / "_build.json").read_text())
    except (OSError, ValueError):
        return False, "not built (no ingressd/_build.json: run from a source tree)", frozenset()
    modules: dict[str, str] = info.get("modules") or {}
    names = frozenset(modules)
    if not info.get("compiled"):
        return False, str(info.get("reason") or "built without compiling"), names
    if pure:
        return False, "INGRESSD_PURE_PYTHON=1", names
    for name, digest in sorted(modules.items()):
        source = root.joinpath(*name.split(".")).with_suffix(".py")
        try:
            current = hashlib.sha256(source.read_bytes()).hexdigest()
        except OSError:
            continue  # an installed wheel may carry no sources: what was built runs
        if current != digest:
            return False, f"compiled modules are stale ({name} changed since the build)", names
    for name in sorted(names):
        leaf = root.joinpath(*name.split("."))
        if not any(leaf.parent.glob(leaf.name + ".*.so")):
            return False, f"no compiled module for {name} (the C compile did not run)", names
    # A compiled module of an earlier build that this one no longer compiles
    # would shadow its source: run everything from source rather than that.
    for so in (root / "ingressd").rglob("*.so"):
        name = ".".join(so.relative_to(root).with_suffix("").with_suffix("").parts)
        if name not in names:
            return False, f"{so.name} is left from an earlier build", names | {name}
    return True, "", names


def _settle() -> str:
    compiled, reason, names = decide()
    if compiled:
        return "compiled with mypyc"
    if names:
        sys.meta_path.insert(0, _FromSource(names))
    return f"pure Python: {reason}"


BUILD = _settle()
