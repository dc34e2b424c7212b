"""A small filter language over image metadata, compiled to parameterised SQL.

    width >= 1024 AND format IN ('JPEG', 'PNG')
    NOT (camera.make = "Canon" OR rating < 3) AND keywords CONTAINS 'beach'
    taken BETWEEN '2020-01-01' AND '2020-12-31' AND title IS NOT NULL

Grammar (keywords are case-insensitive)::

    filter     := [or_expr] EOF              -- empty text matches every image
    or_expr    := and_expr ("OR" and_expr)*
    and_expr   := not_expr ("AND" not_expr)*
    not_expr   := "NOT" not_expr | primary
    primary    := "(" or_expr ")" | predicate
    predicate  := field compare value | value compare field
                | field ["NOT"] "BETWEEN" value "AND" value
                | field ["NOT"] "IN" "(" value ("," value)* ")"
                | field ["NOT"] "CONTAINS" value
                | field "IS" ["NOT"] "NULL"
    compare    := "=" | "==" | "!=" | "<>" | "<" | "<=" | ">" | ">="
    value      := string | ["-" | "+"] number | "TRUE" | "FALSE"
    field      := name ("." name)*          -- name: [A-Za-z_][A-Za-z0-9_]*
    string     := '...' | "..."             -- a doubled quote or \\' \\" \\\\ escape; other
                                             -- backslashes are kept as they are

Fields. id, path, size, mtime, sha256, width, height, format, added_at and updated_at are
columns of the catalog. ``keywords`` is the image's keywords: the keywords table and a list
field "keywords" in its metadata; it only supports CONTAINS. Any other name is a path into the
metadata JSON object (``camera.make`` is ``$.camera.make``); ``metadata.<path>`` reaches a key
that a column name hides. Names are validated by the tokenizer and the JSON path is passed as
a parameter, like every value: no text of the filter is ever pasted into SQL.

Semantics, two-valued (every predicate is true or false, never unknown):

* Values have kinds: number (JSON true/false are the numbers 1 and 0, as in SQLite), text,
  and other (JSON lists and objects). A comparison is true only between values of the same
  kind, numbers numerically, text by code point (case-sensitive): ``year = 2020`` is false
  for the text "2020".
* A field that is missing or JSON null makes every predicate on it false, except IS NULL.
* The negated forms !=, <>, NOT IN, NOT BETWEEN, NOT CONTAINS are true exactly when the field
  is present and the positive form is false (so a number is != any text). The NOT prefix is
  plain negation: ``NOT title = 'x'`` is true for images without a title, ``title != 'x'`` is
  not.
* CONTAINS: on text, a case-insensitive substring test; on a list, membership (text elements
  compared case-insensitively, numbers numerically); anything else is false. Case folding is
  ASCII-only, as SQLite's lower() does without ICU. ``keywords CONTAINS 'x'`` is a
  case-insensitive exact keyword match.

`compile_filter` gives the SQL; `evaluate_filter` evaluates the same language over a plain
record in Python, with exactly the same semantics (the tests check that they agree).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lookalike.errors import QueryError

COLUMNS: dict[str, str] = {
    "id": "number",
    "path": "text",
    "size": "number",
    "mtime": "number",
    "sha256": "text",
    "width": "number",
    "height": "number",
    "format": "text",
    "added_at": "number",
    "updated_at": "number",
}
KEYWORDS_FIELD = "keywords"
_KEYWORDS = frozenset(
    {"and", "or", "not", "between", "in", "contains", "is", "null", "true", "false"}
)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_NUMBER = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_OPERATORS = ("==", "!=", "<>", "<=", ">=", "=", "<", ">")
_MAX_DEPTH = 64
_INT64 = 2**63 - 1


# -- tokens -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    kind: str  # name, keyword, string, number, op, sign, "(", ")", ",", end
    value: Any
    position: int
    text: str


def _describe(token: Token) -> str:
    if token.kind == "end":
        return "the end of the filter"
    return repr(token.text)


def tokenize(text: str) -> list[Token]:
    """Split filter text into tokens; QueryError at the first character that fits nothing."""
    tokens: list[Token] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if ch in "'\"":
            value, end = _read_string(text, i)
            tokens.append(Token("string", value, i, text[i:end]))
            i = end
            continue
        if ch in "(),":
            tokens.append(Token(ch, ch, i, ch))
            i += 1
            continue
        if ch in "+-":
            tokens.append(Token("sign", ch, i, ch))
            i += 1
            continue
        operator = next((op for op in _OPERATORS if text.startswith(op, i)), None)
        if operator is not None:
            tokens.append(Token("op", operator, i, operator))
            i += len(operator)
            continue
        match = _NUMBER.match(text, i)
        if match:
            end = match.end()
            if end < len(text) and (text[end].isalnum() or text[end] in "_."):
                raise QueryError(f"malformed number {text[i : end + 1]!r}", i)
            tokens.append(Token("number", _number(match.group(0), i), i, match.group(0)))
            i = end
            continue
        match = _NAME.match(text, i)
        if match:
            end = match.end()
            if end < len(text) and (text[end] == "." or text[end].isalnum()):
                raise QueryError(f"malformed field name {text[i : end + 1]!r}", i)
            word = match.group(0)
            kind = "keyword" if word.lower() in _KEYWORDS else "name"
            tokens.append(Token(kind, word.lower() if kind == "keyword" else word, i, word))
            i = end
            continue
        raise QueryError(f"unexpected character {ch!r}", i)
    tokens.append(Token("end", None, len(text), ""))
    return tokens


def _read_string(text: str, start: int) -> tuple[str, int]:
    quote = text[start]
    out: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == quote:
            if i + 1 < len(text) and text[i + 1] == quote:
                out.append(quote)
                i += 2
                continue
            return "".join(out), i + 1
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in ("'", '"', "\\"):
            out.append(text[i + 1])
            i += 2
            continue
        out.append(ch)
        i += 1
    raise QueryError(f"unterminated string: no closing {quote} for this one", start)


def _number(text: str, position: int) -> int | float:
    if re.fullmatch(r"\d+", text):
        value = int(text)
        if value > _INT64:
            raise QueryError(f"number {text} is out of range", position)
        return value
    number = float(text)
    if not math.isfinite(number):
        raise QueryError(f"number {text} is out of range", position)
    return number


# -- syntax tree --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """A validated field: a catalog column, the keywords, or a path into the metadata JSON."""

    kind: str  # column, keywords, json
    name: str  # column name, or the JSON path segments joined by "."
    position: int

    @property
    def json_path(self) -> str:
        # Segments match [A-Za-z_][A-Za-z0-9_]*, valid unquoted in a SQLite JSON path.
        return "$." + self.name

    @property
    def segments(self) -> list[str]:
        return self.name.split(".")


@dataclass(frozen=True)
class Predicate:
    field: Field
    op: str  # =, <, <=, >, >=, between, in, contains, null
    values: tuple[Any, ...]
    negated: bool  # !=, NOT IN, NOT BETWEEN, NOT CONTAINS, IS NOT NULL


@dataclass(frozen=True)
class Not:
    item: Node


@dataclass(frozen=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class MatchAll:
    """The empty filter."""


Node = Predicate | Not | And | Or | MatchAll

_FLIPPED = {"=": "=", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


def _make_field(token: Token) -> Field:
    name = token.value
    if name == KEYWORDS_FIELD:
        return Field("keywords", name, token.position)
    if name in COLUMNS:
        return Field("column", name, token.position)
    if name.startswith("metadata."):
        return Field("json", name[len("metadata.") :], token.position)
    if name == "metadata":
        raise QueryError("name a field inside metadata, e.g. metadata.title", token.position)
    return Field("json", name, token.position)


class _Parser:
    def __init__(self, text: str):
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0

    @property
    def current(self) -> Token:
        return self.tokens[self.i]

    def advance(self) -> Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def at_keyword(self, *words: str) -> bool:
        return self.current.kind == "keyword" and self.current.value in words

    def expect_keyword(self, word: str, context: str) -> Token:
        if not self.at_keyword(word):
            self.fail(f"expected {word.upper()} {context}")
        return self.advance()

    def expect(self, kind: str, what: str) -> Token:
        if self.current.kind != kind:
            self.fail(f"expected {what}")
        return self.advance()

    def fail(self, expected: str) -> None:
        token = self.current
        raise QueryError(f"{expected}, found {_describe(token)}", token.position)

    def parse(self) -> Node:
        if self.current.kind == "end":
            return MatchAll()
        node = self.or_expr()
        if self.current.kind != "end":
            self.fail("expected AND, OR or the end of the filter")
        return node

    def or_expr(self) -> Node:
        items = [self.and_expr()]
        while self.at_keyword("or"):
            self.advance()
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_expr(self) -> Node:
        items = [self.not_expr()]
        while self.at_keyword("and"):
            self.advance()
            items.append(self.not_expr())
        return items[0] if len(items) == 1 else And(tuple(items))

    def not_expr(self) -> Node:
        if self.at_keyword("not"):
            self.advance()
            return Not(self.nested(self.not_expr))
        return self.primary()

    def nested(self, parse: Callable[[], Node]) -> Node:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise QueryError(
                f"filter nested deeper than {_MAX_DEPTH} levels", self.current.position
            )
        try:
            return parse()
        finally:
            self.depth -= 1

    def primary(self) -> Node:
        if self.current.kind == "(":
            self.advance()
            node = self.nested(self.or_expr)
            self.expect(")", "')' to close the parenthesis")
            return node
        if self.current.kind == "name":
            return self.predicate(_make_field(self.advance()))
        if self.current.kind in ("string", "number", "sign") or self.at_keyword("true", "false"):
            value_token = self.current
            value = self.value()
            if self.current.kind != "op":
                self.fail("expected a comparison operator after the value")
            op = _canonical(self.advance().value)
            if self.current.kind != "name":
                self.fail(f"expected a field name to compare {value_token.text} with")
            field = _make_field(self.advance())
            return self.comparison(field, _FLIPPED[op], value)
        self.fail("expected a field name, NOT or '('")
        raise AssertionError  # pragma: no cover

    def predicate(self, field: Field) -> Node:
        if self.current.kind == "op":
            op = _canonical(self.advance().value)
            return self.comparison(field, op, self.value())
        if self.at_keyword("is"):
            self.advance()
            negated = self.at_keyword("not")
            if negated:
                self.advance()
            self.expect_keyword("null", "after IS")
            return self.checked(Predicate(field, "null", (), negated))
        negated = self.at_keyword("not")
        if negated:
            self.advance()
            if not self.at_keyword("between", "in", "contains"):
                self.fail("expected BETWEEN, IN or CONTAINS after NOT")
        if self.at_keyword("between"):
            self.advance()
            low = self.value()
            self.expect_keyword("and", "between the two bounds of BETWEEN")
            high = self.value()
            return self.checked(Predicate(field, "between", (low, high), negated))
        if self.at_keyword("in"):
            self.advance()
            self.expect("(", "'(' to open the IN list")
            values = [self.value()]
            while self.current.kind == ",":
                self.advance()
                values.append(self.value())
            self.expect(")", "',' or ')' in the IN list")
            return self.checked(Predicate(field, "in", tuple(values), negated))
        if self.at_keyword("contains"):
            self.advance()
            return self.checked(Predicate(field, "contains", (self.value(),), negated))
        self.fail(f"expected a comparison, BETWEEN, IN, CONTAINS or IS after {field.name!r}")
        raise AssertionError  # pragma: no cover

    def comparison(self, field: Field, op: str, value: Any) -> Node:
        negated = op == "!="
        return self.checked(Predicate(field, "=" if negated else op, (value,), negated))

    def checked(self, predicate: Predicate) -> Predicate:
        if predicate.field.kind == "keywords":
            if predicate.op != "contains":
                raise QueryError(
                    "keywords supports only CONTAINS (e.g. keywords CONTAINS 'beach'); "
                    "use metadata.keywords for the metadata field itself",
                    predicate.field.position,
                )
            if not isinstance(predicate.values[0], str):
                raise QueryError("keywords CONTAINS needs a text value", predicate.field.position)
        return predicate

    def value(self) -> Any:
        token = self.current
        if token.kind == "string":
            self.advance()
            return token.value
        if token.kind == "sign":
            self.advance()
            number = self.expect("number", f"a number after {token.text!r}")
            return -number.value if token.value == "-" else number.value
        if token.kind == "number":
            self.advance()
            return token.value
        if self.at_keyword("true", "false"):
            self.advance()
            return token.value == "true"
        if self.at_keyword("null"):
            raise QueryError("NULL is not a value here: use IS NULL or IS NOT NULL", token.position)
        self.fail("expected a value (a quoted string, a number, TRUE or FALSE)")
        raise AssertionError  # pragma: no cover


def _canonical(op: str) -> str:
    return {"==": "=", "<>": "!="}.get(op, op)


def parse_filter(text: str) -> Node:
    """Parse filter text into its syntax tree (QueryError with a position if it is not valid)."""
    return _Parser(text).parse()


# -- SQL ----------------------------------------------------------------------------------------

_NUMERIC_JSON = "('integer', 'real', 'true', 'false')"


def _kind(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool | int | float):
        return "number"
    if isinstance(value, str):
        return "text"
    return "other"


@dataclass
class _Sql:
    """A piece of SQL and its parameters, in placeholder order."""

    text: str
    params: list[Any]

    def __add__(self, other: _Sql) -> _Sql:
        return _Sql(self.text + other.text, self.params + other.params)


def _s(text: str, *params: Any) -> _Sql:
    return _Sql(text, list(params))


def _join(pieces: list[_Sql], separator: str) -> _Sql:
    out = _s("(")
    for n, piece in enumerate(pieces):
        out = out + (_s(separator) if n else _s("")) + piece
    return out + _s(")")


def _param(value: Any) -> Any:
    return int(value) if isinstance(value, bool) else value


class _FieldSql:
    """SQL for reading one field: its value, kind tests, presence and list elements."""

    def __init__(self, field: Field, table: str):
        self.field = field
        if field.kind == "column":
            column = f"{table}.{field.name}"
            self.value = _s(column)
            self.is_number = _s(f"typeof({column}) IN ('integer', 'real')")
            self.is_text = _s(f"typeof({column}) = 'text'")
            self.present = _s(f"({column} IS NOT NULL)")
            self.is_list = _s("0")
            self.elements: _Sql | None = None
        else:
            metadata = f"{table}.metadata"
            path = field.json_path
            self.value = _s(f"json_extract({metadata}, ?)", path)
            self.is_number = _s(f"json_type({metadata}, ?) IN {_NUMERIC_JSON}", path)
            self.is_text = _s(f"json_type({metadata}, ?) = 'text'", path)
            self.present = _s(f"(COALESCE(json_type({metadata}, ?), 'null') != 'null')", path)
            self.is_list = _s(f"json_type({metadata}, ?) = 'array'", path)
            self.elements = _s(f"json_each({metadata}, ?)", path)

    def kind_test(self, kind: str | None) -> _Sql:
        return self.is_number if kind == "number" else self.is_text


def _list_has(elements: _Sql, value: Any) -> _Sql:
    """EXISTS over JSON list elements equal to value (text case-insensitively)."""
    sub = _s("EXISTS (SELECT 1 FROM ") + elements + _s(" AS _lk_each WHERE ")
    if isinstance(value, str):
        return sub + _s("_lk_each.type = 'text' AND lower(_lk_each.value) = lower(?))", value)
    cond = f"_lk_each.type IN {_NUMERIC_JSON} AND _lk_each.value = ?)"
    return sub + _s(cond, _param(value))


def _positive_sql(predicate: Predicate, f: _FieldSql, table: str) -> _Sql:
    op, values = predicate.op, predicate.values
    if op == "null":
        return _s("NOT ") + f.present
    if op in ("=", "<", "<=", ">", ">="):
        kind = _kind(values[0])
        return _s("(") + f.kind_test(kind) + _s(" AND ") + f.value + _s(f" {op} ?)", values[0])
    if op == "between":
        low, high = values
        if _kind(low) != _kind(high):
            return _s("0")
        test = f.kind_test(_kind(low))
        return _s("(") + test + _s(" AND ") + f.value + _s(" BETWEEN ? AND ?)", low, high)
    if op == "in":
        pieces = []
        for kind in ("number", "text"):
            same = [_param(v) for v in values if _kind(v) == kind]
            if same:
                marks = ", ".join("?" * len(same))
                pieces.append(
                    _s("(") + f.kind_test(kind) + _s(" AND ") + f.value + _s(f" IN ({marks}))")
                )
                pieces[-1].params.extend(same)
        return _join(pieces, " OR ") if pieces else _s("0")
    if op == "contains":
        value = values[0]
        if f.field.kind == "keywords":
            table_has = _s(
                "EXISTS (SELECT 1 FROM keywords AS _lk_kw WHERE _lk_kw.image_id = "
                f"{table}.id AND lower(_lk_kw.keyword) = lower(?))",
                value,
            )
            metadata = f"{table}.metadata"
            listed = _s(f"(json_type({metadata}, ?) = 'array' AND ", "$.keywords")
            listed = listed + _list_has(_s(f"json_each({metadata}, ?)", "$.keywords"), value)
            return _join([table_has, listed + _s(")")], " OR ")
        pieces = []
        if isinstance(value, str):
            pieces.append(
                _s("(")
                + f.is_text
                + _s(" AND instr(lower(")
                + f.value
                + _s("), lower(?)) > 0)", value)
            )
        if f.elements is not None:
            pieces.append(
                _s("(") + f.is_list + _s(" AND ") + _list_has(f.elements, value) + _s(")")
            )
        return _join(pieces, " OR ") if pieces else _s("0")
    raise AssertionError(f"unknown operator {op}")  # pragma: no cover


def _node_sql(node: Node, table: str) -> _Sql:
    if isinstance(node, MatchAll):
        return _s("1")
    if isinstance(node, Not):
        return _s("(NOT ") + _node_sql(node.item, table) + _s(")")
    if isinstance(node, And | Or):
        separator = " AND " if isinstance(node, And) else " OR "
        return _join([_node_sql(item, table) for item in node.items], separator)
    f = _FieldSql(node.field, table)
    # COALESCE turns SQL's unknown (NULL) into false: the language is two-valued.
    positive = _s("COALESCE(") + _positive_sql(node, f, table) + _s(", 0)")
    if not node.negated:
        return positive
    present = _s("1") if node.field.kind == "keywords" else f.present
    return _s("(") + present + _s(" AND NOT ") + positive + _s(")")


# -- SQL over the metadata index ---------------------------------------------------------------
#
# A filter is compiled to one SELECT of image ids: AND, OR and NOT become INTERSECT, UNION and
# EXCEPT, and each predicate on metadata or keywords reads the `meta_values` and
# `keywords_folded` indexes (schema migration 5) instead of parsing every image's JSON. The
# few 'odd' images, whose metadata the index does not hold, are tested with the JSON SQL above.

_ALL_IDS = "SELECT id FROM images"
_ODD_IDS = (
    "SELECT image_id FROM meta_values WHERE key = '' AND element = 0 AND kind = 'odd'"
    " AND value = ''"
)
_KIND = {"number": "n", "text": "t"}


def _values(field: Field, element: int, condition: str, *params: Any) -> _Sql:
    sql = f"SELECT image_id FROM meta_values WHERE key = ? AND element = {element}"
    return _s(sql + (f" AND {condition}" if condition else ""), field.name, *params)


def _compound(pieces: list[_Sql], operator: str) -> _Sql:
    if len(pieces) == 1:
        return pieces[0]
    out = _s("")
    for n, piece in enumerate(pieces):
        out = out + _s(f" {operator} " if n else "") + _s("SELECT * FROM (") + piece + _s(")")
    return out


def _indexed_positive(predicate: Predicate) -> _Sql | None:
    """Ids of indexed images for which the predicate's positive form holds (None: none)."""
    field, op, values = predicate.field, predicate.op, predicate.values
    if op in ("=", "<", "<=", ">", ">="):
        kind = _KIND.get(_kind(values[0]) or "")
        return _values(field, 0, f"kind = '{kind}' AND value {op} ?", _param(values[0]))
    if op == "between":
        low, high = values
        if _kind(low) != _kind(high):
            return None
        kind = _KIND[_kind(low) or ""]
        condition = f"kind = '{kind}' AND value BETWEEN ? AND ?"
        return _values(field, 0, condition, _param(low), _param(high))
    if op == "in":
        pieces = []
        for kind, code in _KIND.items():
            same = [_param(v) for v in values if _kind(v) == kind]
            if same:
                marks = ", ".join("?" * len(same))
                pieces.append(_values(field, 0, f"kind = '{code}' AND value IN ({marks})", *same))
        return _compound(pieces, "UNION") if pieces else None
    if op == "contains":
        value = values[0]
        if isinstance(value, str):
            listed = _values(field, 1, "kind = 't' AND value = lower(?)", value)
        else:
            listed = _values(field, 1, "kind = 'n' AND value = ?", _param(value))
        if field.kind == "keywords":
            table = _s("SELECT image_id FROM keywords WHERE lower(keyword) = lower(?)", value)
            return _compound([table, listed], "UNION")
        if not isinstance(value, str):
            return listed
        text = _values(field, 0, "kind = 't' AND instr(lower(value), lower(?)) > 0", value)
        return _compound([text, listed], "UNION")
    raise AssertionError(f"unknown operator {op}")  # pragma: no cover


