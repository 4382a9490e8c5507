"""The documentation site (docs/, mkdocs.yml): pages current, a strict build, no broken link.

The annotations, ConfigMap and CLI references and the published benchmark figures are
rendered from the code by scripts/gen_docs.py; a committed page that differs from what
the code renders now fails here, naming the command that regenerates it. The whole site
is then built with `mkdocs build --strict` (which, with mkdocs.yml's `validation:`,
fails on a link to a missing page or anchor), and every link of the built HTML is
checked again, for what Markdown validation does not see (navigation, raw HTML).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType
from urllib.parse import unquote, urlsplit

import pytest
from e2e_helpers import REPO_ROOT

from ingressd import cli
from ingressd.policy.annotation_docs import DOCS, GROUPS
from ingressd.policy.annotations import REFUSED, SUPPORTED


def _gen_docs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_docs", REPO_ROOT / "scripts" / "gen_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen_docs = _gen_docs()


def test_every_annotation_ingressd_reads_is_documented_once() -> None:
    names = [doc.name for _, docs in GROUPS for doc in docs]
    assert len(names) == len(set(names)), "an annotation is documented twice"
    missing = sorted((SUPPORTED | REFUSED) - set(DOCS))
    extra = sorted(set(DOCS) - SUPPORTED - REFUSED)
    assert not missing and not extra, (
        "ingressd/policy/annotation_docs.py must have one entry per supported or refused "
        f"annotation (missing: {missing}, extra: {extra}): add what the annotation does "
        "(its group, ingress-nginx's default, the behaviour), then run "
        "`python scripts/gen_docs.py`"
    )


@pytest.mark.parametrize("page", gen_docs.PAGES)
def test_generated_page_is_current(page: str) -> None:
    text = (REPO_ROOT / "docs" / page).read_text()
    assert gen_docs._BLOCK.search(text), f"docs/{page} has no generated block"
    assert gen_docs.render(text) == text, (
        f"docs/{page} is stale: run `{gen_docs.COMMAND}` and commit the result"
    )


def test_a_stale_page_is_noticed(tmp_path: Path) -> None:
    """The check above can fail: a block edited by hand, or missing a row, is re-rendered."""
    page = (REPO_ROOT / "docs" / "reference" / "configmap.md").read_text()
    edited = page.replace("`hsts-max-age`", "`hsts-max-age-edited`", 1)
    assert edited != page
    assert gen_docs.render(edited) == page
    docs = tmp_path / "docs"
    for name in gen_docs.PAGES:
        (docs / name).parent.mkdir(parents=True, exist_ok=True)
        (docs / name).write_text((REPO_ROOT / "docs" / name).read_text())
    (docs / "data").mkdir()
    for data in (REPO_ROOT / "docs" / "data").iterdir():
        (docs / "data" / data.name).write_text(data.read_text())
    assert gen_docs.stale_pages(docs) == []
    (docs / "reference" / "configmap.md").write_text(edited)
    assert gen_docs.stale_pages(docs) == ["reference/configmap.md"]


def test_generated_lines_are_readable() -> None:
    """Generated lines wrap at WIDTH; only a single unbreakable word may be longer."""
    for page in gen_docs.PAGES:
        text = (REPO_ROOT / "docs" / page).read_text()
        for block in gen_docs._BLOCK.finditer(text):
            for line in block["body"].splitlines():
                if len(line) > gen_docs.WIDTH:
                    assert len(line.split()) == 1, f"docs/{page}: line too long: {line!r}"


class _Links(HTMLParser):
    """The ids a page defines and the links (href, src) it makes."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name in ("id", "name"):
                self.ids.add(value)
            elif name in ("href", "src") and not (tag == "link" and value.endswith(".xml")):
                self.links.append(value)


