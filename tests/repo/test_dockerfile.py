"""The Dockerfile, .dockerignore and the wheel the image is built from, checked without Docker.

The Dockerfile is parsed (instructions, line continuations, stages) and held
to what a production image needs: pinned bases, a slim final stage without
build tools, a numeric non-root USER that deploy/ runs as, the ports deploy/
uses, ``ENTRYPOINT ["ingressd"]``, explicit COPY sources with nothing secret
among them. The wheel is built offline from exactly the files the build stage
copies, and its contents are compared with the source tree and pyproject.toml.
"""

from __future__ import annotations

import configparser
import email.parser
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from deploy_objects import DEPLOY, container, find, pod_spec, render
from e2e_helpers import REPO_ROOT
from packaging.requirements import Requirement
from test_compiled import compiled_modules

import ingressd

DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())

BUILD_TOOLS = re.compile(
    r"\b(apt-get\s+install|apt\s+install|apk\s+add|yum\s+install|dnf\s+install|gcc|g\+\+|"
    r"clang|make|build-essential|python3?-dev|libc6?-dev|libffi-dev|libssl-dev)\b"
)
# Never in the image, nor in the build context: the repository, tests, keys and credentials.
FORBIDDEN_SOURCES = re.compile(
    r"(^|/)(\.git|\.env(\..*)?|\.kube|kubeconfig[^/]*|tests|[^/]*\.(pem|key|crt|p12))(/|$)"
)
SECRET_NAMES = re.compile(r"(PASSWORD|PASSWD|TOKEN|SECRET|PRIVATE|API_?KEY|CREDENTIAL)", re.I)


# -- a small Dockerfile parser --------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str  # upper case
    flags: dict[str, str]  # --from=build -> {"from": "build"}
    args: str  # the rest, continuations joined
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    line: int
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages and their instructions; comments dropped, ``\\`` continuations joined."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction is dropped
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        pending.append(line)
        instructions.append(_instruction(" ".join(p for p in pending if p), start))
        pending = []
    assert not pending, "the Dockerfile ends inside a continued instruction"
    stages: list[Stage] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            words = ins.args.split()
            name = words[2] if len(words) == 3 and words[1].lower() == "as" else None
            assert len(words) in (1, 3), f"line {ins.line}: FROM {ins.args}"
            stages.append(Stage(words[0], name, ins.line))
        else:
            assert stages, f"line {ins.line}: {ins.keyword} before any FROM"
            stages[-1].instructions.append(ins)
    return stages


def _instruction(text: str, line: int) -> Instruction:
    keyword, _, rest = text.partition(" ")
    flags: dict[str, str] = {}
    rest = rest.strip()
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        key, _, value = flag[2:].partition("=")
        flags[key] = value
        rest = rest.strip()
    return Instruction(keyword.upper(), flags, rest, line)


def exec_form(ins: Instruction) -> list[str]:
    value = json.loads(ins.args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), ins
    return value


def copy_sources(ins: Instruction) -> list[str]:
    words = exec_form(ins) if ins.args.startswith("[") else shlex.split(ins.args)
    assert len(words) >= 2, f"line {ins.line}: COPY needs a source and a destination"
    return words[:-1]


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def test_parser_joins_continuations_and_splits_stages() -> None:
    text = (
        "# comment\nFROM a:1.2.3 AS one\nRUN x \\\n    # inside\n    && y\n"
        "FROM b:4.5.6\nCOPY --from=one /a /b\nUSER 1:1\n"
    )
    one, two = parse_dockerfile(text)
    assert (one.base, one.name, two.base, two.name) == ("a:1.2.3", "one", "b:4.5.6", None)
    assert [(i.keyword, i.args) for i in one.instructions] == [("RUN", "x && y")]
    assert two.instructions[0].flags == {"from": "one"}
    assert copy_sources(two.instructions[0]) == ["/a"]


# -- the Dockerfile -------------------------------------------------------------------------


def test_every_base_is_pinned(stages: list[Stage]) -> None:
    names = set()
    for stage in stages:
        if stage.base in names:
            continue  # FROM an earlier stage
        image, _, digest = stage.base.partition("@")
        tag = image.rpartition(":")[2] if ":" in image.rpartition("/")[2] else ""
        assert digest.startswith("sha256:") or re.match(r"\d+\.\d+\.\d+", tag), (
            f"line {stage.line}: {stage.base} is not pinned to a version or digest"
        )
        assert tag != "latest"
        if stage.name:
            names.add(stage.name)


def test_final_stage_is_slim_and_from_the_build_stages_base(stages: list[Stage]) -> None:
    assert len(stages) >= 2, "multi-stage: build tools and caches stay in the first stage"
    assert "slim" in stages[-1].base
    # The virtualenv is copied as built: same Python, same paths.
    assert stages[-1].base == stages[0].base


