"""The segment rule language: how admins say which members belong to a segment.

A rule is text an admin types, so it is parsed, never executed: a hand-written tokenizer
and a recursive-descent parser turn it into an immutable tree of typed conditions over a
fixed whitelist of profile facts, and `evaluate` walks that tree. There is no eval, no
regular expression and no recursion that the input can make unbounded: a rule is at most
`MAX_RULE_LENGTH` characters, `MAX_CONDITIONS` conditions and `MAX_DEPTH` levels of
parentheses and `not`. Every mistake is reported with its position (0-based `offset`,
1-based `line` and `column`) and what was expected there, because admins fix rules by
reading the message.

Grammar (keywords, field names and enum words are case-insensitive)::

    rule      := or
    or        := and ("or" and)*
    and       := unary ("and" unary)*
    unary     := "not" unary | "(" rule ")" | condition
    condition := field op value
               | field "in" "[" value ("," value)* "]"
               | field "within" NUMBER ("days" | "day")     -- time fields only
               | "interest" "(" ("category" | "brand") name ")" op NUMBER
               | "has" "tag" name
    op        := "=" | "!=" | "<" | "<=" | ">" | ">=" | "≥" | "≤" | "≠" | "=="
    value     := STRING | NUMBER | WORD
    name      := STRING | WORD
    STRING    := "..." or '...' with the escapes \\ \" \' \n \t
    NUMBER    := digits ["." digits]        (no sign: no fact here is negative)
    WORD      := ASCII letter or "_", then ASCII letters, digits or "_"

`not` binds tightest, then `and`, then `or`; parentheses group. A field may be written
with spaces instead of underscores ("last purchase" is `last_purchase`).

Fields (a whitelist; each has a type that decides which conditions it takes):

- enums, with `=`, `!=` and `in`: tier (regular, silver, gold, platinum), lifecycle (new,
  active, dormant, churned), shopper_type (quality_seeker, rational_comparer,
  convenience_buyer, casual_browser, potential), price_band (budget, mid, premium). Values
  are checked when the rule is parsed; "Gold", gold and "quality seeker" are all accepted.
- whole numbers, with every comparison and `in`: purchases, orders_placed, reviews;
  total_spent and average_order_value (money, in minor units); rfm_recency,
  rfm_frequency, rfm_monetary (scores 1-5).
- decimals, with every comparison: repurchase_rate (0-1), purchases_per_30_days.
- times, with `within N days` only (and `not ... within N days`): last_purchase,
  last_activity, joined. `within N days` holds when the moment is at or after now - N days.
- `interest(category "outdoor") >= 0.3`: the category's (or brand's) share, 0-1, of the
  member's interest; a category the member shows no interest in has share 0.
- `has tag "loyal"`: the profile carries that tag.

Examples::

    tier in [Gold, Platinum] and last purchase within 30 days
        and interest(category "outdoor") ≥ 0.3
    lifecycle = dormant and purchases >= 2 and not has tag "at_risk"
    (rfm_monetary = 5 or total_spent > 100000) and not joined within 30 days

Missing facts (None: no purchase yet, so no last purchase, no RFM scores, no average
order value; or no consent to personalisation, so no interests) follow SQL's
three-valued logic: a condition on a missing fact is unknown, `not` unknown is unknown,
`false and unknown` is false, `true or unknown` is true, and a member is in the segment
only when the rule is true. So neither `last_purchase within 30 days` nor
`not last_purchase within 30 days` selects a member who never bought; write
`purchases = 0` for those.

`evaluate` explains its verdict: `why` holds a `Reason` per condition that decided it
(the children of `and`/`or` whose outcome agrees with the outcome of the whole, so all of
a true `and`, the satisfied branches of a true `or`, the failed conditions of a false
`and`), each with the condition's canonical text, the fact, its value and whether it held.
Under `not` the reasons of the operand come back with `negated` set and `held` inverted
(a missing fact's reason never holds).

Every rule has one canonical text (`Rule.text`: lower-case keywords, underscored field
names, ASCII operators, minimal parentheses, nested `and`/`or` flattened), and parsing it
gives back the same tree; segments store that text.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from domain.errors import ValidationError
from domain.loyalty_rules import Tier

MAX_RULE_LENGTH = 2000
MAX_CONDITIONS = 50
MAX_DEPTH = 20
MAX_LIST_VALUES = 50
MAX_NAME_LENGTH = 100
MAX_NUMBER_DIGITS = 15
MAX_WITHIN_DAYS = 36_500

# The profile's enums (api.profile_readmodels), repeated so that the domain needs no api
# import; a test checks that they agree.
TIERS = tuple(t.value for t in Tier)
LIFECYCLES = ("new", "active", "dormant", "churned")
SHOPPER_TYPES = ("quality_seeker", "rational_comparer", "convenience_buyer",
                 "casual_browser", "potential")
PRICE_BANDS = ("budget", "mid", "premium")
DIMENSIONS = ("category", "brand")


class FieldKind(StrEnum):
    ENUM = "enum"
    INT = "int"
    MONEY = "money"
    FLOAT = "float"
    TIME = "time"


@dataclass(frozen=True)
class FieldSpec:
    """A fact a rule may name, with the values and comparisons that make sense for it."""

    name: str
    kind: FieldKind
    values: tuple[str, ...] = ()
    minimum: float = 0
    maximum: float | None = None

    @property
    def allows_order(self) -> bool:
        return self.kind in (FieldKind.INT, FieldKind.MONEY, FieldKind.FLOAT)

    @property
    def allows_in(self) -> bool:
        return self.kind in (FieldKind.ENUM, FieldKind.INT, FieldKind.MONEY)

    @property
    def whole(self) -> bool:
        return self.kind in (FieldKind.INT, FieldKind.MONEY)


def _specs(*specs: FieldSpec) -> dict[str, FieldSpec]:
    return {spec.name: spec for spec in specs}


FIELDS: dict[str, FieldSpec] = _specs(
    FieldSpec("tier", FieldKind.ENUM, TIERS),
    FieldSpec("lifecycle", FieldKind.ENUM, LIFECYCLES),
    FieldSpec("shopper_type", FieldKind.ENUM, SHOPPER_TYPES),
    FieldSpec("price_band", FieldKind.ENUM, PRICE_BANDS),
    FieldSpec("purchases", FieldKind.INT),
    FieldSpec("orders_placed", FieldKind.INT),
    FieldSpec("reviews", FieldKind.INT),
    FieldSpec("total_spent", FieldKind.MONEY),
    FieldSpec("average_order_value", FieldKind.MONEY),
    FieldSpec("repurchase_rate", FieldKind.FLOAT, maximum=1),
    FieldSpec("purchases_per_30_days", FieldKind.FLOAT),
    FieldSpec("rfm_recency", FieldKind.INT, minimum=1, maximum=5),
    FieldSpec("rfm_frequency", FieldKind.INT, minimum=1, maximum=5),
    FieldSpec("rfm_monetary", FieldKind.INT, minimum=1, maximum=5),
    FieldSpec("last_purchase", FieldKind.TIME),
    FieldSpec("last_activity", FieldKind.TIME),
    FieldSpec("joined", FieldKind.TIME),
)
TIME_FIELDS = tuple(name for name, spec in FIELDS.items() if spec.kind is FieldKind.TIME)
# Facts that are not fields of their own: what interest(...) and has tag read.
INTERESTS = "interests"
TAGS = "tags"

COMPARISONS = ("=", "!=", "<", "<=", ">", ">=")
_OP_ALIASES = {"≥": ">=", "≤": "<=", "≠": "!=", "==": "="}
_KEYWORDS = frozenset({"and", "or", "not", "in", "within"})


# -- errors ---------------------------------------------------------------------------------


def position(text: str, offset: int) -> tuple[int, int]:
    """(line, column), both 1-based, of a 0-based offset; columns count characters."""
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, column


class SegmentRuleError(ValidationError):
    """A rule that does not parse, with where: the message ends with the line and column."""

    def __init__(self, problem: str, text: str, offset: int) -> None:
        self.problem = problem
        self.offset = offset
        self.line, self.column = position(text, offset)
        super().__init__(f"{problem} at line {self.line}, column {self.column}", "rule")


# -- facts ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Facts:
    """What a rule can see of one member. None is a missing fact (see the module doc).

    `interests` maps (dimension, key) to the key's share (0-1) of the member's interest
    in that dimension; None when interests are unknown (no consent to personalisation),
    and a key that is absent from a known mapping has share 0. Keys and tags compare
    case-insensitively. Times must be timezone-aware.
    """

    tier: str | None = None
    lifecycle: str | None = None
    shopper_type: str | None = None
    price_band: str | None = None
    purchases: int | None = None
    orders_placed: int | None = None
    reviews: int | None = None
    total_spent: int | None = None
    average_order_value: int | None = None
    repurchase_rate: float | None = None
    purchases_per_30_days: float | None = None
    rfm_recency: int | None = None
    rfm_frequency: int | None = None
    rfm_monetary: int | None = None
    last_purchase: datetime | None = None
    last_activity: datetime | None = None
    joined: datetime | None = None
    interests: Mapping[tuple[str, str], float] | None = field(default=None, hash=False)
    tags: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for name in TIME_FIELDS:
            moment = getattr(self, name)
            if moment is not None and moment.tzinfo is None:
                raise ValueError(f"{name} must be timezone-aware")
        for name, spec in FIELDS.items():
            value = getattr(self, name)
            if spec.kind is FieldKind.ENUM and value is not None:
                object.__setattr__(self, name, _enum_word(str(value)))
        if self.interests is not None:
            object.__setattr__(self, "interests", MappingProxyType({
                (dimension, key.casefold()): float(share)
                for (dimension, key), share in self.interests.items()
            }))
        object.__setattr__(self, "tags", frozenset(tag.casefold() for tag in self.tags))

    def interest(self, dimension: str, key: str) -> float | None:
        if self.interests is None:
            return None
        return self.interests.get((dimension, key.casefold()), 0.0)


# -- the tree -------------------------------------------------------------------------------


def _number_text(value: float) -> str:
    """Positional notation that parses back to the same number (no exponent)."""
    if isinstance(value, int):
        return str(value)
    text = format(Decimal(repr(value)), "f")
    return text if "." in text else f"{text}.0"


def _string_text(value: str) -> str:
    escaped = (value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
               .replace("\t", "\\t"))
    return f'"{escaped}"'


def _compare(actual: float | str, op: str, expected: float | str) -> bool:
    if op == "=":
        return actual == expected
    if op == "!=":
        return actual != expected
    assert isinstance(actual, int | float) and isinstance(expected, int | float)
    if op == "<":
        return actual < expected
    if op == "<=":
        return actual <= expected
    if op == ">":
        return actual > expected
    return actual >= expected


@dataclass(frozen=True)
class Compare:
    """`field op value`: enums with = and !=, numbers with any comparison."""

    field: str
    op: str
    value: int | float | str

    @property
    def text(self) -> str:
        value = self.value if isinstance(self.value, str) else _number_text(self.value)
        return f"{self.field} {self.op} {value}"

    @property
    def fact(self) -> str:
        return self.field

    def check(self, facts: Facts, now: datetime) -> tuple[bool | None, Any]:
        actual = getattr(facts, self.field)
        if actual is None:
            return None, None
        return _compare(actual, self.op, self.value), actual


@dataclass(frozen=True)
class IsIn:
    """`field in [v, ...]`: any of the listed values."""

    field: str
    values: tuple[int | str, ...]

    @property
    def text(self) -> str:
        return f"{self.field} in [{', '.join(str(v) for v in self.values)}]"

    @property
    def fact(self) -> str:
        return self.field

    def check(self, facts: Facts, now: datetime) -> tuple[bool | None, Any]:
        actual = getattr(facts, self.field)
        if actual is None:
            return None, None
        return actual in self.values, actual


@dataclass(frozen=True)
class Within:
    """`field within N days`: the moment is at or after now - N days."""

    field: str
    days: int

    @property
    def text(self) -> str:
        return f"{self.field} within {self.days} days"

    @property
    def fact(self) -> str:
        return self.field

    def check(self, facts: Facts, now: datetime) -> tuple[bool | None, Any]:
        actual: datetime | None = getattr(facts, self.field)
        if actual is None:
            return None, None
        return actual >= now - timedelta(days=self.days), actual


@dataclass(frozen=True)
class Interest:
    """`interest(category "x") op share`: the key's share of the member's interest."""

    dimension: str
    key: str
    op: str
    share: float

    @property
    def text(self) -> str:
        return (f"interest({self.dimension} {_string_text(self.key)}) {self.op} "
                f"{_number_text(self.share)}")

    @property
    def fact(self) -> str:
        return INTERESTS

    def check(self, facts: Facts, now: datetime) -> tuple[bool | None, Any]:
        actual = facts.interest(self.dimension, self.key)
        if actual is None:
            return None, None
        return _compare(actual, self.op, self.share), actual


@dataclass(frozen=True)
class HasTag:
    """`has tag "x"`: the profile carries the tag; the value shown is all its tags."""

    tag: str

    @property
    def text(self) -> str:
        return f"has tag {_string_text(self.tag)}"

    @property
    def fact(self) -> str:
        return TAGS

    def check(self, facts: Facts, now: datetime) -> tuple[bool | None, Any]:
        return self.tag.casefold() in facts.tags, tuple(sorted(facts.tags))


Condition = Compare | IsIn | Within | Interest | HasTag


@dataclass(frozen=True)
class Not:
    operand: Node

    @property
    def text(self) -> str:
        inner = self.operand.text
        return f"not ({inner})" if isinstance(self.operand, And | Or) else f"not {inner}"


@dataclass(frozen=True)
class And:
    operands: tuple[Node, ...]

    @property
    def text(self) -> str:
        return " and ".join(f"({o.text})" if isinstance(o, Or) else o.text
                            for o in self.operands)


@dataclass(frozen=True)
class Or:
    operands: tuple[Node, ...]

    @property
    def text(self) -> str:
        return " or ".join(o.text for o in self.operands)


Node = Condition | Not | And | Or


def _flat(kind: type[And] | type[Or], operands: list[Node]) -> Node:
    """One n-ary node for a chain, however it was parenthesised: one tree per meaning."""
    flat: list[Node] = []
    for operand in operands:
        flat.extend(operand.operands if isinstance(operand, kind) else (operand,))
    return flat[0] if len(flat) == 1 else kind(tuple(flat))


def conditions_of(node: Node) -> Iterator[Condition]:
    if isinstance(node, Not):
        yield from conditions_of(node.operand)
    elif isinstance(node, And | Or):
        for operand in node.operands:
            yield from conditions_of(operand)
    else:
        yield node


@dataclass(frozen=True)
class Rule:
    """A parsed rule: its tree, and the canonical text segments store."""

    root: Node
    text: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", self.root.text)

    @property
    def conditions(self) -> tuple[Condition, ...]:
        return tuple(conditions_of(self.root))

    @property
    def fields(self) -> frozenset[str]:
        """The facts the rule reads: field names, "interests" and "tags"."""
        return frozenset(c.fact for c in self.conditions)

    def __str__(self) -> str:
        return self.text


# -- tokenizer ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    kind: str  # "word", "number", "string", "punct", "op" or "end"
    value: str  # lower-cased word, decoded string, digits, punctuation, ASCII operator
    source: str  # as written, for messages
    offset: int

    def is_word(self, *words: str) -> bool:
        return self.kind == "word" and self.value in words

    def is_punct(self, char: str) -> bool:
        return self.kind == "punct" and self.value == char

    @property
    def shown(self) -> str:
        if self.kind == "end":
            return "the end of the rule"
        return f"'{_clip(self.source)}'"


def _clip(source: str) -> str:
    """Source quoted in a message, cut short: a message should not repeat a whole rule."""
    return source if len(source) <= 30 else source[:27] + "..."


_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t"}


def _is_word_start(char: str) -> bool:
    return char.isascii() and (char.isalpha() or char == "_")


def _is_word_char(char: str) -> bool:
    return char.isascii() and (char.isalnum() or char == "_")


def _is_digit(char: str) -> bool:
    return "0" <= char <= "9"


def tokenize(text: str) -> list[Token]:
    """The rule's tokens, ending with an "end" token; one pass, no backtracking."""
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        start = i
        if char in " \t\r\n":
            i += 1
            continue
        if _is_word_start(char):
            while i < n and _is_word_char(text[i]):
                i += 1
            tokens.append(Token("word", text[start:i].lower(), text[start:i], start))
        elif _is_digit(char):
            i = _number_end(text, i)
            tokens.append(Token("number", text[start:i], text[start:i], start))
        elif char in "\"'":
            value, i = _string(text, i)
            tokens.append(Token("string", value, text[start:i], start))
        elif char in "()[],":
            i += 1
            tokens.append(Token("punct", char, char, start))
        elif char in "<>!=":
            i += 2 if text.startswith("=", i + 1) else 1
            op = _OP_ALIASES.get(text[start:i], text[start:i])
            if op not in COMPARISONS:
                raise SegmentRuleError(f"unknown operator '{text[start:i]}'; use one of "
                                       f"{', '.join(COMPARISONS)}", text, start)
            tokens.append(Token("op", op, text[start:i], start))
        elif char in _OP_ALIASES:
            i += 1
            tokens.append(Token("op", _OP_ALIASES[char], char, start))
        else:
            shown = char if char.isprintable() else f"U+{ord(char):04X}"
            raise SegmentRuleError(f"unexpected character '{shown}'", text, start)
    tokens.append(Token("end", "", "", n))
    return tokens


