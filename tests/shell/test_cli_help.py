"""``--help``: every option of every command explains itself and shows its default."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

import pytest
from e2e_helpers import REPO_ROOT

from ingressd.cli import parser

# reST and Markdown that would show up verbatim in a terminal.
MARKUP = re.compile(r"``|`[^`\n]+`|\*\*|:(?:ref|class|func|meth|mod):|^\.\. |::$", re.M)
NOT_OPTIONS = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)


def commands() -> dict[str, argparse.ArgumentParser]:
    top = parser()
    [sub] = [a for a in top._actions if isinstance(a, argparse._SubParsersAction)]
    return {"ingressd": top, **{f"ingressd {n}": p for n, p in sub.choices.items()}}


@pytest.mark.parametrize("command", list(commands()))
def test_every_option_has_help_showing_its_default(command: str) -> None:
    p = commands()[command]
    formatter = p._get_formatter()
    for action in p._actions:
        if isinstance(action, NOT_OPTIONS):
            continue
        name = "/".join(action.option_strings) or action.dest
        assert action.help and action.help is not argparse.SUPPRESS, f"{command} {name}: no help"
        shown = formatter._expand_help(action)
        assert "(default: " in shown, f"{command} {name}: no default in {shown!r}"
        assert "(default: None)" not in shown, f"{command} {name}: {shown!r}"
        # A help text that states its default itself must not get a second one appended.
        assert shown.count("default:") == 1, f"{command} {name}: {shown!r}"


@pytest.mark.parametrize("command", list(commands()))
def test_help_text_has_no_markup(command: str) -> None:
    text = commands()[command].format_help()
    assert not MARKUP.search(text), MARKUP.search(text)


def test_help_runs_and_exits_0() -> None:
    for argv in ([], ["serve"], ["demo"], ["check"]):
        proc = subprocess.run(
            [sys.executable, "-m", "ingressd", *argv, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO_ROOT,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert "usage: ingressd" in proc.stdout and not proc.stderr
