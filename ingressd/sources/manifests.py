"""Manifest mode: Kubernetes objects read from a folder of YAML/JSON files.

The folder holds the same files ``kubectl apply -f DIR`` would take. Every load
looks at the whole folder but parses only the files that changed (by inode,
size and times); the others keep their parsed objects, the very same dicts, so
the builder's per-object caches and the worker deltas see them as unchanged.
A file that cannot be parsed at all keeps serving the objects it held when it
last parsed, so a half-saved edit never takes routes down.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import logging
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import watchfiles
import yaml

from ..kube import yamlsafe
from ..model.objects import CLUSTER_SCOPED, KINDS, Obj, ObjectStore, Snapshot, compact, describe
from ..model.problems import Problem
from .folder_watch import watch_folder

log = logging.getLogger("ingressd.manifests")

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
DEFAULT_NAMESPACE = "default"
FORCE_POLLING_ENV = "INGRESSD_FORCE_POLLING"

# How long the watcher may stay silent before it hands back control; each tick
# re-checks that the root is still the directory being watched. Polling ticks
# more often: each tick also compares the fingerprint (see ManifestSource). The
# step is how often the watcher thread looks at its stop flag (folder_watch.py).
WATCH_TICK_MS = 1000
POLL_TICK_MS = 250
# A change is handed over once a step passes without another (or at the debounce):
# 50 ms doubled the time for a change to apply (loadtests/churn.py: p50 60 -> 109 ms).
WATCH_STEP_MS = 20
POLL_DELAY_MS = 250
ROOT_POLL_SECONDS = 0.25
RETRY_SECONDS = 1.0
# With native notifications, compare fingerprints every this many quiet ticks.
NATIVE_CHECK_TICKS = 5
# Changed files are reloaded on the event loop when no more than this much of
# their text is new (about 40 Ingresses: a few ms), else in a thread.
INLINE_PARSE_CHARS = 64 * 1024

# Parsed files are reused only once their mtime is this old (see _parse_cached).
RACY_NS = 2_000_000_000
# A larger file is reported and not read (see kube/yamlsafe.py for the bounds within one).
MAX_FILE_BYTES = 64 * 1024 * 1024

# path -> (inode, size, mtime ns, ctime ns) of every manifest file
Fingerprint = dict[str, tuple[int, int, int, int]]

# The libyaml parser when PyYAML was built with it: much faster on large folders.
_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[valid-type,misc]
    """Safe loader that leaves timestamps as strings, as the API server returns them."""


def _timestamp_as_string(loader: Any, node: yaml.ScalarNode) -> str:
    return loader.construct_scalar(node)


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_as_string)


@dataclass(frozen=True)
class LoadResult:
    store: ObjectStore
    problems: tuple[Problem, ...] = ()
    # path -> objects of that file as last parsed successfully
    good: dict[Path, list[Obj]] = field(default_factory=dict)
    # every manifest file seen -> its problems (most have none), in path order
    per_file: dict[Path, list[Problem]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _FileResult:
    objects: list[Obj] | None  # None: the file as a whole could not be read
    problems: list[Problem]
    # Digest of each document's YAML text -> what it gave, for the next parse of
    # this file (a digest: the text itself was a copy of the whole folder kept)
    chunks: dict[bytes, _Chunk] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Chunk:
    """One YAML document's text, parsed and collected."""

    first: int  # the number of its first document in the file
    count: int  # documents it held (0 for a comment-only chunk)
    objects: list[Obj]
    problems: list[Problem]
    # YAML nodes it held, and how many of them aliases stood for: a file's
    # documents share one allowance (yamlsafe.Tally), reused chunks included.
    nodes: int = 0
    aliased: int = 0


# path -> (its stat identity when parsed, a digest of its bytes, what parsing gave)
ParseCache = dict[Path, tuple[tuple[int, int, int, int], bytes, _FileResult]]


# ---------------------------------------------------------------- one file


def load_file(path: Path) -> tuple[list[Obj], list[Problem]]:
    """The supported objects in one manifest file, and what was wrong with it."""
    result = _parse_file(path)
    return result.objects or [], result.problems


def _parse_file(path: Path) -> _FileResult:
    raw = _read(path)
    return raw if isinstance(raw, _FileResult) else _parse_bytes(path, raw)


