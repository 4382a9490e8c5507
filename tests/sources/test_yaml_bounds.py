"""Everything an outsider writes into a manifest folder is parsed within bounds.

Alias bombs, merge-key bombs, deep nesting, self-referring aliases, huge
documents and files: each is reported as a problem of its file with a clear
reason, and the rest of the folder keeps serving. The bounded composer
(``ingressd.kube.yamlsafe``) must give exactly what PyYAML gives for everything else.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ingressd.kube import yamlsafe
from ingressd.sources import manifests
from ingressd.sources.manifests import _Loader, load_directory, load_file

GOOD = "apiVersion: v1\nkind: Service\nmetadata: {name: good}\nspec: {ports: [{port: 80}]}\n"


def service_with(spec_extra: str, name: str = "bomb") -> str:
    return f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n{spec_extra}"


def laughs(levels: int = 9, width: int = 9) -> str:
    """The classic: each level holds ``width`` aliases of the one before."""
    lines = [f"  l0: &l0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def merge_bomb(levels: int = 24) -> str:
    """Merge keys copy what an alias stands for: 2**levels pairs, from a few lines."""
    lines = ["  m0: &m0 {a: 1}"]
    for i in range(1, levels):
        lines.append(f"  m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}], k{i}: 1}}")
    return "\n".join(lines) + "\n"


def folder_with(tmp_path: Path, name: str, text: str) -> Path:
    (tmp_path / "good.yaml").write_text(GOOD)
    path = tmp_path / name
    path.write_text(text)
    return path


def assert_rejected_and_rest_served(tmp_path: Path, path: Path, words: str) -> str:
    result = load_directory(tmp_path)
    snap = result.store.snapshot()
    assert snap.get("Service", "default", "good") is not None, "the rest of the folder"
    assert snap.get("Service", "default", "bomb") is None
    found = [p for p in result.problems if p.source == str(path)]
    assert len(found) == 1, result.problems
    assert words in found[0].reason, found[0].reason
    return found[0].reason


# -- the bounds ------------------------------------------------------------------------------


def test_billion_laughs_is_refused_with_a_reason(tmp_path: Path) -> None:
    path = folder_with(tmp_path, "bomb.yaml", service_with(laughs()))
    reason = assert_rejected_and_rest_served(tmp_path, path, "excessive aliasing")
    assert "line" in reason


def test_merge_key_bomb_is_refused(tmp_path: Path) -> None:
    path = folder_with(tmp_path, "merge.yaml", service_with(merge_bomb()))
    assert_rejected_and_rest_served(tmp_path, path, "aliases")


@pytest.mark.parametrize(
    "nested",
    [
        "  deep: " + "[" * 150 + "]" * 150 + "\n",  # flow
        "  deep:\n" + "".join("  " * (i + 2) + "- \n" for i in range(150)),  # block
        "  deep:\n    " + "- " * 150 + "x\n",  # compact block sequences on one line
    ],
    ids=["flow", "block", "compact"],
)
def test_nesting_deeper_than_the_bound_is_refused(tmp_path: Path, nested: str) -> None:
    path = folder_with(tmp_path, "deep.yaml", service_with(nested))
    assert_rejected_and_rest_served(tmp_path, path, f"nested deeper than {yamlsafe.MAX_DEPTH}")


def test_depth_that_aliases_bring_in_counts(tmp_path: Path) -> None:
    half = 60  # each part is within the bound; placed inside each other they are not
    text = service_with(
        "  a: &a " + "[" * half + "]" * half + "\n  b: " + "[" * half + "*a" + "]" * half + "\n"
    )
    path = folder_with(tmp_path, "deep.yaml", text)
    assert_rejected_and_rest_served(tmp_path, path, "aliases expanded")


def test_an_alias_of_its_own_anchor_is_refused(tmp_path: Path) -> None:
    path = folder_with(tmp_path, "loop.yaml", service_with("  loop: &x [1, *x]\n"))
    assert_rejected_and_rest_served(tmp_path, path, "alias *x refers to itself")


def test_very_deep_nesting_never_reaches_a_recursive_parser(tmp_path: Path) -> None:
    # Some libyaml builds have no nesting limit and their composer recurses in
    # C: this took the process down with a segmentation fault.
    path = folder_with(tmp_path, "deep.yaml", service_with("  deep: " + "[" * 200_000 + "\n"))
    result = load_directory(tmp_path)
    assert result.store.snapshot().get("Service", "default", "good") is not None
    assert [p.source for p in result.problems] == [str(path)]


def test_node_count_is_bounded_per_file_across_documents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(yamlsafe, "MAX_NODES", 1000)
    doc = service_with("  items: [" + ", ".join(["x"] * 600) + "]\n")
    path = folder_with(tmp_path, "big.yaml", "---\n".join([doc, doc.replace("bomb", "b2")]))
    assert len(load_file(tmp_path / "good.yaml")[0]) == 1
    assert_rejected_and_rest_served(tmp_path, path, "more than 1,000 YAML nodes")


def test_the_allowance_holds_when_documents_are_parsed_again_one_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A file is parsed one document at a time and unchanged documents are
    # reused: their nodes still count towards the file's allowance.
    monkeypatch.setattr(yamlsafe, "MAX_NODES", 1000)
    small = [service_with(f"  items: [{', '.join(['x'] * 100)}]\n", f"s{i}") for i in range(3)]
    path = tmp_path / "many.yaml"
    path.write_text("---\n".join(small))
    cache: manifests.ParseCache = {}
    first = load_directory(tmp_path, None, cache)
    assert first.problems == () and len(first.good[path]) == 3
    small[2] = service_with(f"  items: [{', '.join(['x'] * 900)}]\n", "s2")
    path.write_text("---\n".join(small))
    second = load_directory(tmp_path, first.good, cache)
    reasons = [p.reason for p in second.problems]
    assert any("more than 1,000 YAML nodes" in r for r in reasons), reasons
    assert second.good[path] is first.good[path]  # the last good version keeps serving


def test_a_bomb_written_into_a_watched_file_keeps_its_last_good_version(tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    docs = [GOOD, service_with("  ports: [{port: 81}]\n", "other")]
    path.write_text("---\n".join(docs))
    cache: manifests.ParseCache = {}
    first = load_directory(tmp_path, None, cache)
    docs[1] = service_with(laughs(), "other")
    path.write_text("---\n".join(docs))
    second = load_directory(tmp_path, first.good, cache)
    assert any("excessive aliasing" in p.reason for p in second.problems), second.problems
    assert second.store.snapshot().get("Service", "default", "other") is not None
    docs[1] = service_with("  ports: [{port: 82}]\n", "other")
    path.write_text("---\n".join(docs))
    third = load_directory(tmp_path, second.good, cache)
    assert third.problems == ()
    other = third.store.snapshot().get("Service", "default", "other")
    assert other["spec"]["ports"] == [{"port": 82}]


def test_document_size_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yamlsafe, "MAX_DOCUMENT_CHARS", 2000)
    text = service_with("  items:\n" + "".join(f"    - item-{i}\n" for i in range(300)))
    path = folder_with(tmp_path, "long.yaml", text)
    assert_rejected_and_rest_served(tmp_path, path, "document longer than 2,000 characters")


def test_file_size_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifests, "MAX_FILE_BYTES", 1024 * 1024)
    text = service_with("  pad: " + "x" * (1024 * 1024) + "\n")
    path = folder_with(tmp_path, "huge.yaml", text)
    assert_rejected_and_rest_served(tmp_path, path, "larger than 1 MiB; not read")


@pytest.mark.parametrize("depth", [150, 100_000])
def test_deep_json_is_refused(tmp_path: Path, depth: int) -> None:
    doc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "bomb"}}
    text = json.dumps(doc)[:-1] + ', "spec": ' + "[" * depth + "]" * depth + "}"
    path = folder_with(tmp_path, "deep.json", text)
    assert_rejected_and_rest_served(tmp_path, path, "JSON nested deeper than 100 levels")


def test_modest_aliasing_is_still_fine(tmp_path: Path) -> None:
    # Anchors shared by a few objects are common in hand-written manifests.
    text = (
        "apiVersion: v1\nkind: List\nitems:\n"
        "  - &svc {apiVersion: v1, kind: Service, metadata: &meta {name: a, labels: {x: y}},"
        " spec: {ports: [{port: 80}]}}\n"
        "  - {<<: *svc, metadata: {<<: *meta, name: b}}\n"
    )
    (tmp_path / "list.yaml").write_text(text)
    result = load_directory(tmp_path)
    assert result.problems == ()
    b = result.store.snapshot().get("Service", "default", "b")
    assert b["metadata"]["labels"] == {"x": "y"} and b["spec"] == {"ports": [{"port": 80}]}


# -- the same results as PyYAML --------------------------------------------------------------

SAME = [
    "",
    "# only a comment\n",
    "a: 1\n---\nb: [1, 2.5, true, null, ~, 0x1f, 2026-01-02]\n",
    "--- {a: 1}\n--- [1, 2]\n--- plain\n",
    "a: &x {k: v}\nb: *x\nc: {<<: *x, d: 2}\nd: {<<: [*x, {e: 3}]}\n",
    "a: !!str 123\nb: !!int '7'\nc: !!binary aGVsbG8=\nd: !!set {x, y}\ne: !!omap [{a: 1}]\n",
    "? [complex, key]\n: value\n",
    "a: |\n  literal\n  text\nb: >\n  folded\n  text\n",
    "a: 'single'\nb: \"double\\n\"\nc: plain text\n",
    "%YAML 1.1\n---\na: 1\n",
    "a: 1\n...\n---\nb: 2\n",
    "a: &s scalar\nb: *s\n",
    "a: [1,\n",  # syntax error
    "a: *nope\n",  # undefined alias
    "a: &d 1\nb: &d 2\n",  # duplicate anchor
    "{[1]: 2}\n",  # unhashable key
    "a: !custom x\n",  # unknown tag
]


def _outcome(loader: type, text: str, bounded: bool) -> object:
    try:
        docs = yamlsafe.load_all(text, loader) if bounded else yaml.load_all(text, Loader=loader)
        return list(docs)
    except yaml.YAMLError as exc:
        return type(exc).__name__


@pytest.mark.parametrize("text", SAME)
@pytest.mark.parametrize("loader", [_Loader, yaml.SafeLoader], ids=["libyaml", "python"])
def test_bounded_composer_gives_what_pyyaml_gives(text: str, loader: type) -> None:
    assert _outcome(loader, text, bounded=True) == _outcome(loader, text, bounded=False)


def test_pure_python_loader_is_bounded_too() -> None:
    with pytest.raises(yamlsafe.LimitError, match="excessive aliasing"):
        list(yamlsafe.load_all("spec:\n" + laughs(), yaml.SafeLoader))
