"""Manifest mode: parsing files, loading folders, and watching them."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import textwrap
from pathlib import Path

import pytest

from ingressd.sources.manifests import (
    LoadResult,
    ManifestSource,
    load_directory,
    load_file,
    manifest_files,
)

INGRESS = """\
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {name}
  namespace: {namespace}
spec:
  rules:
    - host: {host}
"""

SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  ports:
    - port: 80
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def ingress(name: str = "web", namespace: str = "default", host: str = "a.example") -> str:
    return INGRESS.format(name=name, namespace=namespace, host=host)


def host_of(result: LoadResult, namespace: str, name: str) -> str | None:
    obj = result.store.snapshot().get("Ingress", namespace, name)
    return None if obj is None else obj["spec"]["rules"][0]["host"]


# ---------------------------------------------------------------- load_file


def test_multi_document_file(tmp_path: Path) -> None:
    path = write(
        tmp_path / "app.yaml",
        "---\n" + ingress("web") + "---\n# only a comment\n---\n" + SERVICE.format(name="svc"),
    )
    objs, problems = load_file(path)
    assert problems == []
    assert [(o["kind"], o["metadata"]["name"]) for o in objs] == [
        ("Ingress", "web"),
        ("Service", "svc"),
    ]


def test_list_kind_is_flattened(tmp_path: Path) -> None:
    path = write(
        tmp_path / "list.yaml",
        """\
        apiVersion: v1
        kind: List
        items:
          - apiVersion: v1
            kind: Service
            metadata: {name: one, namespace: apps}
          - apiVersion: v1
            kind: Service
            metadata: {name: two}
          - apiVersion: v1
            kind: Service
            metadata: {namespace: apps}
        """,
    )
    objs, problems = load_file(path)
    assert [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in objs] == [
        ("apps", "one"),
        ("default", "two"),
    ]
    assert len(problems) == 1
    assert problems[0].obj == "document 1, item 3"
    assert "metadata.name" in problems[0].reason


def test_typed_list_and_json_file(tmp_path: Path) -> None:
    doc = {
        "apiVersion": "v1",
        "kind": "ServiceList",
        "items": [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "j"}}],
    }
    path = tmp_path / "svc.json"
    path.write_text(json.dumps(doc))
    objs, problems = load_file(path)
    assert problems == []
    assert [o["metadata"]["name"] for o in objs] == ["j"]


def test_secret_data_and_string_data(tmp_path: Path) -> None:
    encoded = base64.b64encode(b"certificate bytes").decode()
    path = write(
        tmp_path / "secret.yaml",
        f"""\
        apiVersion: v1
        kind: Secret
        metadata: {{name: tls, namespace: web}}
        type: kubernetes.io/tls
        data:
          tls.crt: {encoded}
        stringData:
          tls.key: plain text key
        """,
    )
    objs, problems = load_file(path)
    assert problems == []
    (secret,) = objs
    assert base64.b64decode(secret["data"]["tls.crt"]) == b"certificate bytes"
    assert secret["stringData"] == {"tls.key": "plain text key"}


def test_secret_with_invalid_base64_is_skipped(tmp_path: Path) -> None:
    path = write(
        tmp_path / "secret.yaml",
        """\
        apiVersion: v1
        kind: Secret
        metadata: {name: bad}
        data:
          tls.crt: "not base64!"
        ---
        apiVersion: v1
        kind: Secret
        metadata: {name: good}
        data:
          key: aGVsbG8=
        """,
    )
    objs, problems = load_file(path)
    assert [o["metadata"]["name"] for o in objs] == ["good"]
    assert len(problems) == 1
    assert problems[0].obj == "Secret default/bad"
    assert "data.tls.crt" in problems[0].reason
    assert "base64" in problems[0].reason
    assert problems[0].source == str(path)


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(
        tmp_path / "broken.yaml",
        ingress("web") + "---\napiVersion: v1\nkind: Service\nmetadata: {name: [oops\n",
    )
    objs, problems = load_file(path)
    assert objs == []  # one bad document spoils the whole file
    assert len(problems) == 1
    problem = problems[0]
    assert problem.source == str(path)
    assert problem.obj == "document 2"
    assert "line 13" in problem.reason
    assert "broken.yaml" in str(problem)


def test_undecodable_file(tmp_path: Path) -> None:
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"kind: \xff\xfe\n")
    objs, problems = load_file(path)
    assert objs == []
    assert len(problems) == 1
    assert "UTF-8" in problems[0].reason


def test_unsupported_api_version(tmp_path: Path) -> None:
    path = write(
        tmp_path / "old.yaml",
        """\
        apiVersion: extensions/v1beta1
        kind: Ingress
        metadata: {name: legacy, namespace: shop}
        """,
    )
    objs, problems = load_file(path)
    assert objs == []
    assert len(problems) == 1
    assert problems[0].obj == "Ingress shop/legacy"
    assert "unsupported apiVersion" in problems[0].reason
    assert "networking.k8s.io/v1" in problems[0].reason


def test_missing_name_and_not_a_mapping(tmp_path: Path) -> None:
    path = write(
        tmp_path / "noname.yaml",
        """\
        apiVersion: v1
        kind: Service
        metadata: {namespace: x}
        ---
        - just
        - a list
        ---
        apiVersion: v1
        metadata: {name: kindless}
        """,
    )
    objs, problems = load_file(path)
    assert objs == []
    assert [(p.obj, p.source) for p in problems] == [
        ("document 1", str(path)),
        ("document 2", str(path)),
        ("document 3", str(path)),
    ]
    assert "metadata.name" in problems[0].reason
    assert "not a mapping" in problems[1].reason
    assert "kind" in problems[2].reason


def test_default_namespace_without_mutating_shared_input(tmp_path: Path) -> None:
    # Both items are the same mapping through a YAML alias.
    path = write(
        tmp_path / "alias.yaml",
        """\
        apiVersion: v1
        kind: List
        items:
          - &svc {apiVersion: v1, kind: Service, metadata: {name: shared}}
          - *svc
          - apiVersion: networking.k8s.io/v1
            kind: IngressClass
            metadata: {name: nginx, namespace: ignored}
        """,
    )
    objs, _ = load_file(path)
    assert [o["metadata"].get("namespace") for o in objs] == ["default", "default", None]
    # Cluster-scoped objects have no namespace, whatever the file says.
    assert "namespace" not in objs[2]["metadata"]


def test_timestamps_stay_strings(tmp_path: Path) -> None:
    path = write(
        tmp_path / "ts.yaml",
        SERVICE.format(name="s").replace(
            "  name: s\n", "  name: s\n  creationTimestamp: 2024-05-01T10:00:00Z\n"
        ),
    )
    (obj,), _ = load_file(path)
    assert obj["metadata"]["creationTimestamp"] == "2024-05-01T10:00:00Z"


def test_unknown_kinds_are_ignored(tmp_path: Path) -> None:
    path = write(
        tmp_path / "mixed.yaml",
        """\
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: web}
        ---
        apiVersion: v1
        kind: ConfigMap
        metadata: {}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: web}
        """,
    )
    objs, problems = load_file(path)
    assert problems == []
    assert [o["kind"] for o in objs] == ["Service"]


# ---------------------------------------------------------------- load_directory


def test_directory_recursive_and_origins(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", ingress("one", host="one.example"))
    write(tmp_path / "sub" / "b.yml", ingress("two", host="two.example"))
    result = load_directory(tmp_path)
    assert result.problems == ()
    snap = result.store.snapshot()
    assert set(snap.of("Ingress")) == {("default", "one"), ("default", "two")}
    assert snap.origin(snap.get("Ingress", "default", "two")) == str(tmp_path / "sub" / "b.yml")
    assert set(result.good) == {tmp_path / "a.yaml", tmp_path / "sub" / "b.yml"}


def test_hidden_and_temp_files_are_ignored(tmp_path: Path) -> None:
    write(tmp_path / "real.yaml", ingress("real"))
    for name in [".hidden.yaml", "real.yaml~", ".#real.yaml", ".real.yaml.swp", "notes.txt"]:
        write(tmp_path / name, ingress("ghost"))
    write(tmp_path / ".git" / "x.yaml", ingress("ghost"))
    write(tmp_path / "..data" / "real.yaml", ingress("ghost"))
    assert manifest_files(tmp_path) == [tmp_path / "real.yaml"]
    result = load_directory(tmp_path)
    assert set(result.store.snapshot().of("Ingress")) == {("default", "real")}


def test_broken_file_keeps_last_good_then_recovers(tmp_path: Path) -> None:
    path = write(tmp_path / "web.yaml", ingress("web", host="v1.example"))
    first = load_directory(tmp_path)
    assert host_of(first, "default", "web") == "v1.example"

    path.write_text(ingress("web", host="v2.example") + "spec: [unclosed\n")
    broken = load_directory(tmp_path, first.good)
    assert host_of(broken, "default", "web") == "v1.example"
    reasons = [p.reason for p in broken.problems if p.source == str(path)]
    assert any("YAML syntax error" in r for r in reasons)
    assert any("last good version" in r for r in reasons)
    assert broken.good[path] == first.good[path]

    # Still broken on the next load: still the same last good version.
    again = load_directory(tmp_path, broken.good)
    assert host_of(again, "default", "web") == "v1.example"

    path.write_text(ingress("web", host="v3.example"))
    fixed = load_directory(tmp_path, again.good)
    assert fixed.problems == ()
    assert host_of(fixed, "default", "web") == "v3.example"


def test_broken_file_without_previous_serves_nothing(tmp_path: Path) -> None:
    write(tmp_path / "web.yaml", "kind: [\n")
    result = load_directory(tmp_path)
    assert result.store.snapshot().of("Ingress") == {}
    assert len(result.problems) == 1
    assert result.good == {}


def test_deleted_file_removes_its_objects(tmp_path: Path) -> None:
    keep = write(tmp_path / "keep.yaml", ingress("keep"))
    gone = write(tmp_path / "gone.yaml", ingress("gone"))
    first = load_directory(tmp_path)
    assert set(first.store.snapshot().of("Ingress")) == {("default", "keep"), ("default", "gone")}
    gone.unlink()
    second = load_directory(tmp_path, first.good)
    assert set(second.store.snapshot().of("Ingress")) == {("default", "keep")}
    assert set(second.good) == {keep}


def test_duplicate_object_first_file_wins(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", ingress("web", host="from-a.example"))
    later = write(tmp_path / "b.yaml", ingress("web", host="from-b.example"))
    result = load_directory(tmp_path)
    assert host_of(result, "default", "web") == "from-a.example"
    assert len(result.problems) == 1
    problem = result.problems[0]
    assert problem.obj == "Ingress default/web"
    assert problem.source == str(later)
    assert str(tmp_path / "a.yaml") in problem.reason


def test_same_name_in_other_namespace_or_kind_is_not_a_duplicate(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", ingress("web", namespace="one"))
    write(
        tmp_path / "b.yaml", ingress("web", namespace="two") + "---\n" + SERVICE.format(name="web")
    )
    result = load_directory(tmp_path)
    assert result.problems == ()
    snap = result.store.snapshot()
    assert set(snap.of("Ingress")) == {("one", "web"), ("two", "web")}
    assert set(snap.of("Service")) == {("default", "web")}


def test_missing_root(tmp_path: Path) -> None:
    result = load_directory(tmp_path / "nope", {tmp_path / "nope" / "a.yaml": []})
    assert result.good == {}
    assert len(result.problems) == 1
    assert "does not exist" in result.problems[0].reason
    assert all(not objs for objs in result.store.snapshot().objects.values())


# ---------------------------------------------------------------- ManifestSource


def test_source_load_uses_previous_good(tmp_path: Path) -> None:
    path = write(tmp_path / "web.yaml", ingress("web", host="v1.example"))
    seen: list[LoadResult] = []
    source = ManifestSource(tmp_path, seen.append)
    first = source.load()
    path.write_text("kind: [\n")
    second = source.load()
    assert seen == [first, second]
    assert host_of(second, "default", "web") == "v1.example"


async def wait_for_host(results: asyncio.Queue[LoadResult], host: str | None) -> LoadResult:
    while True:
        result = await results.get()
        if host_of(result, "default", "web") == host:
            return result


@pytest.fixture(params=["native", "polling"])
def watch_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "polling":
        monkeypatch.setenv("INGRESSD_FORCE_POLLING", "1")
    else:
        monkeypatch.delenv("INGRESSD_FORCE_POLLING", raising=False)
    return request.param


@pytest.mark.usefixtures("watch_mode")
async def test_run_applies_changes_quickly_and_stops(tmp_path: Path) -> None:
    # Edits follow each other within a second: the polling watcher alone would
    # miss the second one (it compares mtimes to the second).
    path = write(tmp_path / "web.yaml", ingress("web", host="v1.example"))
    results: asyncio.Queue[LoadResult] = asyncio.Queue()
    loop_thread: list[bool] = []

    def on_load(result: LoadResult) -> None:
        # asyncio.get_running_loop raises outside the loop's thread.
        asyncio.get_running_loop()
        loop_thread.append(True)
        results.put_nowait(result)

    source = ManifestSource(tmp_path, on_load)
    source.load()
    await wait_for_host(results, "v1.example")

    stop = asyncio.Event()
    task = asyncio.create_task(source.run(stop))
    try:
        path.write_text(ingress("web", host="v2.example"))
        result = await asyncio.wait_for(wait_for_host(results, "v2.example"), 1.0)
        assert result.problems == ()

        # A broken save keeps serving v2; fixing it applies v3.
        path.write_text("spec: [\n")
        broken = await asyncio.wait_for(results.get(), 1.0)
        assert host_of(broken, "default", "web") == "v2.example"
        assert any("last good version" in p.reason for p in broken.problems)

        path.write_text(ingress("web", host="v3.example"))
        await asyncio.wait_for(wait_for_host(results, "v3.example"), 1.0)

        path.unlink()
        await asyncio.wait_for(wait_for_host(results, None), 1.0)
    finally:
        stop.set()
        await asyncio.wait_for(task, 2.0)
    assert loop_thread and all(loop_thread)
    assert task.done() and task.exception() is None


async def test_run_waits_for_missing_root(tmp_path: Path) -> None:
    root = tmp_path / "later"
    results: asyncio.Queue[LoadResult] = asyncio.Queue()
    stop = asyncio.Event()
    task = asyncio.create_task(ManifestSource(root, results.put_nowait).run(stop))
    try:
        missing = await asyncio.wait_for(results.get(), 1.0)
        assert "does not exist" in missing.problems[0].reason
        write(root / "web.yaml", ingress("web", host="late.example"))
        await asyncio.wait_for(wait_for_host(results, "late.example"), 2.0)
    finally:
        stop.set()
        await asyncio.wait_for(task, 2.0)


async def test_run_follows_root_removed_and_recreated(tmp_path: Path) -> None:
    root = tmp_path / "manifests"
    write(root / "web.yaml", ingress("web", host="v1.example"))
    results: asyncio.Queue[LoadResult] = asyncio.Queue()
    stop = asyncio.Event()
    task = asyncio.create_task(ManifestSource(root, results.put_nowait).run(stop))
    try:
        await asyncio.wait_for(wait_for_host(results, "v1.example"), 1.0)
        shutil.rmtree(root)
        gone = await asyncio.wait_for(wait_for_host(results, None), 2.0)
        assert "does not exist" in gone.problems[0].reason
        write(root / "web.yaml", ingress("web", host="v2.example"))
        await asyncio.wait_for(wait_for_host(results, "v2.example"), 2.0)
        # The new directory is watched, not the deleted one.
        (root / "web.yaml").write_text(ingress("web", host="v3.example"))
        await asyncio.wait_for(wait_for_host(results, "v3.example"), 2.0)
    finally:
        stop.set()
        await asyncio.wait_for(task, 2.0)


async def test_run_survives_on_load_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INGRESSD_FORCE_POLLING", "1")
    path = write(tmp_path / "web.yaml", ingress("web", host="v1.example"))
    results: asyncio.Queue[LoadResult] = asyncio.Queue()
    calls = 0

    def on_load(result: LoadResult) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("consumer bug")
        results.put_nowait(result)

    stop = asyncio.Event()
    task = asyncio.create_task(ManifestSource(tmp_path, on_load).run(stop))
    try:
        # The first load (v1) fails in on_load; the watcher carries on regardless.
        await asyncio.sleep(0.5)
        path.write_text(ingress("web", host="v2.example"))
        await asyncio.wait_for(wait_for_host(results, "v2.example"), 3.0)
    finally:
        stop.set()
        await asyncio.wait_for(task, 2.0)


def test_unchanged_files_are_not_parsed_again(tmp_path: Path) -> None:
    import os

    from ingressd.sources.manifests import load_directory

    def svc(name: str) -> str:
        return f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{}}\n"

    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(svc("a"))
    b.write_text(svc("b"))
    old = 1_000_000_000  # long ago: not "racily" recent
    for f in (a, b):
        os.utime(f, ns=(old, old))
    cache: dict = {}
    first = load_directory(tmp_path, None, cache)
    second = load_directory(tmp_path, first.good, cache)
    # The very same objects: nothing was parsed again.
    assert second.good[a][0] is first.good[a][0] and second.good[b][0] is first.good[b][0]
    b.write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: b2}\nspec: {ports: [{port: 80}]}\n"
    )
    third = load_directory(tmp_path, second.good, cache)
    assert third.good[a][0] is first.good[a][0]
    assert third.good[b][0]["metadata"]["name"] == "b2"
    # A file changed just now is read again (it could change again within one
    # timestamp tick, keeping its size): same bytes, same objects...
    fourth = load_directory(tmp_path, third.good, cache)
    assert fourth.good[b][0] is third.good[b][0]
    # ...other bytes of the same size, parsed anew, even with the times put back.
    st = b.stat()
    b.write_text(svc("b3"))
    os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns))
    fifth = load_directory(tmp_path, fourth.good, cache)
    assert fifth.good[b][0]["metadata"]["name"] == "b3"
    b.unlink()
    load_directory(tmp_path, fifth.good, cache)
    assert set(cache) == {a}


# ---------------------------------------------------------------- document by document

TRICKY_YAML = [
    "",
    "# only a comment\n",
    "a: 1\n",
    "---\n",
    "--- \n---\n",
    "a: 1\n---\nb: 2\n",
    "# head\n---\na: 1\n--- # trailing comment\nb: 2\n",
    "--- {a: 1}\n--- [1, 2]\n",
    "a: |\n  text\n  ---not a marker\n---\nb: 2\n",
    "a: |\n  line\n---\nb: 2\n",
    "a: 'quoted\n---\nstill quoted'\n",
    "a: 1\n...\n---\nb: 2\n",
    "a: 1\r\n---\r\nb: 2\r\n",
    "a: [1,\n---\nb: 2\n",
    "%YAML 1.1\n---\na: 1\n",
    "a: 1\n---\n%TAG ! tag:example.com,2000:\n---\nb: 2\n",
    "a: &x 1\n---\nb: *x\n",
    "----\na: 1\n",
    "a: 1\n---b\n",
]


@pytest.mark.parametrize("text", TRICKY_YAML)
def test_document_by_document_parse_equals_whole_stream(text: str) -> None:
    import yaml

    from ingressd.sources.manifests import _Loader, _split_documents

    def whole(t: str) -> list | None:
        try:
            return list(yaml.load_all(t, Loader=_Loader))
        except yaml.YAMLError:
            return None

    chunks = _split_documents(text)
    if chunks is None:  # directives: parsed as one stream
        assert "%" in text
        return
    assert "".join(piece for _, piece in chunks) == text
    pieces = [whole(piece) for _, piece in chunks]
    expected = whole(text)
    if expected is None:
        assert any(p is None for p in pieces)
    else:
        assert [doc for p in pieces for doc in p] == expected


def service_doc(name: str, port: int = 80, namespace: str | None = None) -> str:
    ns = f", namespace: {namespace}" if namespace else ""
    return (
        f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}{ns}}}\n"
        f"spec: {{ports: [{{port: {port}}}]}}\n"
    )


def test_one_changed_document_is_the_one_new_object(tmp_path: Path) -> None:
    path = tmp_path / "many.yaml"
    docs = [service_doc(f"s{i}") for i in range(5)]
    path.write_text("---\n".join(docs))
    cache: dict = {}
    first = load_directory(tmp_path, None, cache)
    before = first.good[path]
    docs[2] = service_doc("s2", port=81)
    path.write_text("---\n".join(docs))
    second = load_directory(tmp_path, first.good, cache)
    after = second.good[path]
    assert [o["metadata"]["name"] for o in after] == ["s0", "s1", "s2", "s3", "s4"]
    # Unchanged documents keep their objects (namespace defaulting included);
    # the changed one is parsed anew.
    assert [a is b for a, b in zip(before, after, strict=True)] == [1, 1, 0, 1, 1]
    assert after[2]["spec"]["ports"][0]["port"] == 81
    assert second.store.snapshot().get("Service", "default", "s2")["spec"]["ports"] == [
        {"port": 81}
    ]
    # A document inserted in front shifts the others but does not re-parse them
    # (the old first one now has a "---" line of its own: other text).
    path.write_text("---\n".join([service_doc("new"), *docs]))
    third = load_directory(tmp_path, second.good, cache)
    assert all(a is b for a, b in zip(after[1:], third.good[path][2:], strict=True))


def test_document_problems_renumber_when_documents_move(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    bad = "apiVersion: v1\nkind: Service\nmetadata: {}\n"
    path.write_text("---\n".join([service_doc("a"), bad]))
    cache: dict = {}
    first = load_directory(tmp_path, None, cache)
    assert [p.obj for p in first.problems] == ["document 2"]
    path.write_text("---\n".join([service_doc("a"), service_doc("b"), bad]))
    second = load_directory(tmp_path, first.good, cache)
    assert [p.obj for p in second.problems] == ["document 3"]
    assert "metadata.name" in second.problems[0].reason


def test_syntax_error_in_a_later_document_gives_file_line_and_keeps_last_good(
    tmp_path: Path,
) -> None:
    path = tmp_path / "f.yaml"
    docs = [service_doc("a"), service_doc("b"), service_doc("c")]
    path.write_text("---\n".join(docs))
    cache: dict = {}
    first = load_directory(tmp_path, None, cache)
    docs[2] = "apiVersion: v1\nkind: [Service\n"
    path.write_text("---\n".join(docs))
    second = load_directory(tmp_path, first.good, cache)
    syntax = [p for p in second.problems if "syntax" in p.reason]
    assert len(syntax) == 1
    assert syntax[0].obj == "document 3"
    # Counted in the file, as parsing it whole would: two 4-line documents, two
    # separators, two lines, and the end of the file where "]" was due.
    assert "line 13, column 1" in syntax[0].reason, syntax[0].reason
    assert second.good[path] is first.good[path]


# ---------------------------------------------------------------- only the changed files


def test_reload_files_equals_loading_the_folder(tmp_path: Path) -> None:
    from ingressd.sources.manifests import FolderStore, reload_files

    a = write(tmp_path / "a.yaml", service_doc("a") + "---\n" + service_doc("shared"))
    b = write(tmp_path / "sub" / "b.yaml", service_doc("b"))
    write(tmp_path / "c.yaml", "apiVersion: v1\nkind: Service\nmetadata: {}\n")
    cache: dict = {}
    folder = FolderStore()
    last = load_directory(tmp_path, None, cache, folder)

    def check(changed: list[Path]) -> None:
        nonlocal last
        previous = last.good
        last = reload_files(changed, last, cache, folder)
        fresh = load_directory(tmp_path, previous)
        assert last.problems == fresh.problems
        assert last.good == fresh.good and list(last.good) == list(fresh.good)
        assert last.store.snapshot().objects == fresh.store.snapshot().objects

    check([])
    a.write_text(service_doc("a", port=81) + "---\n" + service_doc("shared"))
    check([a])
    d = write(tmp_path / "d.yaml", service_doc("shared", port=99))  # a duplicate, later file
    check([d])
    a.write_text("kind: [")  # broken: the last good version stays, reported
    check([a])
    b.unlink()
    check([b])
    a.write_text(service_doc("a2"))
    d.unlink()
    check([a, d])


def test_reload_files_stops_before_parsing_over_budget(tmp_path: Path) -> None:
    from ingressd.sources.manifests import Budget, FolderStore, OverBudget, reload_files

    docs = [service_doc(f"s{i}") for i in range(20)]
    a = write(tmp_path / "a.yaml", "---\n".join(docs))
    cache: dict = {}
    folder = FolderStore()
    last = load_directory(tmp_path, None, cache, folder)
    docs[3] = service_doc("s3", port=81)
    a.write_text("---\n".join(docs))
    # One new document fits a small budget...
    result = reload_files([a], last, cache, folder, Budget(len(docs[3]) + 10))
    assert result.store.snapshot().get("Service", "default", "s3")["spec"]["ports"][0]["port"] == 81
    # ...a file rewritten from top to bottom does not, and nothing is applied.
    a.write_text("---\n".join(service_doc(f"t{i}") for i in range(20)))
    with pytest.raises(OverBudget):
        reload_files([a], result, cache, folder, Budget(1000))
    assert folder.store.snapshot().get("Service", "default", "t0") is None
    assert reload_files([a], result, cache, folder).store.snapshot().get("Service", "default", "t0")


def test_changed_files_names_only_plain_manifest_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from watchfiles import Change

    from ingressd.sources.manifests import _changed_files, _fingerprint

    write(tmp_path / "a.yaml", service_doc("a"))
    write(tmp_path / "sub" / "b.yaml", service_doc("b"))
    (tmp_path / "notes.txt").write_text("x")
    real = os.path.realpath(tmp_path)
    monkeypatch.chdir(tmp_path.parent)
    root = Path(tmp_path.name)  # relative, as on a command line
    known = _fingerprint(root)

    def changed(*events: tuple[Change, str]) -> list[Path] | None:
        return _changed_files(root, set(events), known)

    assert changed((Change.modified, f"{real}/a.yaml")) == [root / "a.yaml"]
    assert changed(
        (Change.modified, f"{real}/sub/b.yaml"), (Change.added, f"{real}/notes.txt")
    ) == [root / "sub" / "b.yaml"]
    (tmp_path / "a.yaml").unlink()
    assert changed((Change.deleted, f"{real}/a.yaml")) == [root / "a.yaml"]
    assert changed((Change.deleted, f"{real}/never.txt")) == []
    # An atomic write: a hidden temporary file renamed over the file.
    (tmp_path / "a.yaml").write_text(service_doc("a"))
    assert changed(
        (Change.added, f"{real}/.a.yaml.tmp"),
        (Change.deleted, f"{real}/.a.yaml.tmp"),
        (Change.added, f"{real}/a.yaml"),
    ) == [root / "a.yaml"]
    # Whatever a walk of the folder must settle:
    assert changed((Change.added, f"{real}/sub")) is None  # a directory
    shutil.rmtree(tmp_path / "sub")
    assert changed((Change.deleted, f"{real}/sub")) is None  # one that held files
    (tmp_path / "..2026_11_23").mkdir()
    (tmp_path / "..data").symlink_to("..2026_11_23")
    assert changed((Change.added, f"{real}/..data")) is None  # a ConfigMap's swap
    assert changed((Change.added, f"{real}/..2026_11_23")) is None
    assert changed((Change.added, f"{real}/.hidden/x.yaml")) is None
    assert changed((Change.added, "/elsewhere/x.yaml")) is None
    (tmp_path / "link.yaml").symlink_to(tmp_path / "notes.txt")
    assert changed((Change.added, f"{real}/link.yaml")) is None


async def test_source_reloads_a_changed_file_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    path = write(tmp_path / "web.yaml", ingress("web", host="v1.example"))
    write(tmp_path / "other.yaml", service_doc("other"))
    results: asyncio.Queue[LoadResult] = asyncio.Queue()
    stop = asyncio.Event()
    source = ManifestSource(tmp_path, results.put_nowait)
    caplog.set_level(logging.DEBUG, logger="ingressd.manifests")
    task = asyncio.create_task(source.run(stop))
    try:
        await asyncio.wait_for(wait_for_host(results, "v1.example"), 3.0)
        await asyncio.sleep(0.3)  # the watcher's first tick has passed
        path.write_text(ingress("web", host="v2.example"))
        result = await asyncio.wait_for(wait_for_host(results, "v2.example"), 3.0)
        assert result.store.snapshot().get("Service", "default", "other") is not None
    finally:
        stop.set()
        await asyncio.wait_for(task, 2.0)
    assert any("(1 changed files)" in r.getMessage() for r in caplog.records), [
        r.getMessage() for r in caplog.records
    ]


def test_objects_from_different_files_share_their_strings(tmp_path: Path) -> None:
    """YAML makes new strings for every key and value it reads; 10,000 Ingresses
    held "metadata", "namespace", "Prefix" ... over a million times (objects.compact)."""
    write(tmp_path / "a.yaml", ingress("a", "team", "a.example"))
    write(tmp_path / "b.yaml", ingress("b", "team", "b.example"))
    snap = load_directory(tmp_path).store.snapshot()
    a, b = snap.get("Ingress", "team", "a"), snap.get("Ingress", "team", "b")
    assert a is not None and b is not None
    (ka,) = [k for k in a if k == "metadata"]
    (kb,) = [k for k in b if k == "metadata"]
    assert ka is kb
    assert a["metadata"]["namespace"] is b["metadata"]["namespace"]
    assert a["apiVersion"] is b["apiVersion"]


def test_the_parse_cache_keeps_no_copy_of_the_text(tmp_path: Path) -> None:
    """Unchanged documents are known again by a digest of their text: the text
    itself, kept as the key, was a second copy of the whole folder."""
    import gc
    import tracemalloc

    from ingressd.sources.manifests import ParseCache

    comment = "".join(f"# {'x' * 96}\n" for _ in range(20_000))  # about 2 MB of text
    write(tmp_path / "big.yaml", comment + ingress("web") + "---\n" + comment + ingress("api"))
    cache: ParseCache = {}
    gc.collect()
    tracemalloc.start()
    try:
        result = load_directory(tmp_path, None, cache)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert {name for _, name in result.store.snapshot().of("Ingress")} == {"web", "api"}
    assert held < 1_000_000, f"{held} bytes held after loading"
    # The cache still knows the documents: loading again parses nothing.
    again = load_directory(tmp_path, result.good, cache)
    assert again.good == result.good
    assert all(
        x is y
        for x, y in zip(
            again.good[tmp_path / "big.yaml"], result.good[tmp_path / "big.yaml"], strict=True
        )
    )


def _svc(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "ns"}}


def test_folder_store_keeps_little_per_object() -> None:
    """Where each object is defined is kept without a dict per object (nearly
    every object is defined once): 8 MiB of dicts at 10,000 Ingresses."""
    import gc
    import tracemalloc

    from ingressd.sources.manifests import FolderStore

    good = {Path(f"/m/{f:02d}.yaml"): [_svc(f"s{f}-{i}") for i in range(100)] for f in range(20)}
    folder = FolderStore()
    gc.collect()
    tracemalloc.start()
    try:
        folder.update(good)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(folder.store.snapshot().of("Service")) == 2000
    assert held / 2000 < 440, f"{held / 2000:.0f} bytes per object"  # 519 with a dict each


def test_folder_store_duplicates_come_and_go() -> None:
    from ingressd.sources.manifests import FolderStore

    a, b, c = Path("/m/a.yaml"), Path("/m/b.yaml"), Path("/m/c.yaml")
    one, two, three = _svc("web"), {**_svc("web"), "spec": {"x": 2}}, {**_svc("web"), "v": 3}
    folder = FolderStore()

    def held() -> tuple[object, str | None]:
        snap = folder.store.snapshot()
        return snap.get("Service", "ns", "web"), snap.origins.get(("Service", "ns", "web"))

    assert folder.update({b: [two]}) == []
    assert held() == (two, str(b))
    problems = folder.update({a: [one], b: [two], c: [three]})
    assert held() == (one, str(a))
    assert sorted(p.source for p in problems) == [str(b), str(c)]
    problems = folder.update({b: [two], c: [three]})  # the first one goes: b wins
    assert held() == (two, str(b)) and [p.source for p in problems] == [str(c)]
    assert folder.update({c: [three]}) == []
    assert held() == (three, str(c))
    assert folder.update({c: [three, {**three, "v": 4}]}) == []  # twice in one file: the first
    assert held() == (three, str(c))
    assert folder.update({}) == []
    assert held() == (None, None)
