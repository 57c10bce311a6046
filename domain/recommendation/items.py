"""Item metadata for offline evaluation (`patron recommend evaluate --items FILE`), so the
content model has something to compare items by when the ratings come from a file.

Two formats, told apart by the first line:

- A CSV or TSV file with a header row (tab-separated when the header has a tab, comma-
  separated otherwise, quoted as usual for CSV). Columns, by name, in any order:
  `item_id` (required, matching the ratings' item ids), `title`, `categories` (one or
  more, separated by `|`; the first is the item's category, all of them count as words),
  `brand`, `price` (a decimal in major units, e.g. `12.50`, kept in minor units) and
  `released` (ISO date). Other columns are ignored; empty cells are allowed.
- MovieLens 100k's `u.item`: no header, `|`-separated: movie id | title | release date
  (`01-Jan-1995`) | video release date | IMDb URL | 19 genre flags (0/1) in the order of
  `u.genre` (unknown, Action, ..., Western). Read as latin-1, as that file is encoded.

A malformed line stops the read with its line number, as for the ratings.
"""

from __future__ import annotations

import csv
import os
from datetime import date, datetime
from decimal import Decimal, InvalidOperation

from domain.recommendation.catalogue import Catalogue, Product

__all__ = ["MOVIELENS_GENRES", "ItemsFormatError", "parse_items", "read_items"]

MOVIELENS_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)


class ItemsFormatError(ValueError):
    def __init__(self, line_number: int, problem: str) -> None:
        super().__init__(f"line {line_number}: {problem}")
        self.line_number = line_number
        self.problem = problem


def _product(item_id: str, title: str, categories: list[str], brand: str, price: int,
             released: date | None) -> Product:
    words = " ".join([title, *categories])
    return Product(item_id, title, categories[0] if categories else "", brand, price,
                   released, words)


def _movielens(lines: list[str]) -> Catalogue:
    catalogue: dict[str, Product] = {}
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) != 5 + len(MOVIELENS_GENRES):
            raise ItemsFormatError(number, f"expected {5 + len(MOVIELENS_GENRES)} "
                                   f"'|'-separated fields, found {len(fields)}")
        item_id, title, released_text = fields[0].strip(), fields[1].strip(), fields[2]
        flags = fields[5:]
        if not item_id:
            raise ItemsFormatError(number, "empty movie id")
        if any(flag.strip() not in ("0", "1") for flag in flags):
            raise ItemsFormatError(number, "genre flags must be 0 or 1")
        released = None
        if released_text.strip():
            try:
                released = datetime.strptime(released_text.strip(), "%d-%b-%Y").date()
            except ValueError:
                raise ItemsFormatError(
                    number, f"release date {released_text!r} is not like 01-Jan-1995"
                ) from None
        genres = [g for g, flag in zip(MOVIELENS_GENRES, flags, strict=True)
                  if flag.strip() == "1"]
        if item_id in catalogue:
            raise ItemsFormatError(number, f"duplicate item id {item_id!r}")
        catalogue[item_id] = _product(item_id, title, genres, "", 0, released)
    return catalogue


def _table(lines: list[str]) -> Catalogue:
    delimiter = "\t" if "\t" in lines[0] else ","
    reader = csv.reader(lines, delimiter=delimiter)
    header = [name.strip().lower() for name in next(reader)]
    if "item_id" not in header:
        raise ItemsFormatError(1, "the header has no item_id column")
    column = {name: n for n, name in enumerate(header)}
    catalogue: dict[str, Product] = {}
    for fields in reader:
        number = reader.line_num
        if not any(field.strip() for field in fields):
            continue
        if len(fields) != len(header):
            raise ItemsFormatError(number, f"expected {len(header)} fields, found "
                                   f"{len(fields)}")

        def cell(name: str, fields: list[str] = fields) -> str:
            return fields[column[name]].strip() if name in column else ""

        item_id = cell("item_id")
        if not item_id:
            raise ItemsFormatError(number, "empty item_id")
        if item_id in catalogue:
            raise ItemsFormatError(number, f"duplicate item id {item_id!r}")
        price = 0
        if cell("price"):
            try:
                amount = Decimal(cell("price"))
            except InvalidOperation:
                raise ItemsFormatError(number, f"price {cell('price')!r} is not a "
                                       "number") from None
            if not amount.is_finite() or amount < 0:
                raise ItemsFormatError(number, f"price {cell('price')!r} is not a "
                                       "non-negative amount")
            price = int(amount * 100)
        released = None
        if cell("released"):
            try:
                released = date.fromisoformat(cell("released"))
            except ValueError:
                raise ItemsFormatError(number, f"released {cell('released')!r} is not "
                                       "an ISO date") from None
        categories = [c.strip() for c in cell("categories").split("|") if c.strip()]
        catalogue[item_id] = _product(item_id, cell("title"), categories, cell("brand"),
                                      price, released)
    return catalogue


def parse_items(lines: list[str]) -> Catalogue:
    """A catalogue from the lines of an items file in either format (see above)."""
    first = next((line for line in lines if line.strip()), None)
    if first is None:
        return {}
    fields = first.rstrip("\r\n").split("|")
    if len(fields) == 5 + len(MOVIELENS_GENRES) and "\t" not in first:
        return _movielens(lines)
    return _table(lines)


def read_items(path: str | os.PathLike[str]) -> Catalogue:
    with open(path, "rb") as stream:
        data = stream.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")  # MovieLens' u.item
    return parse_items(text.splitlines(keepends=True))
