"""A consistent-hash ring over a backend's endpoints (``upstream-hash-by``).

The ring is the one ingress-nginx's balancers use: lua-resty-balancer's
``resty.chash`` (``lib/resty/chash.lua`` and ``chash.c``), which
``rootfs/etc/nginx/lua/balancer/chash.lua`` and ``chashsubset.lua`` build over
the endpoints. Each node (``address:port``) gets 160 points: the first is the
CRC-32 of the node's name continued over four zero bytes, each next one the
CRC-32 continued over the little-endian bytes of the point before. A key is the
CRC-32 of its text; it goes to the point with the greatest hash not above it
(the first point when every point is above it).

So the ring depends on the node names alone: the same endpoints give the same
ring in every worker process, after every rebuild, and in ingress-nginx; no
per-process salt, no Python ``hash()``. Adding a node adds its points and moves
only the keys that now fall on them, about 1/N of them.

Built once per endpoint set (``Backend.hash_ring``), never per request; a
lookup is one CRC-32 and one binary search. Bounded: at most ``MAX_POINTS``
points per ring (fewer per node beyond 1,024 nodes).
"""

from __future__ import annotations

import bisect
import struct
import zlib
from array import array
from collections.abc import Sequence
from typing import Final

POINTS_PER_NODE: Final = 160  # resty.chash's CONSISTENT_POINTS
MAX_POINTS: Final = POINTS_PER_NODE * 1024
_MASK: Final = 0xFFFFFFFF
_LE32: Final = struct.Struct("<I").pack
# A point packed in one int, its hash above its node's index, so that sorting
# plain ints sorts the points (by hash, then node): no tuple per point.
_NODE_BITS: Final = 20  # MAX_POINTS nodes at most (one point each) fit
_NODE_MASK: Final = (1 << _NODE_BITS) - 1


def node_points(name: str, count: int) -> list[int]:
    """The ``count`` point hashes of node ``name`` (chash.c ``chash_point_init_crc``)."""
    base = zlib.crc32(name.encode("latin-1", "replace"))
    # chash.c continues the CRC from the final value of the name's, without the
    # usual pre-inversion; zlib.crc32 inverts the value it is given first.
    start = base ^ _MASK
    out: list[int] = []
    h = 0
    for _ in range(count):
        h = zlib.crc32(_LE32(h), start)
        out.append(h)
    return out


class HashRing:
    """Points sorted by hash, each naming the index of its node in ``size`` nodes."""

    __slots__ = ("_hashes", "_nodes", "size")

    # Arrays of 4-byte values: a ring of 1,000 endpoints takes 1.3 MB, not 12.
    _hashes: array[int]
    _nodes: array[int]
    size: int

    def __init__(self, names: Sequence[str], weights: Sequence[int] | None = None) -> None:
        n = min(len(names), MAX_POINTS)  # beyond, nodes would share a point each
        self.size = n
        per_node = POINTS_PER_NODE
        if n and n * per_node > MAX_POINTS:
            per_node = max(1, MAX_POINTS // n)
        points: list[int] = []
        for index in range(n):
            count = per_node * (weights[index] if weights is not None else 1)
            points.extend([(h << _NODE_BITS) | index for h in node_points(names[index], count)])
        # Ties (two nodes' points with one hash) go by node order: deterministic.
        points.sort()
        self._hashes = array("I", [p >> _NODE_BITS for p in points])
        self._nodes = array("I", [p & _NODE_MASK for p in points])

    def __len__(self) -> int:
        return len(self._hashes)

    def find(self, key: bytes) -> int:
        """The index of the node ``key`` hashes to; -1 on an empty ring."""
        hashes = self._hashes
        if not hashes:
            return -1
        at = bisect.bisect_right(hashes, zlib.crc32(key)) - 1
        return self._nodes[at if at >= 0 else 0]

    def successors(self, key: bytes) -> list[int]:
        """Every node, in ring order from the one ``key`` hashes to (each once).

        For stepping past nodes that cannot take the request (passive health),
        as nginx's ``hash ... consistent`` walks its ring.
        """
        hashes = self._hashes
        if not hashes:
            return []
        at = bisect.bisect_right(hashes, zlib.crc32(key)) - 1
        if at < 0:
            at = 0
        nodes = self._nodes
        order: list[int] = []
        seen: set[int] = set()
        total = len(nodes)
        for step in range(total):
            node = nodes[(at + step) % total]
            if node not in seen:
                seen.add(node)
                order.append(node)
                if len(order) == self.size:
                    break
        return order


def subsets(count: int, size: int) -> list[list[int]]:
    """chashsubset.lua ``build_subset_map``: ``count`` endpoints (by index) in
    consecutive subsets of ``size``; the last one is filled up with the first
    endpoints again, so every subset has ``size`` members."""
    if count == 0 or size <= 0:
        return []
    sets = -(-count // size)
    padded = list(range(count))
    j = 0
    while len(padded) < sets * size:
        padded.append(padded[j])  # the list grows as it is read, as the Lua table does
        j += 1
    return [padded[i * size : (i + 1) * size] for i in range(sets)]