def _predicate_ids(predicate: Predicate) -> _Sql:
    if predicate.field.kind == "column":
        return _s("SELECT images.id FROM images WHERE ") + _node_sql(predicate, "images")
    present = _values(predicate.field, 0, "")
    if predicate.op == "null":
        indexed = _compound([_s(_ALL_IDS), _s(_ODD_IDS), present], "EXCEPT")
        if predicate.negated:
            indexed = present
    else:
        positive = _indexed_positive(predicate)
        if predicate.negated:
            if predicate.field.kind == "keywords":
                present = _s(_ALL_IDS)
            indexed = present if positive is None else _compound([present, positive], "EXCEPT")
        else:
            indexed = positive or _s("SELECT 0 WHERE 0")
    # Keyword-table matches above cover odd images too; the JSON SQL adds nothing wrong for them.
    odd = _s(f"SELECT images.id FROM images WHERE images.id IN ({_ODD_IDS}) AND ")
    return _compound([indexed, odd + _node_sql(predicate, "images")], "UNION")


def _node_ids(node: Node) -> _Sql:
    if isinstance(node, MatchAll):
        return _s(_ALL_IDS)
    if isinstance(node, Not):
        return _compound([_s(_ALL_IDS), _node_ids(node.item)], "EXCEPT")
    if isinstance(node, Or):
        return _compound([_node_ids(item) for item in node.items], "UNION")
    if isinstance(node, And):  # a AND NOT b is a EXCEPT b: no set of every image
        kept = [_node_ids(item) for item in node.items if not isinstance(item, Not)]
        dropped = [_node_ids(item.item) for item in node.items if isinstance(item, Not)]
        kept = [_compound(kept, "INTERSECT")] if kept else [_s(_ALL_IDS)]
        return _compound(kept + dropped, "EXCEPT")
    return _predicate_ids(node)