def _number_end(text: str, i: int) -> int:
    start, n = i, len(text)
    while i < n and _is_digit(text[i]):
        i += 1
    if i < n and text[i] == ".":
        if not (i + 1 < n and _is_digit(text[i + 1])):
            raise SegmentRuleError("expected a digit after the decimal point", text, i + 1)
        i += 1
        while i < n and _is_digit(text[i]):
            i += 1
    if i - start > MAX_NUMBER_DIGITS:
        raise SegmentRuleError(f"a number has at most {MAX_NUMBER_DIGITS} digits", text,
                               start)
    return i


def _string(text: str, i: int) -> tuple[str, int]:
    """The decoded string that opens at i, and the offset after its closing quote."""
    quote, start, n = text[i], i, len(text)
    i += 1
    chars: list[str] = []
    while i < n and text[i] != quote:
        char = text[i]
        if char == "\n":
            break
        if char == "\\":
            escape = text[i + 1] if i + 1 < n else ""
            if escape not in _ESCAPES:
                raise SegmentRuleError(
                    "unknown escape in a string; use \\\\, \\\", \\', \\n or \\t", text, i)
            chars.append(_ESCAPES[escape])
            i += 2
            continue
        chars.append(char)
        i += 1
    if i >= n or text[i] != quote:
        raise SegmentRuleError(f"unterminated string: no closing {quote} on this line",
                               text, start)
    return "".join(chars), i + 1


