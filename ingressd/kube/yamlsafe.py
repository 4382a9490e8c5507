"""YAML and JSON from outsiders, parsed within bounds.

PyYAML keeps an alias as a reference to its anchor's node, so a "billion
laughs" file parses into a small graph; it is everything that walks the result
later (comparing objects on reload, pickling them for the workers, printing
them) that pays for every expanded node. Its composer also recurses once per
level of nesting, in C with libyaml, and some libyaml builds have no nesting
limit: 100,000 ``[`` take the whole process down with a segmentation fault.

So documents are composed here, from the parser's events, without recursion,
and each is measured while it is composed:

- nesting depth, counting what aliases bring in, up to ``MAX_DEPTH``;
- nodes, each alias counted as the nodes it stands for, up to ``MAX_NODES``
  for a whole stream (every document of a file);
- nodes reached through aliases, as a share of all nodes: as go-yaml, which
  kubectl reads manifests with, refuses "excessive aliasing" (yaml.v2
  decode.go, ``allowedAliasRatio``): 99 % allowed up to 400,000 nodes, scaled
  down to 10 % at 4,000,000;
- the text of one document, up to ``MAX_DOCUMENT_CHARS``.

Merge keys (``<<: *base``) copy what the alias stands for, so they are
counted the same way. A document that breaks a bound raises ``LimitError``
(a ``yaml.YAMLError``, so callers report it like a syntax error) before it
is constructed. JSON has no aliases; ``check_json`` bounds its depth and size.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.events import (
    AliasEvent,
    DocumentEndEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

# Deeper than any Kubernetes object (a CRD's schema is a few dozen levels), and
# far below the interpreter's recursion limit, which comparing, copying and
# pickling a parsed object run into.
MAX_DEPTH = 100
# Nodes of one file, aliases expanded: about 60,000 Ingresses.
MAX_NODES = 4_000_000
# One document's text: kubectl could not send more than 3 MiB to the API server
# in one request; a List of many objects may be larger, and is split by kubectl.
MAX_DOCUMENT_CHARS = 16 * 1024 * 1024
# go-yaml's aliasing allowance (yaml.v2 decode.go): a share of the nodes decoded
# that may come from aliases, 99 % up to LOW nodes, 10 % from HIGH, linear between.
ALIAS_RATIO_LOW = 400_000
ALIAS_RATIO_HIGH = 4_000_000


class LimitError(yaml.YAMLError):
    """A document is bigger, deeper or more aliased than allowed."""

    def __init__(self, reason: str, mark: Any = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.mark = mark

    def __str__(self) -> str:
        if self.mark is None:
            return self.reason
        return f"{self.reason} (at line {self.mark.line + 1}, column {self.mark.column + 1})"


def allowed_alias_ratio(nodes: int) -> float:
    if nodes <= ALIAS_RATIO_LOW:
        return 0.99
    if nodes >= ALIAS_RATIO_HIGH:
        return 0.10
    return 0.99 - 0.89 * (nodes - ALIAS_RATIO_LOW) / (ALIAS_RATIO_HIGH - ALIAS_RATIO_LOW)


@dataclass(slots=True)
class Tally:
    """Nodes counted so far over a stream (or several, for one file's documents)."""

    nodes: int = 0  # aliases expanded
    aliased: int = 0  # of which reached through an alias

    def add(self, nodes: int, aliased: int, mark: Any = None) -> None:
        self.nodes += nodes
        self.aliased += aliased
        if self.nodes > MAX_NODES:
            raise LimitError(f"more than {MAX_NODES:,} YAML nodes (aliases expanded)", mark)
        # The same thresholds as go-yaml, so small files may alias freely.
        if (
            self.aliased > 100
            and self.nodes > 1000
            and self.aliased / self.nodes > allowed_alias_ratio(self.nodes)
        ):
            raise LimitError(
                f"excessive aliasing: {self.aliased:,} of {self.nodes:,} YAML nodes "
                "come from aliases",
                mark,
            )


def load_all(text: str, loader_class: type, tally: Tally | None = None) -> Iterator[Any]:
    """Each document of ``text``, constructed by ``loader_class`` once it is within bounds.

    ``loader_class`` is a PyYAML loader (CSafeLoader or SafeLoader, possibly
    with constructors of its own); only its parser and constructor are used.
    ``tally`` carries the counts over several calls (the documents of one file
    parsed one at a time).
    """
    tally = tally if tally is not None else Tally()
    loader = loader_class(text)
    try:
        loader.get_event()  # StreamStartEvent
        while not loader.check_event(StreamEndEvent):
            yield loader.construct_document(_compose_document(loader, tally))
    finally:
        loader.dispose()


# A collection being composed: [node, Tally.nodes when it began, height, pending key, anchor]
_NODE, _START, _HEIGHT, _KEY, _ANCHOR = range(5)


def _compose_document(loader: Any, tally: Tally) -> Node:
    """One document's node graph, as PyYAML's composer makes it, but measured.

    A loop over the parser's events with a stack of open collections: no
    recursion. Counting is inline: this runs for every node of every manifest.
    """
    get_event = loader.get_event
    resolve = loader.resolve
    start = get_event()
    assert type(start) is DocumentStartEvent, start
    begin = start.start_mark.index if start.start_mark is not None else 0
    anchors: dict[str, tuple[Node, int, int]] = {}  # name -> (node, size, height)
    stack: list[list[Any]] = []
    nodes = tally.nodes
    root: Node | None = None
    while True:
        event = get_event()
        kind = type(event)
        if kind is ScalarEvent:
            tag = event.tag
            if tag is None or tag == "!":
                tag = resolve(ScalarNode, event.value, event.implicit)
            node: Node = ScalarNode(
                tag, event.value, event.start_mark, event.end_mark, style=event.style
            )
            nodes += 1
            height = 1
            if event.anchor is not None:
                _check_anchor(event.anchor, anchors, stack, event.start_mark)
                anchors[event.anchor] = (node, 1, 1)
        elif kind is MappingStartEvent or kind is SequenceStartEvent:
            mark = event.start_mark
            if len(stack) >= MAX_DEPTH:
                raise LimitError(f"YAML nested deeper than {MAX_DEPTH} levels", mark)
            if nodes > MAX_NODES:
                tally.nodes = nodes
                tally.add(0, 0, mark)  # raises
            if mark is not None and mark.index - begin > MAX_DOCUMENT_CHARS:
                raise LimitError(
                    f"a YAML document longer than {MAX_DOCUMENT_CHARS:,} characters", mark
                )
            if event.anchor is not None:
                _check_anchor(event.anchor, anchors, stack, mark)
            tag = event.tag
            if kind is MappingStartEvent:
                if tag is None or tag == "!":
                    tag = resolve(MappingNode, None, event.implicit)
                node = MappingNode(tag, [], mark, None, flow_style=event.flow_style)
            else:
                if tag is None or tag == "!":
                    tag = resolve(SequenceNode, None, event.implicit)
                node = SequenceNode(tag, [], mark, None, flow_style=event.flow_style)
            stack.append([node, nodes, 1, None, event.anchor])
            nodes += 1
            continue
        elif kind is MappingEndEvent or kind is SequenceEndEvent:
            done = stack.pop()
            node = done[_NODE]
            node.end_mark = event.end_mark
            height = done[_HEIGHT]
            if done[_ANCHOR] is not None:
                anchors[done[_ANCHOR]] = (node, nodes - done[_START], height)
        elif kind is AliasEvent:
            mark = event.start_mark
            found = anchors.get(event.anchor)
            if found is None:
                if any(o[_ANCHOR] == event.anchor for o in stack):
                    raise LimitError(f"alias *{event.anchor} refers to itself", mark)
                raise ComposerError(None, None, f"found undefined alias {event.anchor!r}", mark)
            node, size, height = found
            tally.nodes = nodes
            tally.add(size, size, mark)  # checks the total and the share from aliases
            nodes = tally.nodes
            if len(stack) + height > MAX_DEPTH:
                raise LimitError(
                    f"YAML nested deeper than {MAX_DEPTH} levels (aliases expanded)", mark
                )
        elif kind is DocumentEndEvent:
            # Checked at each collection too, so a long document stops early.
            if event.end_mark is not None and event.end_mark.index - begin > MAX_DOCUMENT_CHARS:
                raise LimitError(
                    f"a YAML document longer than {MAX_DOCUMENT_CHARS:,} characters",
                    start.start_mark,
                )
            break
        else:  # pragma: no cover - the parser emits nothing else inside a document
            raise ComposerError(None, None, f"unexpected {kind.__name__}", event.start_mark)
        if not stack:
            root = node
            continue
        parent = stack[-1]
        if parent[_HEIGHT] <= height:
            parent[_HEIGHT] = height + 1
        if type(parent[_NODE]) is SequenceNode:
            parent[_NODE].value.append(node)
        elif parent[_KEY] is None:
            parent[_KEY] = node
        else:
            parent[_NODE].value.append((parent[_KEY], node))
            parent[_KEY] = None
    tally.nodes = nodes
    tally.add(0, 0, start.start_mark)
    assert root is not None
    return root


def _check_anchor(
    anchor: str, anchors: dict[str, tuple[Node, int, int]], stack: list[list[Any]], mark: Any
) -> None:
    # As PyYAML's composer: an anchor is defined once per document.
    if anchor in anchors or any(o[_ANCHOR] == anchor for o in stack):
        raise ComposerError(None, None, f"found duplicate anchor {anchor!r}", mark)


def check_json(value: Any) -> None:
    """Raise LimitError when parsed JSON is deeper or larger than a YAML document may be."""
    nodes = 0
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise LimitError(f"more than {MAX_NODES:,} JSON values")
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth >= MAX_DEPTH and children:
            raise LimitError(f"JSON nested deeper than {MAX_DEPTH} levels")
        pending.extend((child, depth + 1) for child in children)