def compile_filter_ids(text: str) -> tuple[str, list[Any]]:
    """Filter text -> (a SELECT of the ids of the images it admits, its ? parameters).

    Answered from the catalog's metadata index: the cost follows the matching rows, not the
    size of the collection (a catalog of schema version 5 or later)."""
    sql = _node_ids(parse_filter(text))
    return sql.text, [_param(p) for p in sql.params]


def compile_filter(text: str, table: str = "images") -> tuple[str, list[Any]]:
    """Filter text -> (SQL boolean expression over `table`, its ? parameters).

    `table` is the name or alias of the images table in the caller's query; it must be a plain
    identifier. The expression is never NULL, so it can be negated or combined safely. It tests
    membership in `compile_filter_ids`'s set, so it reads the metadata index too.
    """
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", table):
        raise ValueError(f"table alias must be a plain identifier, got {table!r}")
    node = parse_filter(text)
    if isinstance(node, MatchAll):
        return "1", []
    sql = _s(f"{table}.id IN (") + _node_ids(node) + _s(")")
    return sql.text, [_param(p) for p in sql.params]


# -- Python evaluation --------------------------------------------------------------------------

_MISSING = object()
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _lower(text: str) -> str:
    return text.translate(_ASCII_LOWER)


def _lookup(record: Mapping[str, Any], field: Field) -> Any:
    if field.kind == "column":
        return record.get(field.name)
    metadata = record.get("metadata") or {}
    if isinstance(metadata, str):
        metadata = json.loads(metadata)
    value: Any = metadata
    for segment in field.segments:
        if not isinstance(value, dict) or segment not in value:
            return None
        value = value[segment]
    return value


