"""The fuzzer the suite and the benchmark share: schema-aware requests, and how to judge them.

Requests come from two sources, both derived from the schema itself, so a new query or
mutation is fuzzed without anyone listing it:

- `generated`: hypothesis-graphql documents for every root query and mutation field under
  every role (anonymous, member, agent, admin, auditor): valid-shaped ones
  (`Mode.POSITIVE`, which still carries NUL and odd text) and ones with one schema
  violation (`Mode.NEGATIVE`). Generation is derandomized: the same documents every run.
- `corpus`: for every root field, a well-formed request with its arguments as variables,
  then one argument leaf (top level or inside an input, list items included) replaced with
  a malformed value of its kind: NUL and other control characters, a lone surrogate, text
  longer than the limit, numbers out of range or as text, dates in the year 0, 9999 or
  10000, times without a zone or with an offset that overflows, unknown enum values, ids of
  unknown types, lists and objects where a scalar belongs.

`judge` says what is wrong with an answer: any 5xx, any INTERNAL error, a body that is not
a GraphQL response, or events recorded by a request that returned errors (its caller reads
the event store's head before and after; requests must run one at a time for that).
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import graphql
from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLScalarType,
    GraphQLSchema,
)
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis_graphql import Mode, from_schema, nodes

from domain.metadata import Role

ROLES = (Role.ANONYMOUS, Role.MEMBER, Role.AGENT, Role.ADMIN, Role.AUDITOR)
UTC = dt.UTC
ZONES = [UTC, dt.timezone(dt.timedelta(hours=8)), dt.timezone(dt.timedelta(hours=-5))]


@dataclass(frozen=True)
class FuzzRequest:
    """One request: who sends it, the document, its variables, and what it is for."""

    role: Role
    query: str
    variables: dict[str, Any] | None
    label: str

    def body(self) -> bytes:
        # ASCII-escaped: a lone surrogate cannot be encoded as UTF-8, but JSON can spell it.
        return json.dumps({"query": self.query, "variables": self.variables or {}}).encode()


def custom_scalars() -> dict[str, st.SearchStrategy[graphql.ValueNode]]:
    """Values for the schema's own scalars, mostly valid, sometimes at the edges."""
    moments = st.datetimes(min_value=dt.datetime(1900, 1, 2), max_value=dt.datetime(2200, 12, 30),
                           timezones=st.sampled_from(ZONES))
    return {
        "Date": st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2200, 12, 31))
        .map(lambda d: nodes.String(d.isoformat())),
        "DateTime": moments.map(lambda m: nodes.String(m.isoformat())),
        "Long": st.integers(-(2**63), 2**63 - 1).map(nodes.Int),
        "EventPosition": st.integers(0, 2**40).map(nodes.Int),
        "JSON": st.just(nodes.String("{}")),
    }


def root_fields(schema: GraphQLSchema) -> list[tuple[str, str]]:
    """("query" | "mutation", field name) for every root field a client can POST."""
    fields: list[tuple[str, str]] = []
    for kind, root in (("query", schema.query_type), ("mutation", schema.mutation_type)):
        if root is not None:
            fields.extend((kind, name) for name in sorted(root.fields))
    return fields


def _examples(strategy: st.SearchStrategy[Any], count: int) -> list[Any]:
    """`count` examples (fewer if hypothesis finds fewer distinct ones), derandomized."""
    found: list[Any] = []

    @settings(max_examples=count, derandomize=True, database=None, deadline=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(example: Any) -> None:
        found.append(example)

    collect()
    return found


def generated(schema: GraphQLSchema, per_role: int = 1,
              fields: list[tuple[str, str]] | None = None) -> list[FuzzRequest]:
    """hypothesis-graphql documents for every root field under every role: valid-shaped
    for some roles and with one schema violation for the others, alternating by field."""
    requests: list[FuzzRequest] = []
    scalars = custom_scalars()
    for index, (_kind, name) in enumerate(fields or root_fields(schema)):
        # Valid-shaped documents without NUL, so that more of them reach the resolvers
        # (the corpus and the negative documents bring the control characters).
        strategies = {
            mode: from_schema(schema, fields=[name], custom_scalars=scalars, mode=mode,
                              allow_x00=mode is Mode.NEGATIVE)
            for mode in (Mode.POSITIVE, Mode.NEGATIVE)
        }
        wanted = {mode: 0 for mode in strategies}
        plan = []
        for offset, role in enumerate(ROLES):
            mode = Mode.NEGATIVE if (index + offset) % 3 == 0 else Mode.POSITIVE
            wanted[mode] += per_role
            plan.append((role, mode))
        documents: dict[Mode, list[Any]] = {}
        for mode, count in wanted.items():
            try:
                documents[mode] = _examples(strategies[mode], count) if count else []
            except InvalidArgument:
                # Nothing to violate (no arguments): valid-shaped documents only.
                documents[mode] = []
        if not documents[Mode.NEGATIVE]:
            documents[Mode.NEGATIVE] = documents[Mode.POSITIVE] or _examples(
                strategies[Mode.POSITIVE], wanted[Mode.NEGATIVE])
        for number, (role, mode) in enumerate(plan):
            pool = documents[mode]
            for turn in range(per_role):
                if pool:
                    query = pool[(number * per_role + turn) % len(pool)]
                    requests.append(FuzzRequest(role, str(query), None,
                                                f"{name}/{mode.name.lower()}"))
    return requests


# -- the corpus of malformed argument values ------------------------------------------------


def malformed_texts(max_length: int) -> list[Any]:
    return ["x\u0000y", "\u0000", "a\u0007b", "\r", "\u001b[31m", "\u007f", "\u0085",
            "\ud800", "x\udfffy", "y" * (max_length + 1), 12, 1.5, True, ["a"], {"a": "b"}]


MALFORMED_INTS = [2**31, -(2**31) - 1, 2**63, -(2**63) - 1, 10**40, "100", "", 1.5, True,
                  None, [1], {"n": 1}, "1e3"]
MALFORMED_LONGS = [2**63, -(2**63) - 1, 10**40, "100", 1.5, "9223372036854775807", True,
                   [1]]
MALFORMED_DATES = ["9999-12-31", "0001-01-01", "10000-01-01", "1899-12-31", "2201-01-01",
                   "2024-02-30", "2024-01-01\u0000", "", "today", 20240101, ["2024-01-01"]]
MALFORMED_MOMENTS = ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+14:00",
                     "2024-05-01T09:00:00", "2024-05-01", "2024-05-01T25:00:00Z",
                     "10000-01-01T00:00:00Z", "2024-05-01T09:00:00Z\u0000", 1714554000, ""]
