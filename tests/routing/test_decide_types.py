"""What decide's per-request types promise, on both builds.

``RequestHead``, ``Forward`` and ``Respond`` (and proxy/peer.py's ``Peer``,
made per connection) are plain classes with an explicit ``__init__`` rather
than dataclasses: compiled by mypyc a dataclass keeps the Python ``__init__``
the dataclasses module generates (0.78 µs for a frozen Forward, 0.12 native)
(tests/repo/test_compiled.py checks they are native there). These tests hold
them to what the dataclasses gave their users: comparison, hashing, printing,
immutability where they were frozen, and a way to make a changed copy.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ingressd
from ingressd.model.backend import Backend, Endpoint
from ingressd.model.table import Route
from ingressd.policy.upstream_tls import upstream_tls
from ingressd.proxy.peer import Peer
from ingressd.routing.decide import Forward, RequestHead, Respond

COMPILED = ingressd.BUILD == "compiled with mypyc"

EP1 = Endpoint("10.0.0.1", 80)
EP2 = Endpoint("10.0.0.2", 80)
BACKEND = Backend("ns/svc:80", (EP1, EP2))
ROUTE = Route("/", "Prefix", BACKEND, "ns/web")
OTHER_ROUTE = Route("/other", "Prefix", BACKEND, "ns/other")


def forward(**changes: object) -> Forward:
    fields: dict[str, object] = {
        "endpoint": EP1,
        "backend": BACKEND,
        "target": "/a?b=1",
        "route": ROUTE,
        "request_headers": ((b"Host", b"inside"),),
        "response_headers": ((b"Set-Cookie", b"route=1"),),
        "tls": None,
    }
    fields.update(changes)
    return Forward(**fields)  # type: ignore[arg-type]


def test_forward_copy_changes_only_what_it_is_given() -> None:
    """retarget's replacement for dataclasses.replace."""
    fwd = forward()
    assert fwd.copy() == fwd and fwd.copy() is not fwd
    moved = fwd.copy(endpoint=EP2)
    assert moved.endpoint is EP2
    assert moved == forward(endpoint=EP2)
    cookie = ((b"Set-Cookie", b"route=2"),)
    assert fwd.copy(endpoint=EP2, response_headers=cookie) == forward(
        endpoint=EP2, response_headers=cookie
    )
    assert fwd.copy(request_headers=()) == forward(request_headers=())
    tls = upstream_tls(None, None)
    assert fwd.copy(tls=tls) == forward(tls=tls)
    assert fwd == forward()  # the original is untouched


def test_forward_compares_and_hashes_by_every_field() -> None:
    fwd = forward()
    assert fwd == forward() and hash(fwd) == hash(forward())
    for change in (
        {"endpoint": EP2},
        {"target": "/a"},
        {"route": OTHER_ROUTE},
        {"request_headers": ()},
        {"response_headers": ()},
    ):
        assert fwd != forward(**change), change
    assert fwd != "Forward" and fwd != Respond(200, "")


def test_respond_compares_without_its_route() -> None:
    """As the dataclass's ``field(compare=False)``: the same answer whichever route gave it."""
    a = Respond(308, "308 Permanent Redirect\n", location="https://x/", route=ROUTE)
    b = Respond(308, "308 Permanent Redirect\n", "https://x/", (), OTHER_ROUTE)
    assert a == b and hash(a) == hash(b)
    assert a == Respond(308, "308 Permanent Redirect\n", location="https://x/")
    assert a != Respond(301, "308 Permanent Redirect\n", location="https://x/")
    assert a != Respond(308, "308 Permanent Redirect\n", location="https://y/")
    assert a != Respond(308, "", location="https://x/")
    assert Respond(401, "", headers=((b"A", b"b"),)) != Respond(401, "")
    assert a.route is ROUTE and b.route is OTHER_ROUTE