def _equal(a: Any, b: Any) -> bool:
    kind = _kind(a)
    return kind in ("number", "text") and kind == _kind(b) and a == b


def _compare(op: str, a: Any, b: Any) -> bool:
    kind = _kind(a)
    if kind not in ("number", "text") or kind != _kind(b):
        return False
    if op == "=":
        return a == b
    if op == "<":
        return a < b
    if op == "<=":
        return a <= b
    if op == ">":
        return a > b
    return a >= b


def _list_contains(items: list[Any], value: Any) -> bool:
    if isinstance(value, str):
        wanted = _lower(value)
        return any(isinstance(item, str) and _lower(item) == wanted for item in items)
    return any(_kind(item) == "number" and item == value for item in items)


def _positive(predicate: Predicate, record: Mapping[str, Any]) -> bool:
    field, op, values = predicate.field, predicate.op, predicate.values
    if field.kind == "keywords":
        wanted = _lower(values[0])
        if any(_lower(str(k)) == wanted for k in record.get("keywords") or ()):
            return True
        listed = _lookup(record, Field("json", KEYWORDS_FIELD, field.position))
        return isinstance(listed, list) and _list_contains(listed, values[0])
    value = _lookup(record, field)
    if op == "null":
        return value is None
    if op in ("=", "<", "<=", ">", ">="):
        return _compare(op, value, values[0])
    if op == "between":
        low, high = values
        return _compare(">=", value, low) and _compare("<=", value, high)
    if op == "in":
        return any(_equal(value, v) for v in values)
    if op == "contains":
        if isinstance(value, str):
            return isinstance(values[0], str) and _lower(values[0]) in _lower(value)
        if isinstance(value, list) and field.kind == "json":
            return _list_contains(value, values[0])
        return False
    raise AssertionError(f"unknown operator {op}")  # pragma: no cover