MALFORMED_IDS = ["Tm9wZTox", "foo:bar", "", "\u0000", "TWVtYmVyOm5vdC1hLXV1aWQ=",
                 "T3JkZXI6MTIz", "=" * 50, "x" * 200, 7]
MALFORMED_ENUMS = ["NOPE", "", "\u0000", 1, ["A"]]
MALFORMED_BOOLS = ["true", 1, 0, None, "\u0000"]


def malformed_values(type_: GraphQLInputType, max_length: int) -> list[Any]:
    named = graphql.get_named_type(type_)
    if isinstance(named, GraphQLEnumType):
        return MALFORMED_ENUMS
    name = named.name if isinstance(named, GraphQLScalarType) else ""
    return {
        "Int": MALFORMED_INTS, "Float": MALFORMED_INTS, "Long": MALFORMED_LONGS,
        "EventPosition": MALFORMED_LONGS, "Date": MALFORMED_DATES,
        "DateTime": MALFORMED_MOMENTS, "ID": MALFORMED_IDS, "Boolean": MALFORMED_BOOLS,
    }.get(name, malformed_texts(max_length))


def sample_value(type_: GraphQLInputType, depth: int = 0) -> Any:
    """A plausible value of `type_`: required input fields and one list item."""
    if isinstance(type_, GraphQLNonNull):
        return sample_value(type_.of_type, depth)
    if isinstance(type_, GraphQLList):
        return [sample_value(type_.of_type, depth + 1)]
    if isinstance(type_, GraphQLInputObjectType):
        return {name: sample_value(f.type, depth + 1) for name, f in type_.fields.items()
                if depth < 4 and (graphql.is_non_null_type(f.type) or depth == 0)
                and f.default_value is graphql.Undefined}
    if isinstance(type_, GraphQLEnumType):
        return next(iter(type_.values))
    return {"Int": 1, "Float": 1.0, "Boolean": True, "Long": 100, "EventPosition": 1,
            "Date": "2024-05-01", "DateTime": "2024-05-01T09:00:00+08:00",
            "ID": "TWVtYmVyOjE=", "JSON": {}}.get(type_.name, "fuzz")


def _leaves(value: Any, type_: GraphQLInputType, path: list[Any]
            ) -> Iterator[tuple[list[Any], GraphQLInputType]]:
    """Every place in `value` a malformed leaf can go, with the leaf's type."""
    inner = type_.of_type if isinstance(type_, GraphQLNonNull) else type_
    if isinstance(inner, GraphQLList) and isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, inner.of_type, [*path, index])
    elif isinstance(inner, GraphQLInputObjectType) and isinstance(value, dict):
        for name, field_ in inner.fields.items():
            yield from _leaves(value.get(name), field_.type, [*path, name])
    else:
        yield path, type_


def _replaced(value: Any, path: list[Any], leaf: Any) -> Any:
    if not path:
        return leaf
    head, *rest = path
    if isinstance(value, list):
        copy = list(value)
        copy[head] = _replaced(copy[head], rest, leaf)
        return copy
    copy_ = dict(value or {})
    copy_[head] = _replaced(copy_.get(head), rest, leaf)
    return copy_