def broken_links(site: Path) -> list[str]:
    """Every internal link of the built site whose file or anchor does not exist."""
    pages: dict[Path, _Links] = {}
    for html in site.rglob("*.html"):
        parsed = _Links()
        parsed.feed(html.read_text(errors="replace"))
        pages[html.resolve()] = parsed
    broken = []
    for html, parsed in pages.items():
        for link in parsed.links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith(("mailto:", "data:")):
                continue
            if not parts.path:
                target = html
            elif parts.path.startswith("/"):  # 404.html: from the site's root
                target = (site / unquote(parts.path).lstrip("/")).resolve()
            else:
                target = (html.parent / unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            where = f"{html.relative_to(site.resolve())}: {link}"
            if not target.exists():
                broken.append(f"{where} (no such file)")
            elif parts.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else set()
                if unquote(parts.fragment) not in ids:
                    broken.append(f"{where} (no such anchor)")
    return broken


def test_the_link_checker_finds_broken_links(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "index.html").write_text(
        '<a href="a/">ok</a><a href="a/#there">ok</a><a href="#top">ok</a><p id="top"></p>'
        '<a href="a/#nowhere">bad anchor</a><a href="missing.html">bad file</a>'
        '<a href="https://example.org/x">external</a>'
    )
    (tmp_path / "a" / "index.html").write_text('<h2 id="there">x</h2><a href="../#top">ok</a>')
    assert broken_links(tmp_path) == [
        "index.html: a/#nowhere (no such anchor)",
        "index.html: missing.html (no such file)",
    ]


def test_site_builds_strictly_with_every_link_resolving(tmp_path: Path) -> None:
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    warnings = [line for line in done.stderr.splitlines() if re.match(r"(WARNING|ERROR)\b", line)]
    assert warnings == []
    assert (site / "migrating" / "index.html").exists()
    assert (site / "reference" / "annotations" / "index.html").exists()
    assert broken_links(site) == []
    # A table cell's escaped pipe inside a code span is shown as written: reword instead.
    for html in site.rglob("*.html"):
        assert "\\|" not in html.read_text(), f"{html.relative_to(site)} shows a literal \\|"
    # README's links to an anchor of a page: the anchor is in the built page.
    readme = (REPO_ROOT / "README.md").read_text()
    for page, fragment in re.findall(r"\]\(docs/([^)#\s]+)\.md#([^)]+)\)", readme):
        html = site / ("" if page == "index" else page) / "index.html"
        parsed = _Links()
        parsed.feed(html.read_text())
        assert fragment in parsed.ids, f"README.md links to docs/{page}.md#{fragment}: no anchor"


def _command_lines() -> list[tuple[str, list[str]]]:
    """(page, arguments) of every `ingressd COMMAND ...` line in the docs' shell blocks."""
    found = []
    for page in sorted((REPO_ROOT / "docs").rglob("*.md")):
        for block in re.findall(r"```(?:sh|bash)\n(.*?)```", page.read_text(), re.DOTALL):
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                match = re.search(r"(?:^|[\s/])ingressd ((?:serve|check|demo)\b.*)", line)
                if match is None:
                    continue
                words = match[1].split("#")[0]
                words = re.sub(r"\[[^]]*\|[^]]*\]", " ", words)  # [A | B]: a synopsis' choice
                words = re.split(r"\s(?:\||>|&&|;)\s", words)[0].replace("[", " ").replace("]", " ")
                found.append((str(page.relative_to(REPO_ROOT)), shlex.split(words)))
    return found


def _options(command: str) -> set[str]:
    top = cli.parser()
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    return {o for action in sub.choices[command]._actions for o in action.option_strings}


def test_every_option_the_docs_show_exists() -> None:
    """A renamed or removed option fails here rather than in a reader's terminal."""
    lines = _command_lines()
    assert any(args[0] == "check" and "--controller-name" in args for _, args in lines)
    for page, args in lines:
        known = _options(args[0])
        for word in args[1:]:
            if word.startswith("--"):
                assert word.split("=")[0] in known, f"{page}: ingressd {args[0]} has no {word}"


def test_the_option_check_can_fail() -> None:
    assert "--controller-name" in _options("check")
    assert "--no-such-option" not in _options("check")


def test_readme_links_into_the_docs_resolve() -> None:
    """README is short and points into docs/: each relative link names a file that exists."""
    text = (REPO_ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    assert any(link.startswith("docs/") for link in links)
    for link in links:
        if not urlsplit(link).scheme:
            assert (REPO_ROOT / link).exists(), f"README.md links to {link}, which is not there"
    anchors = re.findall(r"\]\(#([^)]+)\)", text)
    headings = {
        re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", text, re.M)
    }
    assert set(anchors) <= headings


def test_the_migration_guide_s_tables_name_serve_options() -> None:
    """The right-hand column of docs/migrating.md's key and flag tables: options of serve."""
    text = (REPO_ROOT / "docs" / "migrating.md").read_text()
    tables = [
        block
        for block in text.split("\n\n")
        if block.startswith(("| ingress-nginx key | ingressd |", "| ingress-nginx flag |"))
    ]
    assert len(tables) == 2
    known = _options("serve")
    for table in tables:
        rows = [line.split(" | ") for line in table.splitlines()[2:]]
        assert len(rows) >= 5
        for _nginx, ours in rows:
            for option in re.findall(r"`(--[a-z0-9-]+)", ours):
                assert option in known, f"docs/migrating.md: ingressd serve has no {option}"


# Options of other programs the pages show: curl, kubectl, mkdocs, loadtests/*.py, locust, and
# ingress-nginx's own flags (the migration guide maps them).
FOREIGN_OPTIONS = {
    *("--resolve", "--cert", "--key", "--type", "--replicas", "--headless", "--strict"),
    *("--scenarios", "--with-bare", "--rounds", "--duration", "--json", "--no-pin"),
    *("--breakdown", "--limits", "--request", "--paths", "--snippet", "--upstream-hash-by"),
    "--tracing-ratio",
    *("--controller-class", "--watch-ingress-without-class", "--update-status"),
    *("--default-ssl-certificate", "--healthz-port", "--shutdown-grace-period"),
    *("--connect-to", "--path-as-is"),  # curl's, in docs/diff.md's command lines
    # ingress-nginx's webhook options (docs/admission.md maps them)
    *("--validating-webhook", "--validating-webhook-certificate", "--validating-webhook-key"),
}


def test_every_option_the_pages_name_exists() -> None:
    """An option renamed in cli.py but not in the prose (an options table, say) fails here."""
    top = cli.parser()
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    parsers = list(sub.choices.values())
    for p in list(parsers):  # and the commands of a command ("export gateway-api")
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                parsers += a.choices.values()
    ours = {o for p in parsers for a in p._actions for o in a.option_strings}
    ours |= {"--version", "--help"}
    for page in sorted((REPO_ROOT / "docs").rglob("*.md")):
        for option in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]+)", page.read_text()):
            where = page.relative_to(REPO_ROOT)
            assert option in ours | FOREIGN_OPTIONS, f"{where}: no ingressd option {option}"


def test_rows_of_an_old_readme_become_annotation_docs_entries() -> None:
    """For branches that still add rows to README's former annotation table."""
    readme = (
        "| annotation | status | behaviour |\n|---|---|---|\n"
        "| `new-thing` | supported | does the new thing, `quoted`, for a long while and then "
        "some more words so that the text has to wrap over more than one line |\n"
    )
    stubs = gen_docs.readme_stubs(readme, ["new-thing", "absent"])
    assert "# absent: no row in that README" in stubs
    namespace = {"_doc": lambda name, default, *parts: (name, default, "".join(parts))}
    entry = stubs[stubs.index("_doc(") : stubs.index("),") + 2]
    assert eval(entry.rstrip(","), namespace) == (  # our own generated source
        "new-thing",
        "",
        "does the new thing, `quoted`, for a long while and then some more words so that "
        "the text has to wrap over more than one line",
    )