def _read(path: Path) -> bytes | _FileResult:
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        # Removed (or a dangling symlink mid-swap) since the folder was listed:
        # the same as not being there.
        return _FileResult([], [])
    except OSError as exc:
        reason = f"cannot read: {exc.strerror or exc}"
        return _FileResult(None, [Problem("file", reason, str(path))])
    if len(raw) > MAX_FILE_BYTES:
        reason = f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB; not read"
        return _FileResult(None, [Problem("file", reason, str(path))])
    return raw


class OverBudget(Exception):
    """More text to parse than the caller wanted to wait for on the event loop."""


class Budget:
    """Characters of new text that may still be parsed."""

    def __init__(self, chars: int) -> None:
        self.chars = chars

    def spend(self, chars: int) -> None:
        if chars > self.chars:
            raise OverBudget
        self.chars -= chars


def _parse_bytes(
    path: Path, raw: bytes, prior: _FileResult | None = None, budget: Budget | None = None
) -> _FileResult:
    source = str(path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        reason = f"not valid UTF-8 (byte offset {exc.start})"
        return _FileResult(None, [Problem("file", reason, source)])
    if path.suffix != ".json":
        chunks = _split_documents(text)
        if chunks is not None:
            known = prior.chunks if prior is not None else {}
            digests = [_text_digest(piece) for _, piece in chunks]
            if budget is not None:
                budget.spend(
                    sum(
                        len(piece)
                        for (_, piece), digest in zip(chunks, digests, strict=True)
                        if digest not in known
                    )
                )
            return _parse_chunks(source, chunks, digests, known)
    if budget is not None:
        budget.spend(len(text))
    docs, error = _parse_documents(text, json_file=path.suffix == ".json")
    if error is not None:
        return _FileResult(None, [Problem(error[0], error[1], source)])
    objects: list[Obj] = []
    problems: list[Problem] = []
    for index, doc in enumerate(docs, start=1):
        _collect(doc, f"document {index}", source, objects, problems)
    return _FileResult(objects, problems)


def _parse_documents(text: str, json_file: bool) -> tuple[list[Any], tuple[str, str] | None]:
    """All documents of the file, or (where, reason) of the syntax error."""
    if json_file:
        try:
            doc = json.loads(text)
            yamlsafe.check_json(doc)
        except json.JSONDecodeError as exc:
            where = f"line {exc.lineno}, column {exc.colno}"
            return [], ("document 1", f"JSON syntax error at {where}: {exc.msg}")
        except RecursionError:
            # The decoder's own guard, hit before check_json could look.
            return [], ("document 1", f"JSON nested deeper than {yamlsafe.MAX_DEPTH} levels")
        except yamlsafe.LimitError as exc:
            return [], ("document 1", str(exc))
        return [doc], None
    docs: list[Any] = []
    try:
        # Documents are parsed lazily, so an error surfaces part-way through the loop.
        for doc in yamlsafe.load_all(text, _Loader):
            docs.append(doc)
    except yaml.YAMLError as exc:
        return [], (f"document {len(docs) + 1}", _yaml_error_text(exc))
    return docs, None


def _yaml_error_text(exc: yaml.YAMLError, line_offset: int = 0) -> str:
    if isinstance(exc, yamlsafe.LimitError):
        mark = exc.mark
        if mark is None:
            return exc.reason
        return f"{exc.reason} (line {mark.line + 1 + line_offset}, column {mark.column + 1})"
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        what = exc.problem or "invalid YAML"
        line = mark.line + 1 + line_offset
        return f"YAML syntax error at line {line}, column {mark.column + 1}: {what}"
    return f"YAML syntax error: {exc}"


# A line that starts a YAML document: "---" alone or followed by a space or tab
# (what may follow the marker; "" is the end of the text). YAML forbids such a
# line inside any scalar, so it always begins a document.
_AFTER_MARKER = frozenset(("", " ", "\t", "\r", "\n"))


def _split_documents(text: str) -> list[tuple[int, str]] | None:
    """The file's text cut before each document start, with each piece's first
    line (0-based); None when it has directives, which belong to the document
    after them and must be parsed with it as one stream.

    Parsing YAML costs tens of milliseconds per 100 Ingresses even with libyaml;
    a file in which one Ingress changed is then parsed one document at a time
    and every unchanged document keeps its objects (the very same dicts), so
    the store and the builder see exactly one changed object.
    """
    if text.startswith("%") or "\n%" in text:
        return None
    starts = [0]
    find = text.find
    at = find("\n---")
    while at >= 0:
        after = text[at + 4 : at + 5]
        if after in _AFTER_MARKER:
            starts.append(at + 1)
        at = find("\n---", at + 4)
    chunks = []
    line = 0
    for begin, end in zip(starts, [*starts[1:], len(text)], strict=True):
        piece = text[begin:end]
        chunks.append((line, piece))
        line += piece.count("\n")
    return chunks


def _text_digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _parse_chunks(
    source: str, chunks: list[tuple[int, str]], digests: list[bytes], prior: dict[bytes, _Chunk]
) -> _FileResult:
    objects: list[Obj] = []
    problems: list[Problem] = []
    parsed: dict[bytes, _Chunk] = {}
    first = 1
    tally = yamlsafe.Tally()  # the whole file's, whichever chunks are parsed again
    for (line, text), digest in zip(chunks, digests, strict=True):
        chunk = parsed.get(digest) or prior.get(digest)
        try:
            if chunk is None or (chunk.problems and chunk.first != first):
                # New text, or a document that moved and has problems that name its number.
                chunk = _parse_chunk(source, text, first, tally, chunk)
            else:
                _count_again(chunk, first, tally)
        except _ChunkError as exc:
            reason = _yaml_error_text(exc.error, line)
            return _FileResult(None, [Problem(exc.where, reason, source)])
        parsed[digest] = chunk
        objects.extend(chunk.objects)
        problems.extend(chunk.problems)
        first += chunk.count
    return _FileResult(objects, problems, parsed)


class _ChunkError(Exception):
    def __init__(self, where: str, error: yaml.YAMLError) -> None:
        self.where = where
        self.error = error


def _parse_chunk(
    source: str, text: str, first: int, tally: yamlsafe.Tally, known: _Chunk | None
) -> _Chunk:
    docs: list[Any] = []
    nodes, aliased = tally.nodes, tally.aliased
    try:
        for doc in yamlsafe.load_all(text, _Loader, tally):
            docs.append(doc)
    except yaml.YAMLError as exc:
        raise _ChunkError(f"document {first + len(docs)}", exc) from None
    got: list[Obj] = []
    found: list[Problem] = []
    for index, doc in enumerate(docs, start=first):
        _collect(doc, f"document {index}", source, got, found)
    if known is not None and not found:
        got = known.objects
    return _Chunk(first, len(docs), got, found, tally.nodes - nodes, tally.aliased - aliased)


def _count_again(chunk: _Chunk, first: int, tally: yamlsafe.Tally) -> None:
    """Count an unchanged chunk towards its file's allowance, as if parsed again."""
    try:
        tally.add(chunk.nodes, chunk.aliased)
    except yamlsafe.LimitError as exc:
        raise _ChunkError(f"document {first}", exc) from None


def _collect(doc: Any, where: str, source: str, out: list[Obj], problems: list[Problem]) -> None:
    """Validate one document (flattening Lists) into ``out``/``problems``."""
    if doc is None:
        return
    if not isinstance(doc, dict):
        problems.append(Problem(where, f"not a mapping ({type(doc).__name__})", source))
        return
    kind = doc.get("kind")
    if not isinstance(kind, str) or not kind:
        problems.append(Problem(where, "kind is missing or not a string", source))
        return
    if kind.endswith("List") and "items" in doc:
        _collect_list(doc["items"], where, source, out, problems)
        return
    if kind not in KINDS:
        log.debug("%s: %s: ignoring kind %s", source, where, kind)
        return
    reason = _invalid_reason(doc)
    if reason is not None and kind == "ConfigMap":
        # Only the TCP/UDP services ConfigMaps are read, by name: one that is
        # broken (no name, another apiVersion) cannot be either, and the
        # folder's other ConfigMaps are none of ingressd's business.
        log.debug("%s: %s: ignoring ConfigMap: %s", source, where, reason)
        return
    if reason is not None:
        # Named like the object would be once stored, namespace defaulted.
        what = describe(_normalized(doc)) if _name(doc) else where
        problems.append(Problem(what, reason, source))
        return
    out.append(compact(_normalized(doc)))  # its strings shared with the other objects


def _collect_list(
    items: Any, where: str, source: str, out: list[Obj], problems: list[Problem]
) -> None:
    if items is None:  # `items:` left empty
        return
    if not isinstance(items, list):
        problems.append(Problem(where, "items of a List is not a list", source))
        return
    for index, item in enumerate(items, start=1):
        _collect(item, f"{where}, item {index}", source, out, problems)


def _name(doc: Obj) -> str | None:
    meta = doc.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    return name if isinstance(name, str) and name else None


def _invalid_reason(doc: Obj) -> str | None:
    """Why a document of a supported kind cannot be used, or None."""
    kind = doc["kind"]
    api_version = doc.get("apiVersion")
    if not isinstance(api_version, str) or not api_version:
        return "apiVersion is missing or not a string"
    if api_version not in KINDS[kind]:
        wanted = ", ".join(KINDS[kind])
        return f"unsupported apiVersion {api_version!r} for {kind} (supported: {wanted})"
    meta = doc.get("metadata")
    if not isinstance(meta, dict):
        return "metadata is missing or not a mapping"
    if _name(doc) is None:
        return "metadata.name is missing or not a string"
    namespace = meta.get("namespace")
    if namespace is not None and not isinstance(namespace, str):
        return "metadata.namespace is not a string"
    if kind == "Secret":
        return _secret_problem(doc)
    return None


def _secret_problem(secret: Obj) -> str | None:
    data = secret.get("data")
    if data is not None:
        if not isinstance(data, dict):
            return "data is not a mapping"
        for key, value in data.items():
            if not _is_base64(value):
                return f"data.{key} is not a valid base64 string"
    string_data = secret.get("stringData")
    if string_data is not None and not isinstance(string_data, dict):
        return "stringData is not a mapping"
    return None


def _is_base64(value: Any) -> bool:
    if value is None:  # `key:` with nothing after it; Kubernetes reads it as empty
        return True
    if not isinstance(value, str):
        return False
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _normalized(doc: Obj) -> Obj:
    """``doc`` with the namespace the API server would give it.

    Copies instead of editing in place: YAML anchors can make several items
    share one mapping.
    """
    meta = doc["metadata"]
    namespace = meta.get("namespace")
    if doc["kind"] in CLUSTER_SCOPED:
        # The API server ignores a namespace on cluster-scoped objects; keeping it
        # would file the object under a key nothing looks up.
        if namespace is None:
            return doc
        meta = {k: v for k, v in meta.items() if k != "namespace"}
    elif namespace:
        return doc
    else:
        meta = {**meta, "namespace": DEFAULT_NAMESPACE}
    return {**doc, "metadata": meta}


# ---------------------------------------------------------------- a folder


def manifest_files(root: Path) -> list[Path]:
    """Manifest files under ``root`` in the order kubectl would apply them."""
    return sorted(_walk(root))


def _walk(root: Path) -> Iterator[Path]:
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink loop, or two links to one directory
            dirnames[:] = []
            continue
        seen.add(real)
        # Hidden directories also covers Kubernetes' own "..data" and
        # "..2024_..." entries in a mounted ConfigMap, which would otherwise
        # show every file twice.
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if _is_manifest_name(name):
                yield Path(dirpath, name)


def _is_manifest_name(name: str) -> bool:
    if name.startswith((".", "#")) or name.endswith(("~", ".swp", ".swx", ".swo")):
        return False  # editor temporaries and lock files
    return name.endswith(MANIFEST_SUFFIXES)


def load_directory(
    root: Path,
    previous: dict[Path, list[Obj]] | None = None,
    cache: ParseCache | None = None,
    folder: FolderStore | None = None,
) -> LoadResult:
    """Load every manifest under ``root``.

    ``previous`` is the ``good`` map of the last load: a file that now fails to
    parse as a whole keeps contributing the objects it had then. ``cache``, kept
    by the caller between loads, spares parsing files that did not change; it
    is updated in place (files gone are dropped). ``folder``, also kept by the
    caller, is updated with only what changed instead of a new store being filled.
    """
    if not root.is_dir():
        reason = "is not a directory" if root.exists() else "directory does not exist"
        if folder is not None:
            folder.update({})
        return LoadResult(ObjectStore(), (Problem(str(root), reason, str(root)),), {})
    previous = previous or {}
    good: dict[Path, list[Obj]] = {}
    per_file: dict[Path, list[Problem]] = {}
    for path in manifest_files(root):
        _load_into(path, previous, cache, good, per_file)
    if cache is not None:
        for gone in cache.keys() - per_file.keys():
            del cache[gone]
    return _result(good, per_file, folder)


def reload_files(
    paths: Iterable[Path],
    last: LoadResult,
    cache: ParseCache,
    folder: FolderStore,
    budget: Budget | None = None,
) -> LoadResult:
    """``last`` with only ``paths`` (manifest files, spelled as the folder walk
    spells them) read again: the ones gone are dropped. The same result as
    ``load_directory`` when nothing else changed, without walking the folder.

    With a ``budget``, raises OverBudget (before changing anything but the
    cache) when that would mean parsing more new text than it allows.
    """
    good = dict(last.good)
    per_file = dict(last.per_file)
    for path in paths:
        good.pop(path, None)
        per_file.pop(path, None)
        if path.is_file():
            _load_into(path, last.good, cache, good, per_file, budget)
        else:
            cache.pop(path, None)
    return _result(dict(sorted(good.items())), dict(sorted(per_file.items())), folder)


def _load_into(
    path: Path,
    previous: dict[Path, list[Obj]],
    cache: ParseCache | None,
    good: dict[Path, list[Obj]],
    per_file: dict[Path, list[Problem]],
    budget: Budget | None = None,
) -> None:
    parsed = _parse_cached(path, cache, budget) if cache is not None else _parse_file(path)
    problems = parsed.problems
    if parsed.objects is not None:
        good[path] = parsed.objects
    elif path in previous:
        good[path] = previous[path]
        reason = (
            f"the last good version of this file ({len(previous[path])} objects) is still in use"
        )
        problems = [*problems, Problem("file", reason, str(path))]
    per_file[path] = problems


def _result(
    good: dict[Path, list[Obj]], per_file: dict[Path, list[Problem]], folder: FolderStore | None
) -> LoadResult:
    problems = [p for found in per_file.values() for p in found]
    if folder is not None:
        problems.extend(folder.update(good))
        return LoadResult(folder.store, tuple(problems), good, per_file)
    store = ObjectStore()
    problems.extend(_fill_store(store, good))
    return LoadResult(store, tuple(problems), good, per_file)


class FolderStore:
    """The store of a watched folder, kept up to date file by file.

    Refilling a store with every object on each reload cost a quarter of a
    second at 10,000 Ingresses; here only the objects of files whose parse
    changed are looked at. As in ``_fill_store``, when several files define
    one object, the first file in path order wins and the others are reported.
    """

    def __init__(self) -> None:
        self.store = ObjectStore()
        self._files: dict[Path, list[Obj]] = {}
        # Object -> where it is defined: (path, object) when in one file, as
        # nearly every object is (a dict of one per object was 8 MiB at 10,000
        # Ingresses), else {path: object}.
        self._defs: dict[tuple[str, str, str], tuple[Path, Obj] | dict[Path, Obj]] = {}
        self._duplicated: set[tuple[str, str, str]] = set()

    def _define(self, key: tuple[str, str, str], path: Path, obj: Obj) -> None:
        held = self._defs.get(key)
        if held is None:
            self._defs[key] = (path, obj)
        elif isinstance(held, tuple):
            if held[0] != path:  # else defined twice in one file: the first counts
                self._defs[key] = {held[0]: held[1], path: obj}
        else:
            held.setdefault(path, obj)

    def _undefine(self, key: tuple[str, str, str], path: Path) -> None:
        held = self._defs.get(key)
        if isinstance(held, tuple):
            if held[0] == path:
                del self._defs[key]
        elif held is not None:
            held.pop(path, None)
            if len(held) == 1:
                self._defs[key] = next(iter(held.items()))

    def _definitions(self, key: tuple[str, str, str]) -> dict[Path, Obj]:
        held = self._defs.get(key)
        if held is None:
            return {}
        return {held[0]: held[1]} if isinstance(held, tuple) else held

    def update(self, good: dict[Path, list[Obj]]) -> list[Problem]:
        """Take the new ``good`` map; return the duplicate-definition problems."""
        affected: set[tuple[str, str, str]] = set()
        for path in self._files.keys() | good.keys():
            old, new = self._files.get(path), good.get(path)
            if old is new:
                continue  # the same parse: the same objects
            for obj in old or ():
                key = _key(obj)
                self._undefine(key, path)
                affected.add(key)
            for obj in new or ():
                key = _key(obj)
                self._define(key, path, obj)
                affected.add(key)
            if new is None:
                del self._files[path]
            else:
                self._files[path] = new
        for key in affected:
            defs = self._definitions(key)
            if not defs:
                self._duplicated.discard(key)
                self.store.delete(*key)
                continue
            first = min(defs)
            self.store.put(defs[first], origin=str(first))
            if len(defs) > 1:
                self._duplicated.add(key)
            else:
                self._duplicated.discard(key)
        problems = []
        for key in sorted(self._duplicated):
            defs = self._definitions(key)
            first = min(defs)
            for path in sorted(defs):
                if path != first:
                    reason = f"also defined in {first}, which is the one used"
                    problems.append(Problem(describe(defs[path]), reason, str(path)))
        return problems


def _key(obj: Obj) -> tuple[str, str, str]:
    meta = obj["metadata"]
    return (obj["kind"], meta.get("namespace") or "", meta["name"])


def _parse_cached(path: Path, cache: ParseCache, budget: Budget | None = None) -> _FileResult:
    try:
        st = path.stat()
    except OSError:
        cache.pop(path, None)
        return _parse_file(path)  # gone meanwhile: report it as parsing does
    identity = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    hit = cache.get(path)
    # A file modified in the last RACY_NS may be written again within the same
    # timestamp tick, same size: like git's "racily clean" entries, its bytes are
    # compared rather than its times (reading is cheap; parsing YAML is not).
    if hit is not None and hit[0] == identity and time.time_ns() - st.st_mtime_ns > RACY_NS:
        return hit[2]
    raw = _read(path)
    if isinstance(raw, _FileResult):
        cache.pop(path, None)
        return raw
    digest = hashlib.blake2b(raw, digest_size=16).digest()
    if hit is not None and hit[1] == digest:
        cache[path] = (identity, digest, hit[2])
        return hit[2]
    parsed = _parse_bytes(path, raw, hit[2] if hit is not None else None, budget)
    cache[path] = (identity, digest, parsed)
    return parsed


def _fill_store(store: ObjectStore, good: dict[Path, list[Obj]]) -> list[Problem]:
    """Put every object in ``store``; the first definition of an object wins."""
    problems: list[Problem] = []
    first_seen: dict[tuple[str, str, str], Path] = {}
    for path in sorted(good):
        for obj in good[path]:
            meta = obj["metadata"]
            key = (obj["kind"], meta.get("namespace") or "", meta["name"])
            if key in first_seen:
                reason = f"also defined in {first_seen[key]}, which is the one used"
                problems.append(Problem(describe(obj), reason, str(path)))
                continue
            first_seen[key] = path
            store.put(obj, origin=str(path))
    return problems


# ---------------------------------------------------------------- the named class


IMPLIED_ORIGIN = "--ingress-class"


class ImpliedClass:
    """Manifest mode with ``--ingress-class NAME``: the IngressClass NAME, taken as ours
    when the folder does not hold one.

    A folder of application manifests rarely holds the IngressClass: it is
    installed with the controller. So ``ingressd check --controller-name
    k8s.io/ingress-nginx --ingress-class nginx`` on such a folder would call
    every Ingress of class nginx unowned. Naming the class says which class
    this ingressd is installed as, so it stands in for the object, with
    ``spec.controller`` = ``--controller-name``; an IngressClass NAME in the
    folder always wins. In cluster mode the cluster's IngressClasses decide.

    Snapshots keep their kinds' mappings (and this object) identical while
    nothing changes, which is how the builder tells what changed.
    """

    def __init__(self, name: str, controller: str) -> None:
        self.name = name
        self.controller = controller
        self.obj: Obj = {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "IngressClass",
            "metadata": {"name": name},
            "spec": {"controller": controller},
        }
        self.active = False  # the last snapshot needed it
        self._classes: Any = None  # the folder's IngressClass mapping last seen, and ours
        self._with: Any = None
        self._origins: Any = None
        self._origins_with: Any = None

    def apply(self, snapshot: Snapshot) -> Snapshot:
        classes = snapshot.of("IngressClass")
        self.active = ("", self.name) not in classes
        if not self.active:
            return snapshot
        if classes is not self._classes:
            self._classes = classes
            self._with = MappingProxyType({**classes, ("", self.name): self.obj})
        if snapshot.origins is not self._origins:
            self._origins = snapshot.origins
            key = ("IngressClass", "", self.name)
            self._origins_with = MappingProxyType({**snapshot.origins, key: IMPLIED_ORIGIN})
        objects = {**snapshot.objects, "IngressClass": self._with}
        return Snapshot(MappingProxyType(objects), snapshot.slices_by_service, self._origins_with)

    def note(self, root: Path) -> str:
        return (
            f"IngressClass {self.name!r} is not in {root}: taken as ingressd's "
            f"(controller {self.controller}), as --ingress-class names it"
        )


# ---------------------------------------------------------------- watching


def _force_polling() -> bool:
    return os.environ.get(FORCE_POLLING_ENV, "").strip().lower() in ("1", "true", "yes")


def _fingerprint(root: Path) -> Fingerprint:
    entries = {}
    for path in manifest_files(root):
        stamp = _stamp(path)
        if stamp is not None:  # else gone already; the load will not see it either
            entries[str(path)] = stamp
    return entries


def _stamp(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _changed_files(
    root: Path, changes: set[tuple[watchfiles.Change, str]], known: Fingerprint
) -> list[Path] | None:
    """The manifest files that watcher ``changes`` name, spelled as the folder
    walk spells them; None when only a walk of the whole folder can tell.

    That is when a directory changed (files may have come or gone with it), a
    symlink (a mounted ConfigMap swaps its "..data" link, and every file
    behind it changes without an event of its own), anything inside a hidden
    directory (which a visible symlink may point into), or a path outside the
    root as walked. Hidden files, such as the temporary file of an atomic
    write, are not manifests and change nothing.
    """
    real_root = os.path.realpath(root)
    files = []
    for _, raw in changes:
        rel = os.path.relpath(raw, real_root)
        parts = rel.split(os.sep)
        if rel == os.curdir or parts[0] == os.pardir:
            return None
        if any(part.startswith(".") for part in parts[:-1]):
            return None
        path = Path(root, *parts)
        if os.path.islink(path) or os.path.isdir(path):
            return None
        if os.path.isfile(path):
            if _is_manifest_name(parts[-1]):
                files.append(path)
            continue  # an editor's backup or another kind of file
        # Gone: a manifest file we held, or something that held some (a directory).
        if str(path) in known:
            files.append(path)
        elif any(k.startswith(str(path) + os.sep) for k in known):
            return None
    return sorted(set(files))


def _dir_identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    """Sleep for ``seconds``, waking early when ``stop`` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


class ManifestSource:
    """Loads a manifest folder and reloads it whenever something in it changes.

    Change notifications drive reloads. Each quiet watcher tick also compares a
    cheap stat fingerprint of the files with the one taken at the last load:
    every tick when polling (the poll watcher sees mtimes only to the second,
    so a second write within the same second would otherwise be lost), and
    every few seconds with native notifications, as a safety net.
    """

    def __init__(
        self, root: Path, on_load: Callable[[LoadResult], None], debounce_ms: int = 50
    ) -> None:
        self.root = root
        self.on_load = on_load
        self.debounce_ms = max(1, debounce_ms)
        self._good: dict[Path, list[Obj]] = {}
        self._cache: ParseCache = {}
        self._folder = FolderStore()
        self._last: LoadResult | None = None
        self._fingerprint: Fingerprint | None = None

    def load(self) -> LoadResult:
        """Load the folder now, hand the result to ``on_load`` and return it."""
        result, fingerprint = self._scan()
        self._accept(result, fingerprint)
        return result

    def _scan(
        self, files: list[Path] | None = None, budget: Budget | None = None
    ) -> tuple[LoadResult, Fingerprint]:
        """Load the folder, or just ``files`` when a full load was done before."""
        last = self._last
        if files is None or last is None or self._fingerprint is None:
            # Fingerprint first: a change made during the load then differs from it.
            fingerprint = _fingerprint(self.root)
            return load_directory(self.root, self._good, self._cache, self._folder), fingerprint
        fingerprint = dict(self._fingerprint)
        for path in files:
            stamp = _stamp(path)
            if stamp is None:
                fingerprint.pop(str(path), None)
            else:
                fingerprint[str(path)] = stamp
        return reload_files(files, last, self._cache, self._folder, budget), fingerprint

    def _accept(self, result: LoadResult, fingerprint: Fingerprint) -> None:
        self._good = result.good
        self.on_load(result)
        # Only once delivered: if on_load failed, a later check hands it over again.
        self._last = result
        self._fingerprint = fingerprint

    async def _reload(self, files: list[Path] | None = None) -> None:
        started = time.monotonic()
        try:
            if files is None:
                raise OverBudget
            # A few changed documents: read here, on the event loop. A thread
            # would take longer under load, waiting for the GIL after each
            # system call, and the loop would wait for it anyway.
            result, fingerprint = self._scan(files, Budget(INLINE_PARSE_CHARS))
        except OverBudget:
            # Parsing much YAML takes long: in a thread (on_load still runs here).
            result, fingerprint = await asyncio.to_thread(self._scan, files)
        scanned = time.monotonic()
        last = self._last
        if last is not None and result.good == last.good and result.problems == last.problems:
            # Nothing that matters changed (a touch, an editor's swap file): the
            # store is built from ``good`` alone, so it would be identical.
            log.debug("reload of %s found no changes", self.root)
            self._fingerprint = fingerprint
            return
        self._accept(result, fingerprint)
        log.debug(
            "reloaded %s (%s): scan %.0f ms, apply %.0f ms",
            self.root,
            "the whole folder" if files is None else f"{len(files)} changed files",
            (scanned - started) * 1000,
            (time.monotonic() - scanned) * 1000,
        )

    async def _changed_on_disk(self) -> bool:
        return await asyncio.to_thread(_fingerprint, self.root) != self._fingerprint

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Watch the folder until ``stop`` is set; never raises (except cancellation)."""
        stop = stop if stop is not None else asyncio.Event()
        while not stop.is_set():
            try:
                if await self._wait_for_root(stop):
                    await self._watch(stop)
            except Exception:
                log.exception("watching %s failed; retrying", self.root)
                await _wait(stop, RETRY_SECONDS)

    async def _wait_for_root(self, stop: asyncio.Event) -> bool:
        """Wait until the root is a directory; False if stopped first."""
        if _dir_identity(self.root) is not None:
            return True
        # Report the loss once (the objects it held go away), then poll quietly.
        await self._reload()
        log.info("waiting for manifest directory %s to appear", self.root)
        while not stop.is_set():
            await _wait(stop, ROOT_POLL_SECONDS)
            if _dir_identity(self.root) is not None:
                log.info("manifest directory %s appeared", self.root)
                return True
        return False

    async def _watch(self, stop: asyncio.Event) -> None:
        """Reload on every batch of changes until stopped or the root is replaced."""
        identity = _dir_identity(self.root)
        polling = _force_polling()
        check_every = 1 if polling else NATIVE_CHECK_TICKS
        synced = False
        quiet_ticks = 0
        batches = watch_folder(
            self.root,
            stop,
            debounce_ms=self.debounce_ms,
            step_ms=min(WATCH_STEP_MS, self.debounce_ms),
            tick_ms=POLL_TICK_MS if polling else WATCH_TICK_MS,
            polling=polling,
            poll_delay_ms=POLL_DELAY_MS,
        )
        # Closed on the way out, so its thread stops now, not when collected.
        async with contextlib.aclosing(batches):
            async for changes in batches:
                if not changes:
                    quiet_ticks += 1
                # The first batch (empty) means the watcher is in place: reload once then, so a
                # change made while it was being set up is not missed.
                if (
                    changes
                    or not synced
                    or (quiet_ticks % check_every == 0 and await self._changed_on_disk())
                ):
                    log.debug("reloading %s (%d changes)", self.root, len(changes))
                    files = None
                    if changes and synced and self._fingerprint is not None:
                        files = _changed_files(self.root, changes, self._fingerprint)
                    await self._reload(files)
                    synced = True
                if _dir_identity(self.root) != identity:
                    # Deleted or swapped for another directory: the watch is on the
                    # old one, so start over.
                    log.info("manifest directory %s was removed or replaced", self.root)
                    return
