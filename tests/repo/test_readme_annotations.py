"""The README's annotation table and the code agree, name by name and status by status."""

from __future__ import annotations

import re

from e2e_helpers import REPO_ROOT

from ingressd.policy.annotations import DENYING, IGNORED, REFUSED, SUPPORTED

ROW = re.compile(r"^\| `([a-z0-9-]+)` \| (supported|refused) \|", re.MULTILINE)


def test_readme_table_lists_exactly_what_the_code_does() -> None:
    text = (REPO_ROOT / "README.md").read_text()
    section = text[text.index("## ingress-nginx annotations") :]
    section = section[: section.index("\n## ", 1)]
    rows = ROW.findall(section)
    names = [name for name, _ in rows]
    assert len(names) == len(set(names)), "an annotation is listed twice"
    table = dict(rows)
    code = {name: "supported" for name in SUPPORTED} | {name: "refused" for name in REFUSED}
    assert table == code


NOT_SUPPORTED_ROW = re.compile(r"^\| `([a-z0-9-]+)` \| (denied \(403\)|ignored) \| (.+) \|$", re.M)


def test_readme_lists_every_unsupported_annotation_as_the_code_treats_it() -> None:
    text = (REPO_ROOT / "README.md").read_text()
    section = text[text.index("### Not supported") :]
    section = section[: section.index("\n## ", 1)]
    rows = {name: (kind, why) for name, kind, why in NOT_SUPPORTED_ROW.findall(section)}
    assert {n for n, (k, _) in rows.items() if k == "ignored"} == set(IGNORED)
    assert {n for n, (k, _) in rows.items() if k != "ignored"} == set(DENYING)
    for name, why in IGNORED.items():
        assert rows[name][1] == why
    for name, what in DENYING.items():
        assert rows[name][1].startswith(f"it {what}")
