"""The filter language (query/filters.py) translated to Milvus boolean expressions.

The translation works on the parse tree, never on the user's text: field names come from the
tokenizer's validated identifiers, and every literal is rendered here (strings double-quoted
with every quote, backslash and control character escaped; numbers by `repr`). Milvus has no
case-insensitive substring test and compares JSON values by its own typing rules, so not every
predicate has an exact Milvus form. Each node therefore gets two expressions:

* `upper`: true for every image the filter admits (maybe for more), and
* `lower`: true only for images the filter admits (maybe for fewer),

with NOT swapping them. The backend sends `upper` to Milvus to narrow the search, then decides
with the Python evaluator (`filters.make_predicate`), which the property tests hold to the
embedded backend's SQL: the result is the embedded result, and the expression only has to be
a sound superset. Where a predicate cannot be bounded, `upper` is "everything".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lookalike.query.filters import (
    And,
    Field,
    MatchAll,
    Node,
    Not,
    Or,
    Predicate,
    make_predicate,
    parse_filter,
)

# Catalog columns as the Milvus backend stores them (scalar fields, never null).
INT_COLUMNS = frozenset({"id", "size", "width", "height"})
FLOAT_COLUMNS = frozenset({"mtime", "added_at", "updated_at"})
TEXT_COLUMNS = frozenset({"path", "sha256", "format"})
METADATA_FIELD = "metadata"  # JSON field: the user's metadata object
KEYWORDS_FIELD = "keywords_lc"  # ARRAY of VARCHAR: every keyword, ASCII-lower-cased

Expr = str | bool  # True: every image; False: none


@dataclass(frozen=True)
class MilvusFilter:
    """A translated filter: `expression` for Milvus ("" = no filter), whether it is exact, and
    the Python predicate that decides."""

    expression: str
    nothing: bool  # the filter admits no image at all: no need to ask Milvus
    exact: bool
    admits: Callable[[Mapping[str, Any]], bool]


def translate(text: str) -> MilvusFilter:
    """Filter text -> Milvus expression plus the exact predicate (QueryError on bad text)."""
    node = parse_filter(text)
    upper, lower = _bounds(node)
    return MilvusFilter(
        expression="" if upper is True else ("" if upper is False else upper),
        nothing=upper is False,
        exact=upper == lower,
        admits=make_predicate(text),
    )


# -- literals -----------------------------------------------------------------------------------


def quote(value: str) -> str:
    """A Milvus string literal: double quotes, backslash escapes, non-ASCII as \\u/\\U."""
    out = ['"']
    for ch in value:
        code = ord(ch)
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif 0x20 <= code < 0x7F:
            out.append(ch)
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def _number(value: int | float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return repr(int(value)) if isinstance(value, int) else repr(float(value))


def _lower_ascii(text: str) -> str:
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in text)


def _kind(value: Any) -> str:
    return "text" if isinstance(value, str) else "number"  # parser values: str, int, float, bool


# -- combining bounds ---------------------------------------------------------------------------


def _and(items: Sequence[Expr]) -> Expr:
    if any(item is False for item in items):
        return False
    rest = [item for item in items if item is not True]
    if not rest:
        return True
    return rest[0] if len(rest) == 1 else "(" + " and ".join(rest) + ")"  # type: ignore[arg-type]


def _or(items: Sequence[Expr]) -> Expr:
    if any(item is True for item in items):
        return True
    rest = [item for item in items if item is not False]
    if not rest:
        return False
    return rest[0] if len(rest) == 1 else "(" + " or ".join(rest) + ")"  # type: ignore[arg-type]


def _not(item: Expr) -> Expr:
    return (not item) if isinstance(item, bool) else f"(not ({item}))"


def _bounds(node: Node) -> tuple[Expr, Expr]:
    if isinstance(node, MatchAll):
        return True, True
    if isinstance(node, Not):
        upper, lower = _bounds(node.item)
        return _not(lower), _not(upper)
    if isinstance(node, And | Or):
        pairs = [_bounds(item) for item in node.items]
        join = _and if isinstance(node, And) else _or
        return join([p[0] for p in pairs]), join([p[1] for p in pairs])
    return _predicate(node)


# -- predicates ---------------------------------------------------------------------------------


def _predicate(p: Predicate) -> tuple[Expr, Expr]:
    if p.field.kind == "keywords":
        exact = f"array_contains({KEYWORDS_FIELD}, {quote(_lower_ascii(p.values[0]))})"
        return (_not(exact), _not(exact)) if p.negated else (exact, exact)
    if p.field.kind == "column":
        exact = _column(p)
        if exact is None:
            return True, False
        # Columns are never null, so a negated form is plain negation of the positive one.
        return (_not(exact), _not(exact)) if p.negated else (exact, exact)
    if p.negated or p.op in ("null", "contains"):
        return True, False  # JSON presence and typing: decided in Python
    upper = _json_upper(p)
    return upper, False


def _column(p: Predicate) -> Expr | None:
    """The exact expression of a positive predicate on a catalog column, or None."""
    name = p.field.name
    kind = "text" if name in TEXT_COLUMNS else "number"
    if p.op == "null":
        return False  # columns are never null
    if p.op == "contains":
        return None if kind == "text" else False  # case-insensitive substring: Python only
    if p.op == "in":
        values = [v for v in p.values if _kind(v) == kind]
        return _or([_compare(name, "=", v) for v in values])
    if p.op == "between":
        low, high = p.values
        if _kind(low) != kind or _kind(high) != kind:
            return False
        return _and([_compare(name, ">=", low), _compare(name, "<=", high)])
    value = p.values[0]
    if _kind(value) != kind:
        return False  # a number is never equal to, less or greater than a text
    return _compare(name, p.op, value)


def _compare(name: str, op: str, value: Any) -> Expr:
    """`name op value` on a typed column, with a float bound on an integer column rounded to
    the equivalent integer bound (Milvus wants literals of the field's type)."""
    if isinstance(value, str):
        return f"{name} {'==' if op == '=' else op} {quote(value)}"
    if name in FLOAT_COLUMNS:
        return f"{name} {'==' if op == '=' else op} {float(value)!r}"
    number = float(value)
    if isinstance(value, bool | int) or number.is_integer():
        bound = int(value)
        return f"{name} {'==' if op == '=' else op} {bound}"
    if op == "=":
        return False  # an integer column never equals 2.5
    if op in ("<", "<="):
        return f"{name} <= {math.floor(number)}"
    return f"{name} >= {math.ceil(number)}"


def _json_path(field: Field) -> str:
    return METADATA_FIELD + "".join(f"[{quote(s)}]" for s in field.segments)


def _json_upper(p: Predicate) -> Expr:
    """A superset of a positive comparison on a metadata value. Text compares exactly; our
    numbers include JSON true/false as 1/0, which Milvus does not, so the booleans that would
    pass are added explicitly."""
    path = _json_path(p.field)
    if p.op == "in":
        return _or([_json_compare(path, "=", v) for v in p.values])
    if p.op == "between":
        low, high = p.values
        if _kind(low) != _kind(high):
            return False
        return _and([_json_compare(path, ">=", low), _json_compare(path, "<=", high)])
    return _json_compare(path, p.op, p.values[0])


def _json_compare(path: str, op: str, value: Any) -> Expr:
    milvus_op = "==" if op == "=" else op
    if isinstance(value, str):
        return f"{path} {milvus_op} {quote(value)}"
    number = float(value)
    expr = f"{path} {milvus_op} {_number(value)}"
    passing = [
        flag for flag, as_number in ((True, 1.0), (False, 0.0)) if _holds(op, as_number, number)
    ]
    return _or([expr, *(f"{path} == {'true' if flag else 'false'}" for flag in passing)])


def _holds(op: str, a: float, b: float) -> bool:
    return {
        "=": a == b,
        "<": a < b,
        "<=": a <= b,
        ">": a > b,
        ">=": a >= b,
    }[op]