# -- parser ---------------------------------------------------------------------------------


def _enum_word(value: str) -> str:
    """Enum values are compared as lower-case words: "Quality seeker" is quality_seeker."""
    return value.strip().lower().replace(" ", "_").replace("-", "_")


def _suggest(word: str, choices: list[str]) -> str:
    match = difflib.get_close_matches(word, choices, n=1, cutoff=0.7)
    return f" (did you mean '{match[0]}'?)" if match else ""


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.pos = 0
        self.depth = 0
        self.conditions = 0

    # -- helpers

    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.pos + ahead, len(self.tokens) - 1)]

    def advance(self) -> Token:
        token = self.peek()
        self.pos = min(self.pos + 1, len(self.tokens) - 1)
        return token

    def error(self, problem: str, token: Token) -> SegmentRuleError:
        return SegmentRuleError(problem, self.text, token.offset)

    def expected(self, what: str, token: Token | None = None) -> SegmentRuleError:
        token = token or self.peek()
        return SegmentRuleError(f"expected {what}, found {token.shown}", self.text,
                                token.offset)

    def expect_punct(self, char: str, what: str) -> Token:
        if not self.peek().is_punct(char):
            raise self.expected(what)
        return self.advance()

    def nest(self, token: Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"a rule nests at most {MAX_DEPTH} levels of parentheses and "
                             "'not'", token)

    # -- grammar

    def rule(self) -> Rule:
        if self.peek().kind == "end":
            raise self.expected("a condition")
        root = self.or_()
        token = self.peek()
        if token.is_punct(")"):
            raise self.error("unmatched ')'", token)
        if token.kind != "end":
            raise self.expected("'and', 'or' or the end of the rule")
        return Rule(root)

    def or_(self) -> Node:
        operands = [self.and_()]
        while self.peek().is_word("or"):
            self.advance()
            operands.append(self.and_())
        return _flat(Or, operands)

    def and_(self) -> Node:
        operands = [self.unary()]
        while self.peek().is_word("and"):
            self.advance()
            operands.append(self.unary())
        return _flat(And, operands)

    def unary(self) -> Node:
        token = self.peek()
        if token.is_word("not"):
            self.nest(token)
            self.advance()
            node: Node = Not(self.unary())
            self.depth -= 1
            return node
        if token.is_punct("("):
            self.nest(token)
            self.advance()
            node = self.or_()
            line, column = position(self.text, token.offset)
            self.expect_punct(")", f"')' (to close the '(' of line {line}, column {column})")
            self.depth -= 1
            return node
        return self.condition()

    def condition(self) -> Condition:
        token = self.peek()
        if token.kind != "word" or token.value in _KEYWORDS:
            raise self.expected("a condition (a field such as tier, interest(...) or "
                                "has tag)")
        self.conditions += 1
        if self.conditions > MAX_CONDITIONS:
            raise self.error(f"a rule has at most {MAX_CONDITIONS} conditions", token)
        if token.value == "interest":
            if not self.peek(1).is_punct("("):
                raise self.expected("'(' after 'interest'", self.peek(1))
            return self.interest()
        if token.value == "has":
            if not self.peek(1).is_word("tag"):
                raise self.expected("'tag' after 'has'", self.peek(1))
            self.pos += 2
            return HasTag(self.name("the tag's name", "has tag"))
        spec = self.field_name()
        token = self.peek()
        if token.is_word("in"):
            return self.membership(spec)
        if token.is_word("within"):
            return self.within(spec)
        if token.kind != "op":
            ops = "=, != or in" if spec.kind is FieldKind.ENUM else (
                "'within N days'" if spec.kind is FieldKind.TIME
                else "=, !=, <, <=, >, >=" + (" or in" if spec.allows_in else ""))
            raise self.expected(f"{ops} after '{spec.name}'")
        self.advance()
        if spec.kind is FieldKind.TIME:
            raise self.error(f"{spec.name} is a time: write '{spec.name} within N days'",
                             token)
        if spec.kind is FieldKind.ENUM and token.value not in ("=", "!="):
            raise self.error(f"{spec.name} is compared with =, != or in, not "
                             f"'{token.source}'", token)
        return Compare(spec.name, token.value, self.value(spec, f"{spec.name} {token.source}"))

    def field_name(self) -> FieldSpec:
        """The longest run of words that names a field ("last purchase" = last_purchase)."""
        words: list[Token] = []
        while len(words) < 5:
            token = self.peek(len(words))
            if token.kind != "word" or token.value in _KEYWORDS:
                break
            words.append(token)
        for count in range(len(words), 0, -1):
            name = "_".join(w.value for w in words[:count])
            if name in FIELDS:
                self.pos += count
                return FIELDS[name]
        known = [*FIELDS, "interest", "has"]
        for count in range(len(words), 0, -1):
            name = "_".join(w.value for w in words[:count])
            hint = _suggest(name, known)
            if hint:
                shown = _clip(" ".join(w.source for w in words[:count]))
                raise self.error(f"unknown field '{shown}'{hint}", words[0])
        raise self.error(f"unknown field '{_clip(words[0].source)}'; known fields: "
                         f"{', '.join(FIELDS)}, interest(...), has tag", words[0])

    def value(self, spec: FieldSpec, after: str) -> int | float | str:
        token = self.peek()
        if spec.kind is FieldKind.ENUM:
            if token.kind not in ("word", "string"):
                raise self.expected(f"a {spec.name} ({', '.join(spec.values)}) after "
                                    f"'{after}'")
            word = _enum_word(token.value)
            if word not in spec.values:
                hint = _suggest(word, list(spec.values)) or (
                    f"; expected one of: {', '.join(spec.values)}")
                raise self.error(f"{token.shown} is not a {spec.name}{hint}", token)
            self.advance()
            return word
        kind = "a whole number" if spec.whole else "a number"
        if spec.kind is FieldKind.MONEY:
            kind += " (minor units)"
        if token.kind != "number":
            raise self.expected(f"{kind} after '{after}'")
        if spec.whole and "." in token.value:
            raise self.error(f"{spec.name} is {kind}, not '{token.value}'", token)
        number: int | float = int(token.value) if spec.whole else float(token.value)
        self.check_range(number, spec.name, spec.minimum, spec.maximum, token)
        self.advance()
        return number

    def check_range(self, number: float, name: str, minimum: float, maximum: float | None,
                    token: Token) -> None:
        if number < minimum or (maximum is not None and number > maximum):
            bounds = (f"from {_number_text(minimum)} to {_number_text(maximum)}"
                      if maximum is not None else f"at least {_number_text(minimum)}")
            raise self.error(f"{name} is {bounds}, not {token.value}", token)

    def membership(self, spec: FieldSpec) -> IsIn:
        token = self.advance()
        if not spec.allows_in:
            raise self.error(f"'in' takes a field of named values or whole numbers; "
                             f"{spec.name} is not one", token)
        self.expect_punct("[", f"'[' after '{spec.name} in'")
        values = [self.value(spec, "in [")]
        while self.peek().is_punct(","):
            self.advance()
            if len(values) >= MAX_LIST_VALUES:
                raise self.error(f"a list has at most {MAX_LIST_VALUES} values", self.peek())
            values.append(self.value(spec, ","))
        self.expect_punct("]", "',' or ']' in the list")
        return IsIn(spec.name, tuple(values))  # type: ignore[arg-type]

    def within(self, spec: FieldSpec) -> Within:
        token = self.advance()
        if spec.kind is not FieldKind.TIME:
            raise self.error(f"'within N days' applies to the time fields "
                             f"({', '.join(TIME_FIELDS)}), not to {spec.name}", token)
        number = self.peek()
        if number.kind != "number" or "." in number.value:
            raise self.expected(f"a whole number of days after '{spec.name} within'")
        self.check_range(int(number.value), "the number of days", 1, MAX_WITHIN_DAYS, number)
        self.advance()
        if not self.peek().is_word("days", "day"):
            raise self.expected(f"'days' after '{spec.name} within {number.value}'")
        self.advance()
        return Within(spec.name, int(number.value))

    def interest(self) -> Interest:
        self.pos += 2
        dimension = self.peek()
        if not dimension.is_word(*DIMENSIONS):
            raise self.expected("'category' or 'brand' after 'interest('")
        self.advance()
        key = self.name(f"the {dimension.value}'s name", f"interest({dimension.value}")
        self.expect_punct(")", f"')' after the {dimension.value}'s name")
        op = self.peek()
        if op.kind != "op":
            raise self.expected("=, !=, <, <=, > or >= after 'interest(...)'")
        self.advance()
        number = self.peek()
        if number.kind != "number":
            raise self.expected(f"a share from 0 to 1 after 'interest(...) {op.source}'")
        share = float(number.value)
        self.check_range(share, "an interest share", 0, 1, number)
        self.advance()
        return Interest(dimension.value, key, op.value, share)

    def name(self, what: str, after: str) -> str:
        token = self.peek()
        if token.kind not in ("string", "word") or token.is_word(*_KEYWORDS):
            raise self.expected(f"{what} after '{after}'")
        value = token.value.strip() if token.kind == "string" else token.source
        if not value or len(value) > MAX_NAME_LENGTH:
            raise self.error(f"{what} is 1-{MAX_NAME_LENGTH} characters", token)
        self.advance()
        return value


