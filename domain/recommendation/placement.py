"""Where a list is shown and how it is made: the vocabulary the API, the experiments and
the serving layer share.

A placement decides what a list is *for* (a home feed ranks everything for the member; a
product page ranks what resembles one product; a cart ranks what goes with its contents;
search re-ranks a list the caller already has). A strategy decides which model scores it,
so an experiment can pit the hybrid against popularity on the same placement.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Placement", "Strategy"]


class Placement(StrEnum):
    HOME = "home"
    PRODUCT = "product"
    CART = "cart"
    SEARCH = "search"


class Strategy(StrEnum):
    HYBRID = "hybrid"
    COLLABORATIVE = "collaborative"
    CONTENT = "content"
    POPULARITY = "popularity"
