"""Builds ingressd with its hot modules compiled by mypyc, where that works.

pyproject.toml holds the package's metadata; this file only adds the compiled
extension modules. A build falls back to pure Python, which behaves the same,
when mypyc or a C compiler is missing or the compile fails; the reason is
written to ``ingressd/_build.json`` and shown by ``ingressd --version``.

Environment (at build time):
- ``INGRESSD_PURE_PYTHON=1``: do not compile;
- ``INGRESSD_REQUIRE_COMPILED=1``: fail the build rather than fall back (the
  container image uses it).

At run time ``ingressd/__init__.py`` checks that the compiled modules were
built from the sources beside them; if any source changed since (an editable
install being edited), all of them run from source instead, so a stale
compiled module never shadows an edit.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
BUILD_INFO = HERE / "ingressd" / "_build.json"

# The modules every request runs through. They must type-check (mypy runs in
# the tests) and avoid what compiled code rejects: tests/repo/test_compiled.py.
COMPILED = (
    "ingressd/model/backend.py",
    "ingressd/model/cache.py",
    "ingressd/model/globals.py",
    "ingressd/model/hashring.py",
    "ingressd/model/policy.py",
    "ingressd/model/snippet.py",
    "ingressd/model/table.py",
    "ingressd/model/variables.py",
    "ingressd/observe/stats.py",
    "ingressd/policy/chash.py",
    "ingressd/policy/health.py",
    "ingressd/policy/limits.py",
    "ingressd/proxy/body.py",
    "ingressd/proxy/client_h1.py",
    "ingressd/proxy/client_h2.py",
    "ingressd/proxy/exchange.py",
    "ingressd/proxy/grpc.py",
    "ingressd/proxy/h2_head.py",
    "ingressd/proxy/pages.py",
    "ingressd/proxy/http.py",
    "ingressd/proxy/peer.py",
    "ingressd/proxy/settings.py",
    "ingressd/proxy/state.py",
    "ingressd/proxy/streams.py",
    "ingressd/proxy/throttle.py",
    "ingressd/proxy/upstream_h1.py",
    "ingressd/proxy/upstream_h2.py",
    "ingressd/routing/decide.py",
)


def source_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_build_info(compiled: bool, reason: str = "", *copies: str) -> None:
    """Write what was built to the source tree and, when a build tree copied it
    already (build_py runs before build_ext), to the copy too."""
    info = {
        "compiled": compiled,
        "reason": reason,
        # module name -> digest of the source it was compiled from
        "modules": {name[:-3].replace("/", "."): source_digest(HERE / name) for name in COMPILED}
        if compiled
        else {},
    }
    text = json.dumps(info, indent=1, sort_keys=True) + "\n"
    BUILD_INFO.write_text(text)
    for root in copies:
        copy = Path(root) / "ingressd" / BUILD_INFO.name
        if copy.parent.is_dir() and copy.resolve() != BUILD_INFO:
            copy.write_text(text)


def _required() -> bool:
    return os.environ.get("INGRESSD_REQUIRE_COMPILED") == "1"


class BuildExt(build_ext):
    """build_ext that turns a failed compile into a pure-Python build (unless required)."""

    def run(self) -> None:
        if self.inplace or self.editable_mode:
            # An editable install builds next to the sources: what an earlier
            # build left must not outlive it (ingressd/_build.py checks too).
            for old in [*(HERE / "ingressd").rglob("*.so"), *HERE.glob("ingressd__mypyc.*.so")]:
                old.unlink()
        try:
            super().run()
        except Exception as exc:  # no compiler, compiler errors, missing headers
            if _required():
                raise
            self.extensions = []
            write_build_info(False, f"the C compile failed: {exc}", self.build_lib)
            print(f"ingressd: compiling failed ({exc}); installing pure Python", file=sys.stderr)
            return
        if self.extensions:
            write_build_info(True, "", self.build_lib)


def ext_modules() -> list:
    if os.environ.get("INGRESSD_PURE_PYTHON") == "1":
        write_build_info(False, "INGRESSD_PURE_PYTHON=1 at install")
        return []
    try:
        from mypyc.build import mypycify
    except ImportError as exc:
        if _required():
            raise
        write_build_info(False, f"mypyc is not available: {exc}")
        return []
    cwd = os.getcwd()
    os.chdir(HERE)  # mypyc names modules from paths relative to here
    try:
        # group_name: the shared library of the compiled modules is
        # ingressd__mypyc (a top-level module), not a name made of a hash.
        # --ignore-missing-imports: pip builds in an isolated environment that
        # holds only the build requirements (pyproject.toml), not all the
        # runtime dependencies the compiled modules import from; those only
        # called (cryptography, aiohttp, bcrypt) are Any to mypyc, which
        # compiles to the same calls. Those subclassed (h2) are build
        # requirements: a class deriving from Any compiles broken. The tests
        # run mypy with everything installed (tests/repo/test_compiled.py).
        # --no-warn-unused-ignores: an ignore needed against a library's
        # types is unused where that library is Any.
        modules = mypycify(
            ["--ignore-missing-imports", "--no-warn-unused-ignores", *COMPILED],
            opt_level="3",
            debug_level="0",
            group_name="ingressd",
        )
        write_build_info(True)  # provisional: build_py copies it before build_ext runs
        return modules
    except Exception as exc:  # a type error in a compiled module, for one
        if _required():
            raise
        write_build_info(False, f"mypyc refused the sources: {exc}")
        return []
    finally:
        os.chdir(cwd)


setup(ext_modules=ext_modules(), cmdclass={"build_ext": BuildExt})
