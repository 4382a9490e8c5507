"""The README's controller ConfigMap table and the code agree, key by key."""

from __future__ import annotations

import re

from e2e_helpers import REPO_ROOT

from ingressd.policy.configmap import keys_table

ROW = re.compile(r"^\| `([a-z0-9-]+)` \| ([a-z ()]+) \| (.+) \| (.+) \|$", re.MULTILINE)


def test_readme_configmap_table_lists_exactly_what_the_code_does() -> None:
    text = (REPO_ROOT / "README.md").read_text()
    section = text[text.index("## The controller ConfigMap") :]
    section = section[: section.index("\n## ", 1)]
    rows = ROW.findall(section)
    keys = [key for key, *_ in rows]
    assert len(keys) == len(set(keys)), "a key is listed twice"
    expected = {
        key: (status, what, f"`{default}`" if default else "—")
        for key, status, what, default in keys_table()
    }
    assert {key: (status, what, default) for key, status, what, default in rows} == expected