def test_final_stage_has_no_build_tools_or_package_installs(final: Stage) -> None:
    for ins in final.all("RUN"):
        assert not BUILD_TOOLS.search(ins.args), f"line {ins.line}: {ins.args}"


def test_runs_as_the_numeric_non_root_user_deploy_expects(final: Stage) -> None:
    users = final.all("USER")
    assert users, "the final stage sets no USER: it would run as root"
    uid, _, gid = users[-1].args.partition(":")
    assert uid.isdigit() and int(uid) > 0, "numeric, so runAsNonRoot can verify it"
    assert gid.isdigit() and int(gid) > 0
    deployment = find(render(DEPLOY), "Deployment", "ingressd")
    pod = pod_spec(deployment)
    assert pod is not None
    assert pod["securityContext"]["runAsUser"] == int(uid)
    assert pod["securityContext"]["runAsGroup"] == int(gid)


def test_entrypoint_is_the_console_script(final: Stage) -> None:
    [entrypoint] = final.all("ENTRYPOINT")
    assert exec_form(entrypoint) == ["ingressd"]
    assert "ingressd" in PYPROJECT["project"]["scripts"]
    for cmd in final.all("CMD"):
        assert exec_form(cmd)[0] == "serve"


def test_exposes_the_ports_deploy_uses(final: Stage) -> None:
    exposed = {int(p.partition("/")[0]) for ins in final.all("EXPOSE") for p in ins.args.split()}
    assert exposed == {8080, 8443, 10254, 8444}  # 8444: --admission-port
    deployment = find(render(DEPLOY), "Deployment", "ingressd")
    assert exposed == {p["containerPort"] for p in container(deployment, "ingressd")["ports"]}


def test_copies_only_named_sources_and_nothing_secret(stages: list[Stage]) -> None:
    stage_names = {s.name for s in stages if s.name}
    for stage in stages:
        for ins in stage.all("COPY") + stage.all("ADD"):
            assert ins.keyword == "COPY", f"line {ins.line}: ADD fetches and unpacks; use COPY"
            if ins.flags.get("from") in stage_names:
                continue
            for source in copy_sources(ins):
                path = os.path.normpath(source)
                assert path not in (".", "/") and "*" not in path, (
                    f"line {ins.line}: copies the whole context (or a glob): name what is needed"
                )
                assert not FORBIDDEN_SOURCES.search(path), f"line {ins.line}: copies {source}"
                assert (REPO_ROOT / path).exists(), f"line {ins.line}: {source} does not exist"


def test_no_secrets_in_env_or_args(stages: list[Stage]) -> None:
    for stage in stages:
        for ins in stage.all("ENV") + stage.all("ARG"):
            names = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", ins.args) or ins.args.split()[:1]
            for name in names:
                assert not SECRET_NAMES.search(name), f"line {ins.line}: {name}"


