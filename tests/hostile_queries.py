"""The hostile documents of issue 14, shared by the edge tests and the edge benchmark."""

from __future__ import annotations


def fragment_bomb(levels: int = 8, fan_out: int = 10) -> str:
    """The issue's document: L0 asks two fields, each Lk spreads L(k-1) ten times and the
    query spreads the last ten times; 726 characters that expand to 10^8 selections."""
    fragments = ["fragment L0 on Query { caseReasons pickupPoints { pointId } }"]
    for k in range(1, levels):
        spreads = " ".join([f"...L{k - 1}"] * fan_out)
        fragments.append(f"fragment L{k} on Query {{ {spreads} }}")
    top = " ".join([f"...L{levels - 1}"] * fan_out)
    return f"query Bomb {{ {top} }} " + " ".join(fragments)


NESTED = (
    "members(first: 100) { edges { node { orders(first: 100) { edges { node { "
    "shipments { timeline { status } } } } } } } }"
)
# 30 aliases of the nested connection: the 22-33 s query.
COSTLY = "{ " + " ".join(f"m{i}: {NESTED}" for i in range(30)) + " }"
