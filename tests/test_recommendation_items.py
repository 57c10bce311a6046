"""Item metadata for offline evaluation: the documented CSV/TSV and MovieLens' u.item,
errors that name the line, and `recommend evaluate --items` putting content to work."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from domain.recommendation.items import MOVIELENS_GENRES, ItemsFormatError, parse_items
from tests.test_cli import failed_cleanly, run, run_catching


def flags(*genres: str) -> str:
    return "|".join("1" if g in genres else "0" for g in MOVIELENS_GENRES)


def test_a_tsv_with_a_header_in_any_column_order() -> None:
    catalogue = parse_items([
        "price\titem_id\ttitle\tcategories\tbrand\tnote\n",
        "12.50\tt1\tGreen tea\ttea|green\tLeafy\tignored\n",
        "\n",
        "\tt2\tMug\t\t\t\n",
    ])
    tea = catalogue["t1"]
    assert (tea.name, tea.category, tea.brand, tea.price) == ("Green tea", "tea", "Leafy", 1250)
    assert "green" in tea.attributes.split()
    assert (catalogue["t2"].category, catalogue["t2"].price) == ("", 0)


def test_a_quoted_csv() -> None:
    catalogue = parse_items(['item_id,title,categories,released\n',
                             '7,"Tea, green",tea,2026-03-01\n'])
    assert catalogue["7"].name == "Tea, green" and catalogue["7"].released == date(2026, 3, 1)


def test_movielens_u_item_genres() -> None:
    catalogue = parse_items([
        f"1|Toy Story (1995)|01-Jan-1995||http://x|{flags('Animation', 'Comedy')}\n",
        f"2|GoldenEye (1995)|||http://y|{flags('Action')}\n",
    ])
    toy = catalogue["1"]
    assert toy.category == "Animation" and toy.released == date(1995, 1, 1)
    assert {"animation", "comedy"} <= set(toy.attributes.lower().split())
    assert catalogue["2"].released is None


@pytest.mark.parametrize(("lines", "line", "problem"), [
    (["id,title\n", "1,a\n"], 1, "no item_id column"),
    (["item_id,price\n", "1,3\n", "2,cheap\n"], 3, "'cheap' is not a number"),
    (["item_id,price\n", "1,-3\n"], 2, "non-negative"),
    (["item_id,title\n", "1,a\n", "1,b\n"], 3, "duplicate item id '1'"),
    (["item_id,title\n", "1,a,extra\n"], 2, "expected 2 fields"),
    (["item_id,released\n", "1,yesterday\n"], 2, "not an ISO date"),
    ([f"1|A|01-Jan-1995||u|{flags('Action')}\n", f"2|B|01-Jan-1995||u|{flags()[:-1]}2\n"],
     2, "0 or 1"),
    ([f"1|A|01-Jan-1995||u|{flags('Action')}\n", "2|B|x\n"], 2, "expected 24"),
    ([f"1|A|Jan 1 1995||u|{flags('Action')}\n"], 1, "not like 01-Jan-1995"),
])
def test_errors_name_the_line(lines: list[str], line: int, problem: str) -> None:
    with pytest.raises(ItemsFormatError) as raised:
        parse_items(lines)
    assert raised.value.line_number == line
    assert problem in str(raised.value) and f"line {line}" in str(raised.value)


def test_evaluate_with_items_counts_content_and_names_the_served_model(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'unused.db'}"
    ratings = tmp_path / "u.data"
    # Two tastes: even users rate even items, odd users odd items.
    ratings.write_text("".join(f"{user}\t{(user % 2) + 2 * ((user * 7 + n) % 20)}\t4\t{n}\n"
                               for user in range(40) for n in range(10)))
    items = tmp_path / "items.tsv"
    items.write_text("item_id\ttitle\tcategories\n" + "".join(
        f"{i}\tItem {i}\t{'even' if i % 2 == 0 else 'odd'}\n" for i in range(40)))
    out = json.loads(run(url, "recommend", "evaluate", "--ratings", str(ratings), "--items",
                         str(items), "--json").stdout.splitlines()[-1])
    assert out["served"] == "hybrid" and out["items"] == 40
    assert {"popularity", "ease", "collaborative", "content", "hybrid"} <= set(out)
    assert all({"precision", "coverage"} <= set(out[m]) for m in ("content", "hybrid"))
    assert out["content"]["precision"] > out["popularity"]["precision"]
    # 40 members are too few to choose a blend on: the given weights stand, and it says so.
    assert "fewer than 100 validation members" in out["served_tuning"]["skipped"]
    table = run(url, "recommend", "evaluate", "--ratings", str(ratings), "--items",
                str(items)).stdout
    assert "served: hybrid, not tuned: fewer than 100" in table and "content" in table
    broken = tmp_path / "broken.tsv"
    broken.write_text("item_id\tprice\n1\t2\n2\tfree\n")
    failure = run_catching(url, "recommend", "evaluate", "--ratings", str(ratings),
                           "--items", str(broken))
    assert failed_cleanly(failure) and "line 3" in failure.output
    alone = run_catching(url, "recommend", "evaluate", "--items", str(items))
    assert failed_cleanly(alone)
