"""Writes the generated parts of the documentation site from the code itself.

The annotations, ConfigMap and CLI references (docs/reference/) hold hand-written
prose and generated blocks between these markers:

    <!-- BEGIN GENERATED: NAME (scripts/gen_docs.py) -->
    ...
    <!-- END GENERATED: NAME -->

Each block is rendered from the code's own registries (policy/annotations.py and
annotation_docs.py, policy/configmap.py keys_table(), cli.py's argument parser),
so the pages cannot drift from what ingressd does (the Performance page's figures
come from the newest docs/data/bench-DATE.json that loadtests/bench.py --json
wrote): tests/repo/test_docs.py fails
when a committed block differs from what this script renders.

    .venv/bin/python scripts/gen_docs.py           # rewrite the blocks
    .venv/bin/python scripts/gen_docs.py --check   # exit 1 naming each stale page
    .venv/bin/python scripts/gen_docs.py --import-readme OLD_README.md
        # annotation_docs.py entries, from the annotation table of a README.md from
        # before the docs site, for the annotations annotation_docs.py lacks
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ingressd import cli
from ingressd.model.variables import PREFIXES, VARIABLES
from ingressd.policy import annotations as registry
from ingressd.policy import configmap
from ingressd.policy.annotation_docs import DOCS, GROUPS

ROOT = Path(__file__).resolve().parent.parent
DOCS_DIR = ROOT / "docs"
WIDTH = 100  # generated lines wrap here, tables included
COMMAND = "python scripts/gen_docs.py"

_BLOCK = re.compile(
    r"(<!-- BEGIN GENERATED: (?P<name>[a-z-]+) \(scripts/gen_docs\.py\) -->\n)"
    r"(?P<body>.*?)"
    r"(<!-- END GENERATED: (?P=name) -->)",
    re.DOTALL,
)


_LINE_START = re.compile(r"^(#|>|\||[-+*=]+$|\d+\.$)")


def _wrap(text: str, indent: str = "", first: str = "") -> list[str]:
    """Markdown prose wrapped at WIDTH; code spans are never split across lines."""
    lines: list[str] = []
    line, empty = first, True
    for word in re.findall(r"(?:`[^`]*`|\S)+", text):
        # A word that would open a line as a list item, quote, heading or table row
        # stays on the line before, however long that makes it.
        risky = _LINE_START.match(word) is not None
        if not empty and len(line) + 1 + len(word) > WIDTH and not risky:
            lines.append(line)
            line = indent + word
        else:
            line = line + word if empty else f"{line} {word}"
        empty = False
    lines.append(line)
    return lines


def _definition(term: str, text: str) -> list[str]:
    """A definition list entry (the def_list extension): term, then ':   text'."""
    return [term, *_wrap(text, indent="    ", first=":   "), ""]


def _escape(text: str) -> str:
    """Plain help text made safe as Markdown (no emphasis, links or HTML)."""
    text = text.replace("\\", "\\\\").replace("<", "&lt;")
    return re.sub(r"([*_\[\]`])", r"\\\1", text)


def _bullet(text: str) -> list[str]:
    return _wrap(text, indent="  ", first="- ")


def _names(names: Iterable[str]) -> str:
    return ", ".join(f"`{n}`" for n in names)


def _grouped(reasons: Iterable[tuple[str, str]]) -> Iterator[tuple[str, list[str]]]:
    """(name, reason) pairs as (reason, names): one entry per reason, in name order."""
    by_reason: dict[str, list[str]] = {}
    for name, why in sorted(reasons):
        by_reason.setdefault(why, []).append(name)
    yield from sorted(by_reason.items(), key=lambda item: item[1][0])


# -- annotations ------------------------------------------------------------------


def annotations_summary() -> list[str]:
    out = ["| annotation | default |", "|---|---|"]
    for _title, docs in GROUPS:
        for doc in docs:
            if doc.name in registry.REFUSED:
                default = "refused"
            elif len(doc.default) > 40:
                default = "(long: see its section)"
            else:
                default = f"`{doc.default}`" if doc.default else "—"
            out.append(f"| [{doc.name}](#{doc.name}) | {default} |")
    return out


def annotations_supported() -> list[str]:
    missing = sorted((registry.SUPPORTED | registry.REFUSED) - set(DOCS))
    unknown = sorted(set(DOCS) - registry.SUPPORTED - registry.REFUSED)
    if missing or unknown:
        raise SystemExit(
            "ingressd/policy/annotation_docs.py is out of step with annotations.py: "
            f"no entry for {missing or 'none'}; entries ingressd does not read: "
            f"{unknown or 'none'}"
        )
    out: list[str] = []
    for title, docs in GROUPS:
        out += [f"## {title}", ""]
        for doc in docs:
            status = "refused" if doc.name in registry.REFUSED else "supported"
            out += [f"### `{doc.name}`", ""]
            facts = f"**Status:** {status}"
            if doc.default:
                facts += f" · **Default:** `{doc.default}`"
            out += [*_wrap(facts), ""]
            out += [*_wrap(doc.behaviour[0].upper() + doc.behaviour[1:]), ""]
    return out[:-1]


def annotations_unsupported() -> list[str]:
    out = ["### Denied (403)", ""]
    for name, what in sorted(registry.DENYING.items()):
        out += _definition(f"`{name}`", f"It {what}.")
    out += ["### Ignored", ""]
    for why, names in _grouped(registry.IGNORED.items()):
        out += _bullet(f"{_names(names)}: {why}")
    return out


# -- ConfigMap --------------------------------------------------------------------


def configmap_keys() -> list[str]:
    rows = list(configmap.keys_table())
    out = ["### Supported", ""]
    for key, status, what, default in rows:
        if status == "supported":
            text = what[0].upper() + what[1:] + "."
            if default:
                text += f" Default: `{default}`."
            out += _definition(f"`{key}`", text)
    out += ["### Refused", ""]
    refused = [key for key, status, *_ in rows if status == "refused"]
    out += [*_wrap(f"Raw configuration is never injected: {_names(refused)}."), ""]
    denying = [(key, what) for key, status, what, _ in rows if status == "unsupported (denies)"]
    if denying:  # none today: global-auth-url, the last one, is supported
        out += ["### Not supported, denying", ""]
        for key, what in denying:
            out += _definition(f"`{key}`", what[0].upper() + what[1:] + ".")
    out += ["### Not supported", ""]
    ignored = [(key, what) for key, status, what, _ in rows if status == "unsupported"]
    for why, names in _grouped(ignored):
        out += _bullet(f"{_names(names)}: {why}")
    return out


# -- CLI --------------------------------------------------------------------------


def _subparsers(top: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise SystemExit("cli.parser() has no subcommands")


def _option(action: argparse.Action, formatter: argparse.HelpFormatter) -> list[str]:
    if action.nargs == 0 or isinstance(action, argparse.BooleanOptionalAction):
        term = " / ".join(f"`{s}`" for s in action.option_strings)
    else:
        metavar = action.metavar
        if metavar is None:
            metavar = "{" + ",".join(action.choices) + "}" if action.choices else action.dest
        term = " / ".join(f"`{s} {metavar}`" for s in action.option_strings)
    text = formatter._expand_help(action)
    # The one default that depends on the machine the page is generated on.
    text = re.sub(r", here \d+\)", ")", text)
    return _definition(term, _escape(text[0].upper() + text[1:]))


def _commands(top: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Each command's parser; one with commands of its own ("export gateway-api")
    stands for them."""
    for name, sub in _subparsers(top).items():
        nested = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
        if nested:
            for inner, parser in nested[0].choices.items():
                yield f"{name} {inner}", parser
        else:
            yield name, sub