# -- .dockerignore ------------------------------------------------------------------------------


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """(excluding, regex) per line, in order; a later ``!pattern`` re-includes."""
    patterns = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        line = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        regex = ""
        i = 0
        while i < len(line):
            if line.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif line.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif line[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif line[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(line[i]), i + 1
        patterns.append((not negated, re.compile(regex)))
    return patterns


def ignored(path: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether ``path`` (relative to the context) stays out of the build context."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for excluding, regex in patterns:
        if any(regex.fullmatch(p) for p in prefixes):
            result = excluding
    return result


def test_dockerignore_keeps_out_the_repository_tests_and_secrets() -> None:
    assert DOCKERIGNORE.is_file()
    patterns = dockerignore_patterns()
    for path in (
        ".git/config",
        ".venv/bin/python",
        "tests/repo/test_dockerfile.py",
        "loadtests/bench.py",
        "server.pem",
        "certs/tls.key",
        "ingressd/x.crt",
        ".env",
        "deploy/.env.local",
        "kubeconfig",
        "config/kubeconfig.yaml",
        ".kube/config",
        "examples/tls-secret.yaml",
        "ingressd/__pycache__/cli.cpython-311.pyc",
    ):
        assert ignored(path, patterns), f"{path} would be sent to the Docker daemon"


def test_dockerignore_keeps_what_the_build_copies(stages: list[Stage]) -> None:
    patterns = dockerignore_patterns()
    needed = [
        source
        for ins in stages[0].all("COPY")
        if "from" not in ins.flags
        for source in copy_sources(ins)
    ]
    assert needed
    for source in needed:
        root = REPO_ROOT / source
        files = [root] if root.is_file() else [p for p in root.rglob("*.py")]
        for file in files:
            rel = file.relative_to(REPO_ROOT).as_posix()
            if "__pycache__" not in rel:
                assert not ignored(rel, patterns), f"{rel} is copied but ignored"


def test_no_forbidden_file_reaches_the_context() -> None:
    patterns = dockerignore_patterns()
    leaks = []
    for dirpath, dirnames, filenames in os.walk(REPO_ROOT):
        rel_dir = Path(dirpath).relative_to(REPO_ROOT).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = [d for d in dirnames if not ignored(rel_dir + d, patterns)]
        for name in filenames:
            rel = rel_dir + name
            if FORBIDDEN_SOURCES.search(rel) and not ignored(rel, patterns):
                leaks.append(rel)
    assert not leaks


# -- the wheel ------------------------------------------------------------------------------


# Whichever wheel test runs first builds it, compiling the data path with mypyc:
# minutes on a busy machine. Above the build's own timeout, so that one reports.
builds_the_wheel = pytest.mark.timeout(660)


@pytest.fixture(scope="module")
def wheel(stages: list[Stage], tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """The wheel pip builds from exactly what the build stage copies (offline)."""
    src = tmp_path_factory.mktemp("docker-context")
    for ins in stages[0].all("COPY"):
        if "from" in ins.flags:
            continue
        *sources, dest = shlex.split(ins.args)
        for source in sources:
            target = src / dest / Path(source).name if dest.endswith("/") else src / dest
            from_path = REPO_ROOT / source
            if from_path.is_dir():  # .dockerignore keeps __pycache__ out of the context
                shutil.copytree(from_path, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(from_path.read_bytes())
    out = tmp_path_factory.mktemp("wheel")
    offline = ["--no-deps", "--no-build-isolation", "--no-index", "--disable-pip-version-check"]
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", *offline, "-q", "-w", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=600,  # with mypyc compiling
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    [built] = out.glob("*.whl")
    return zipfile.ZipFile(built)


def dist_info(wheel: zipfile.ZipFile, name: str) -> str:
    [path] = [n for n in wheel.namelist() if n.endswith(f".dist-info/{name}")]
    return wheel.read(path).decode()


@builds_the_wheel
def test_wheel_holds_every_module_and_nothing_else(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    package = Path(ingressd.__file__).parent
    modules = {
        "ingressd/" + p.relative_to(package).as_posix()
        for p in package.rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert "ingressd/cli.py" in modules
    assert {"ingressd/proxy/exchange.py", "ingressd/routing/build.py"} <= modules
    assert "ingressd/sources/kube.py" in modules
    assert modules <= names, f"missing from the wheel: {sorted(modules - names)}"
    version = PYPROJECT["project"]["version"]
    for name in names:
        top = name.split("/")[0]
        # ingressd__mypyc: the shared library of the compiled modules (setup.py)
        assert top in ("ingressd", f"ingressd-{version}.dist-info") or (
            top.startswith("ingressd__mypyc.") and top.endswith(".so")
        ), name
        assert not name.startswith("tests/")
    if os.environ.get("INGRESSD_PURE_PYTHON") != "1":
        # The image's build compiles (INGRESSD_REQUIRE_COMPILED there): every
        # module setup.py lists is in the wheel compiled, with a build record.
        for module in compiled_modules():
            stem = module[: -len(".py")]
            assert any(n.startswith(stem + ".") and n.endswith(".so") for n in names), module
        info = json.loads(wheel.read("ingressd/_build.json"))
        assert info["compiled"] is True, info


@builds_the_wheel
def test_wheel_metadata_matches_pyproject(wheel: zipfile.ZipFile) -> None:
    meta = email.parser.Parser().parsestr(dist_info(wheel, "METADATA"))
    project = PYPROJECT["project"]
    assert meta["Name"] == project["name"]
    assert meta["Version"] == project["version"] == ingressd.__version__
    requires = [Requirement(r) for r in meta.get_all("Requires-Dist") or []]

    def key(r: Requirement) -> tuple[str, str]:
        return r.name.lower(), str(r.specifier)

    runtime = {key(r) for r in requires if r.marker is None}
    assert runtime == {key(Requirement(d)) for d in project["dependencies"]}
    for extra, deps in project["optional-dependencies"].items():
        wanted = {key(Requirement(d)) for d in deps}
        got = {key(r) for r in requires if r.marker and r.marker.evaluate({"extra": extra})}
        assert got == wanted, extra


@builds_the_wheel
def test_wheel_installs_the_ingressd_command(wheel: zipfile.ZipFile) -> None:
    entry_points = configparser.ConfigParser()
    entry_points.read_string(dist_info(wheel, "entry_points.txt"))
    found = dict(entry_points["console_scripts"])
    assert found == PYPROJECT["project"]["scripts"] == {"ingressd": "ingressd.cli:main"}