def _selection(type_: graphql.GraphQLOutputType, depth: int = 0) -> str:
    """A small selection: the scalar fields of the result (and of `userErrors`)."""
    named = graphql.get_named_type(type_)
    if not isinstance(named, graphql.GraphQLObjectType | graphql.GraphQLInterfaceType):
        return ""
    picked = [name for name, f in named.fields.items()
              if not f.args and graphql.is_leaf_type(graphql.get_named_type(f.type))][:4]
    if "userErrors" in named.fields and depth == 0:
        picked.append("userErrors { field code }")
    return "{ " + " ".join(picked or ["__typename"]) + " }"


def corpus(schema: GraphQLSchema, max_length: int, limit: int | None = None,
           seed: int = 14) -> list[FuzzRequest]:
    """Malformed argument values for every root field, as variables; `limit` picks a
    seeded sample (every root field still appears when the limit allows)."""
    by_field: list[list[FuzzRequest]] = []
    for index, (kind, name) in enumerate(root_fields(schema)):
        root = schema.query_type if kind == "query" else schema.mutation_type
        assert root is not None
        field_ = root.fields[name]
        if not field_.args:
            continue
        definitions = ", ".join(f"${arg}: {a.type}" for arg, a in field_.args.items())
        uses = ", ".join(f"{arg}: ${arg}" for arg in field_.args)
        query = f"{kind} F({definitions}) {{ {name}({uses}) {_selection(field_.type)} }}"
        base = {arg: sample_value(a.type) for arg, a in field_.args.items()}
        requests = []
        for arg, argument in field_.args.items():
            for path, leaf_type in _leaves(base[arg], argument.type, [arg]):
                for value in malformed_values(leaf_type, max_length):
                    variables = _replaced(base, path, value)
                    role = ROLES[(index + len(requests)) % len(ROLES)]
                    requests.append(FuzzRequest(role, query, variables,
                                                f"{name}:{'.'.join(map(str, path))}"))
        by_field.append(requests)
    if limit is None:
        return [request for requests in by_field for request in requests]
    rng = random.Random(seed)
    chosen: list[FuzzRequest] = []
    rounds = 0
    while len(chosen) < limit and any(by_field):
        for requests in by_field:
            if requests and len(chosen) < limit:
                chosen.append(requests.pop(rng.randrange(len(requests))))
        rounds += 1
    return chosen


# -- judging --------------------------------------------------------------------------------


def returned_errors(body: Any) -> bool:
    """Whether the request as a whole was refused or failed: errors before execution, no
    data, every root field null, or every root field answered with userErrors."""
    if not isinstance(body, dict):
        return True
    errors = body.get("errors") or []
    data = body.get("data")
    if errors and (data is None or any(not e.get("path") for e in errors)):
        return True
    if errors and isinstance(data, dict) and all(v is None for v in data.values()):
        return True
    return (isinstance(data, dict) and bool(data)
            and all(isinstance(v, dict) and v.get("userErrors") for v in data.values()))


def judge(request: FuzzRequest, status: int, text: str, before: int, after: int) -> list[str]:
    """What is wrong with this answer (empty: nothing)."""
    problems: list[str] = []
    if status >= 500:
        problems.append(f"HTTP {status}")
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if status == 200 and not (isinstance(body, dict) and ("data" in body or "errors" in body)):
        problems.append("200 without a GraphQL response body")
    errors = body.get("errors") or [] if isinstance(body, dict) else []
    for error in errors:
        if not isinstance(error, dict):
            continue
        code = (error.get("extensions") or {}).get("code")
        if code == "INTERNAL":
            problems.append(f"INTERNAL at {error.get('path')}")
        elif status == 200 and not code:
            problems.append(f"untyped error: {error.get('message', '')[:120]}")
    if after != before and returned_errors(body):
        problems.append(f"recorded events {before}..{after} although it returned errors")
    return problems


@dataclass
class Tally:
    """What a fuzz run saw: requests, statuses, error codes, and every problem."""

    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    codes: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    writes_from_rejected: int = 0
    answered_without_errors: int = 0
    server_errors: int = 0
    internal_errors: int = 0

    def add(self, request: FuzzRequest, status: int, text: str, before: int,
            after: int) -> list[str]:
        self.requests += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        self.answered_without_errors += isinstance(body, dict) and not body.get("errors")
        for error in (body.get("errors") or []) if isinstance(body, dict) else []:
            code = str(((error or {}).get("extensions") or {}).get("code"))
            self.codes[code] = self.codes.get(code, 0) + 1
        problems = judge(request, status, text, before, after)
        self.server_errors += status >= 500
        self.internal_errors += any(p.startswith("INTERNAL") for p in problems)
        self.writes_from_rejected += any(p.startswith("recorded") for p in problems)
        self.problems.extend(f"{request.label} as {request.role.value}: {p} | "
                             f"{request.query[:300]!r} {json.dumps(request.variables)[:300]}"
                             for p in problems)
        return problems


TokenFor = Callable[[Role], str | None]