def cli_reference() -> list[str]:
    top = cli.parser()
    out: list[str] = []
    for name, sub in _commands(top):
        formatter = sub._get_formatter()
        out += [f"## `ingressd {name}`", "", *_wrap(_escape(sub.description or "")), ""]
        for group in sub._action_groups:
            actions = [a for a in group._group_actions if not isinstance(a, argparse._HelpAction)]
            if not actions:
                continue
            title = group.title if group.title != "options" else "general"
            out += [f"### {name}: {title}", ""]
            if group.description:
                out += [*_wrap(_escape(group.description[0].upper() + group.description[1:])), ""]
            for action in actions:
                out += _option(action, formatter)
    return out[:-1]


# -- benchmark figures -------------------------------------------------------------

TIMES = "\u00d7"  # the multiplication sign
BENCH = re.compile(r"^bench-(\d{4}-\d{2}-\d{2})\.json$")


def _latest_bench() -> tuple[str, dict[str, Any]]:
    """The newest docs/data/bench-DATE.json (bench.py --json) and its date."""
    found = sorted(p for p in (DOCS_DIR / "data").iterdir() if BENCH.match(p.name))
    if not found:
        raise SystemExit("no docs/data/bench-YYYY-MM-DD.json (loadtests/bench.py --json FILE)")
    match = BENCH.match(found[-1].name)
    assert match is not None
    return match[1], json.loads(found[-1].read_text())


