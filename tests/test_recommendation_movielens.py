"""Reading MovieLens `u.data` files: what parses, and errors that name the line."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import pytest

from domain.recommendation.interactions import Interaction
from domain.recommendation.movielens import (
    MovieLensFormatError,
    parse_movielens,
    read_movielens,
)

SAMPLE = "196\t242\t3\t881250949\n186\t302\t3\t891717742\n\n22\t377\t1.5\t878887116\n"


def test_reads_user_item_rating_timestamp_from_a_path_or_a_stream(tmp_path: Path) -> None:
    path = tmp_path / "u.data"
    path.write_text(SAMPLE, encoding="utf-8")
    expected = [
        Interaction("196", "242", 3.0, datetime.fromtimestamp(881250949, UTC)),
        Interaction("186", "302", 3.0, datetime.fromtimestamp(891717742, UTC)),
        Interaction("22", "377", 1.5, datetime.fromtimestamp(878887116, UTC)),
    ]
    assert read_movielens(path) == expected
    assert read_movielens(str(path)) == expected
    assert read_movielens(io.StringIO(SAMPLE)) == expected


def test_other_separators_read_movielens_1m() -> None:
    assert parse_movielens(["1::1193::5::978300760\r\n"], separator="::") == [
        Interaction("1", "1193", 5.0, datetime.fromtimestamp(978300760, UTC))
    ]


@pytest.mark.parametrize(
    ("bad_line", "problem"),
    [
        ("1\t2\t3", "expected 4 fields"),
        ("1 2 3 881250949", "expected 4 fields"),
        ("1\t2\tgood\t881250949", "rating 'good' is not a number"),
        ("1\t2\tnan\t881250949", "not finite"),
        ("1\t2\t4\tyesterday", "timestamp 'yesterday' is not Unix seconds"),
        ("\t2\t4\t881250949", "empty user or item id"),
    ],
)
def test_a_malformed_line_fails_with_its_number(bad_line: str, problem: str) -> None:
    text = f"196\t242\t3\t881250949\n\n{bad_line}\n186\t302\t3\t891717742\n"
    with pytest.raises(MovieLensFormatError) as caught:
        read_movielens(io.StringIO(text))
    assert caught.value.line_number == 3
    assert problem in caught.value.problem
    assert str(caught.value).startswith("line 3: ")
    assert isinstance(caught.value, ValueError)