def _evaluate(node: Node, record: Mapping[str, Any]) -> bool:
    if isinstance(node, MatchAll):
        return True
    if isinstance(node, Not):
        return not _evaluate(node.item, record)
    if isinstance(node, And):
        return all(_evaluate(item, record) for item in node.items)
    if isinstance(node, Or):
        return any(_evaluate(item, record) for item in node.items)
    positive = _positive(node, record)
    if not node.negated:
        return positive
    present = node.field.kind == "keywords" or _lookup(record, node.field) is not None
    return present and not positive


def evaluate_filter(text: str, record: Mapping[str, Any]) -> bool:
    """Evaluate filter text over one record, in Python, with the semantics of the SQL.

    `record` holds the catalog columns by name, "metadata" (a dict or its JSON text) and
    "keywords" (the keyword strings of the keywords table).
    """
    return _evaluate(parse_filter(text), record)


def make_predicate(text: str) -> Callable[[Mapping[str, Any]], bool]:
    """Parse once, evaluate many records (for filtering outside SQL)."""
    node = parse_filter(text)
    return lambda record: _evaluate(node, record)


__all__ = [
    "COLUMNS",
    "KEYWORDS_FIELD",
    "And",
    "Field",
    "MatchAll",
    "Node",
    "Not",
    "Or",
    "Predicate",
    "Token",
    "compile_filter",
    "compile_filter_ids",
    "evaluate_filter",
    "make_predicate",
    "parse_filter",
    "tokenize",
]