def parse_rule(text: Any) -> Rule:
    """The rule `text` states, or a SegmentRuleError saying what is wrong and where."""
    if not isinstance(text, str):
        raise SegmentRuleError("a rule is text", "", 0)
    if len(text) > MAX_RULE_LENGTH:
        raise SegmentRuleError(f"a rule has at most {MAX_RULE_LENGTH} characters", text,
                               MAX_RULE_LENGTH)
    return _Parser(text).rule()


# -- evaluation -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Reason:
    """One condition as it counted towards a verdict.

    `condition` is its canonical text; `value` is the fact's value (None: missing). Under
    `not`, `negated` is set and `held` says whether the negated condition held.
    """

    condition: str
    fact: str
    value: Any
    held: bool
    negated: bool = False

    @property
    def text(self) -> str:
        return f"not {self.condition}" if self.negated else self.condition

    def inverted(self) -> Reason:
        held = False if self.value is None else not self.held
        return Reason(self.condition, self.fact, self.value, held, not self.negated)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: times in ISO 8601, tuples as lists."""
        value = self.value
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, tuple):
            value = list(value)
        return {"condition": self.condition, "fact": self.fact, "value": value,
                "held": self.held, "negated": self.negated}


@dataclass(frozen=True)
class Verdict:
    matched: bool
    why: tuple[Reason, ...]


Truth = bool | None


def _all(truths: list[Truth]) -> Truth:
    return False if False in truths else (None if None in truths else True)


def _any(truths: list[Truth]) -> Truth:
    return True if True in truths else (None if None in truths else False)


def _evaluate(node: Node, facts: Facts, now: datetime) -> tuple[Truth, tuple[Reason, ...]]:
    if isinstance(node, Not):
        truth, reasons = _evaluate(node.operand, facts, now)
        return (None if truth is None else not truth), tuple(r.inverted() for r in reasons)
    if isinstance(node, And | Or):
        results = [_evaluate(operand, facts, now) for operand in node.operands]
        combine: Callable[[list[Truth]], Truth] = _all if isinstance(node, And) else _any
        truth = combine([t for t, _ in results])
        # The operands that agree with the outcome are the ones that decided it.
        return truth, tuple(r for t, reasons in results if t is truth for r in reasons)
    truth, value = node.check(facts, now)
    return truth, (Reason(node.text, node.fact, value, truth is True),)


def evaluate(rule: Rule, facts: Facts, now: datetime) -> Verdict:
    """Whether the member's facts satisfy the rule at `now`, and why (see the module doc)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    truth, why = _evaluate(rule.root, facts, now)
    return Verdict(truth is True, why)