def performance_figures() -> list[str]:
    date, bench = _latest_bench()
    env, opts = bench["environment"], bench["options"]
    nginx = env["nginx"].removeprefix("nginx version: ")
    wrk = env["wrk"].replace("debian/", "")
    out = _wrap(
        f"Measured on {date} ({env['cpu_count']} CPUs, load average "
        f"{' '.join(env['loadavg'])} before the run), {env['build']} "
        f"(commit `{env['ingressd_commit']}`), against {nginx} with {wrk}: "
        f"{opts['duration']} s {TIMES} {opts['rounds']} rounds per scenario, "
        f"{opts['connections']} connections, medians over the rounds. "
        f"Raw results: `docs/data/bench-{date}.json`."
    )
    out += [
        "",
        "| scenario | proxy | req/s | p50 | p99 | CPU per request |",
        "|---|---|--:|--:|--:|--:|",
    ]
    for name, scenario in bench["scenarios"].items():
        for proxy, row in scenario["summary"].items():
            out.append(
                f"| {name} | {proxy} | {row['rps']:,.0f} | {row['p50_ms']:.2f} ms | "
                f"{row['p99_ms']:.2f} ms | {row['cpu_us_per_request']:.1f} µs |"
            )
        r = scenario["ratios"]
        out.append(
            f"| {name} | **ingressd / nginx** | **{r['rps']:.2f}** | {r['p50']:.2f}{TIMES} | "
            f"{r['p99']:.2f}{TIMES} | {r['cpu_us_per_request']:.2f}{TIMES} |"
        )
    idle = {n: s["idle_kib_per_h2_connection"] for n, s in bench["scenarios"].items()}
    for name, kib in idle.items():
        if kib:
            out += [
                "",
                *_wrap(
                    f"Memory per idle HTTP/2 connection ({name}): nginx {kib['nginx']:.1f} KiB, "
                    f"ingressd {kib['ingressd']:.1f} KiB."
                ),
            ]
    out += ["", "Against the performance targets:", ""]
    for target in bench["targets"]:
        verdict = "pass" if target["passed"] else "**fail**"
        flag = " (unreliable)" if target["unreliable"] else ""
        out.append(
            f"- {target['scenario']}: {target['description']}: {target['value']:.2f}, "
            f"{verdict}{flag}"
        )
    return out


def variables_table() -> list[str]:
    """model/variables.py's table: the nginx variables ingressd renders."""
    lines = ["| Variable | Value |", "| --- | --- |"]
    lines += [f"| `${name}` | {meaning.replace('|', '/')} |" for name, meaning in VARIABLES.items()]
    for meaning in PREFIXES.values():
        name, _, text = meaning.partition(": ")
        lines.append(f"| `{name}` | {text.replace('|', '/')} |")
    return lines


GENERATORS: dict[str, Callable[[], list[str]]] = {
    "annotations-summary": annotations_summary,
    "annotations-supported": annotations_supported,
    "annotations-unsupported": annotations_unsupported,
    "configmap-keys": configmap_keys,
    "cli": cli_reference,
    "performance-figures": performance_figures,
    "variables": variables_table,
}
PAGES = (
    "reference/annotations.md",
    "reference/configmap.md",
    "reference/cli.md",
    "performance.md",
    "reference/variables.md",
)


def render(text: str) -> str:
    """The page with every generated block rendered afresh."""

    def block(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in GENERATORS:
            raise SystemExit(f"unknown generated block {name!r}")
        body = "\n".join(GENERATORS[name]()) + "\n"
        return f"{match[1]}\n{body}\n{match[4]}"

    return _BLOCK.sub(block, text)


def stale_pages(docs: Path = DOCS_DIR) -> list[str]:
    return [p for p in PAGES if render((docs / p).read_text()) != (docs / p).read_text()]


_README_ROW = re.compile(r"^\| `([a-z0-9-]+)` \| (?:supported|refused) \| (.+) \|$", re.MULTILINE)


def readme_stubs(readme: str, names: Iterable[str]) -> str:
    """Entries for annotation_docs.py from an old README's annotation table.

    README.md used to hold the annotation table; a branch begun before it moved here
    may still add rows there. This turns those rows into `_doc(...)` entries to paste
    into the right group of GROUPS (the default is left for you to fill in).
    """
    rows: dict[str, str] = {}
    for name, text in _README_ROW.findall(readme):
        rows.setdefault(name, text)  # the annotation table's row, not the ConfigMap table's
    out = []
    for name in sorted(names):
        if name not in rows:
            out.append(f"# {name}: no row in that README")
            continue
        parts = textwrap.wrap(
            rows[name], 80, drop_whitespace=False, break_long_words=False, break_on_hyphens=False
        )
        body = "".join(f"    {part!r}\n" for part in parts)
        out.append(f"_doc(\n    {name!r},\n    '',  # ingress-nginx's default\n{body}),")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only report stale pages")
    p.add_argument(
        "--import-readme",
        type=Path,
        metavar="FILE",
        help="print annotation_docs.py entries for the annotations it lacks, from the "
        "annotation table of an old README.md (git show BRANCH:README.md > FILE)",
    )
    args = p.parse_args(argv)
    if args.import_readme is not None:
        missing = (registry.SUPPORTED | registry.REFUSED) - set(DOCS)
        sys.stdout.write(readme_stubs(args.import_readme.read_text(), missing))
        return 0
    if args.check:
        stale = stale_pages()
        for page in stale:
            print(f"docs/{page} is stale: run {COMMAND}", file=sys.stderr)
        return 1 if stale else 0
    for page in PAGES:
        path = DOCS_DIR / page
        text = path.read_text()
        new = render(text)
        if new != text:
            path.write_text(new)
            print(f"wrote docs/{page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