def test_request_head_compares_and_is_mutable_and_unhashable() -> None:
    """A RequestHead was a plain (not frozen) dataclass: tests vary one field of it."""
    head = RequestHead("GET", "a.test", "/", "q=1", "192.0.2.1", False)
    same = RequestHead(
        method="GET", host="a.test", path="/", query="q=1", client_ip="192.0.2.1", tls=False
    )
    assert head == same
    assert (head.origin, head.headers, head.tls_names) == (None, (), None)
    head.tls_names = ("a.test",)
    assert head != same
    same.tls_names = ("a.test",)
    assert head == same
    with pytest.raises(TypeError):
        hash(head)


def test_peer_compares_and_hashes() -> None:
    peer = Peer("192.0.2.1", b"443", ("a.test",), False, b"\r\nX-Real-IP: 192.0.2.1")
    assert peer == Peer("192.0.2.1", b"443", ("a.test",), False, b"\r\nX-Real-IP: 192.0.2.1")
    assert hash(peer) == hash(Peer("192.0.2.1", b"443", ("a.test",), False, peer.forwarded_tail))
    assert peer != Peer("192.0.2.1", b"443", ("a.test",), True, peer.forwarded_tail)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (
            RequestHead("GET", "a.test", "/p", "", "192.0.2.1", True, tls_names=()),
            "RequestHead(method='GET', host='a.test', path='/p', query='', "
            "client_ip='192.0.2.1', tls=True, origin=None, headers=(), tls_names=(), "
            "server_port=b'')",
        ),
        (
            Respond(404, "no\n"),
            "Respond(status=404, body='no\\n', location=None, headers=(), route=None)",
        ),
        (
            Peer("::1", b"80", None, True, b""),
            "Peer(client_ip='::1', server_port=b'80', tls_names=None, trusted=True, "
            "forwarded_tail=b'', tls_object=None)",
        ),
    ],
    ids=["RequestHead", "Respond", "Peer"],
)
def test_they_print_as_the_dataclasses_did(value: object, text: str) -> None:
    """Assertion messages and logs show the fields, named."""
    assert repr(value) == text


def test_forward_prints_its_fields() -> None:
    text = repr(forward())
    assert text.startswith(f"Forward(endpoint={EP1!r}, backend={BACKEND!r}, target='/a?b=1', ")
    assert text.endswith(
        "request_headers=((b'Host', b'inside'),), "
        "response_headers=((b'Set-Cookie', b'route=1'),), tls=None, hsts=None, access=None)"
    )


FROZEN = [Forward, Respond, Peer]


@pytest.mark.parametrize("cls", FROZEN, ids=lambda c: c.__name__)
def test_the_frozen_ones_declare_every_field_final(cls: type) -> None:
    """They were frozen dataclasses: every field is ``Final``, so mypy (which the
    tests run on ingressd) rejects any assignment after ``__init__``, and mypyc
    compiles the fields without a setter."""
    # The source file (a compiled module's __file__ is its .so).
    source = Path(ingressd.__file__).parent.parent.joinpath(*cls.__module__.split("."))
    tree = ast.parse(source.with_suffix(".py").read_text())
    (node,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls.__name__]
    fields = [n for n in node.body if isinstance(n, ast.AnnAssign)]
    slots = [n for n in node.body if isinstance(n, ast.Assign) and n.targets[0].id == "__slots__"]  # type: ignore[attr-defined]
    assert fields and slots
    names = {f.target.id for f in fields}  # type: ignore[attr-defined]
    assert names == set(ast.literal_eval(slots[0].value)), "every slot is a declared field"
    for f in fields:
        ann = f.annotation
        assert isinstance(ann, ast.Subscript) and ast.unparse(ann.value) == "Final", ast.unparse(f)


@pytest.mark.skipif(not COMPILED, reason="pure Python enforces Final statically only (mypy)")
@pytest.mark.parametrize(
    ("value", "name"),
    [
        (forward(), "endpoint"),
        (forward(), "tls"),
        (Respond(200, "", route=ROUTE), "route"),
        (Peer("::1", b"80", None, True, b""), "client_ip"),
    ],
    ids=lambda v: v if isinstance(v, str) else type(v).__name__,
)
def test_compiled_the_frozen_ones_cannot_be_changed(value: object, name: str) -> None:
    before = getattr(value, name)
    with pytest.raises(AttributeError):
        setattr(value, name, before)
    assert getattr(value, name) is before
