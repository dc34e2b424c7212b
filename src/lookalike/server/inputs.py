"""Checks on what a client sends, before any of it reaches the engine.

Every check answers with `InputError` (a 400 with a reason) instead of letting odd input travel
on and fail deep inside as a 500: JSON nested past a depth (Python's parser and encoder recurse),
numbers that are not finite, strings that are not valid Unicode (a lone surrogate cannot be
encoded for SQLite), file names with separators or control characters, filters that are too
long, have too many terms or name server paths. The limits come from the server's settings, so
the cost of a request is bounded by configuration, not by the client.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from typing import Any

MAX_ID = 2**63 - 1  # SQLite's INTEGER: a larger id cannot name any image
MIN_ID = -(2**63)
MAX_FEEDBACK_IDS = 100  # ids per `more` / `less` list: each one is a stored vector to read


class InputError(ValueError):
    """A client's input that cannot be used: `field` says which, the message why."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def check_text(value: str | None, field: str, max_chars: int) -> str | None:
    """Stripped text, None when empty; refused when too long or not encodable as UTF-8."""
    if value is None:
        return None
    if len(value) > max_chars:
        raise InputError(field, f"is {len(value):,} characters, over the limit of {max_chars:,}")
    _check_unicode(value, field)
    return value.strip() or None


def _check_unicode(value: str, field: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(
            field, "contains text that is not valid Unicode (a lone surrogate)"
        ) from None


def json_depth(raw: str) -> int:
    """The deepest nesting of [ and { in JSON text, outside strings (no recursion: a hostile
    document a million levels deep is measured in one pass)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in raw:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def parse_json_text(raw: str | None, field: str, *, max_depth: int, max_chars: int) -> Any:
    """A form field holding JSON, parsed only after its size and depth were checked."""
    if raw is None or raw.strip() == "":
        return None
    if len(raw) > max_chars:
        raise InputError(field, f"is {len(raw):,} characters, over the limit of {max_chars:,}")
    if json_depth(raw) > max_depth:
        raise InputError(field, f"is nested deeper than {max_depth} levels")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InputError(field, f"is not valid JSON: {exc.msg}") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of 5,000 digits
        raise InputError(field, f"is not usable JSON: {str(exc)[:120]}") from None
    check_json_value(value, field, max_depth=max_depth)
    return value


def check_json_value(value: Any, field: str, *, max_depth: int, max_items: int = 10_000) -> None:
    """A parsed JSON value the engine and the catalog can store and send back: bounded depth
    and size, finite numbers, valid Unicode everywhere (keys included). Iterative on purpose."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    seen = 0
    while stack:
        item, depth = stack.pop()
        seen += 1
        if seen > max_items:
            raise InputError(field, f"has more than {max_items:,} values")
        if isinstance(item, dict | list | tuple) and depth > max_depth:
            raise InputError(field, f"is nested deeper than {max_depth} levels")
        if isinstance(item, str):
            _check_unicode(item, field)
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise InputError(field, "holds a number that is not finite (NaN or infinity)")
        elif isinstance(item, int):
            if not MIN_ID <= item <= 2**64:
                raise InputError(field, "holds an integer too large to store")
        elif isinstance(item, dict):
            for key, sub in item.items():
                if not isinstance(key, str):
                    raise InputError(field, "has a key that is not text")
                _check_unicode(key, field)
                stack.append((sub, depth + 1))
        elif isinstance(item, list | tuple):
            stack.extend((sub, depth + 1) for sub in item)
        else:
            raise InputError(field, f"holds a value of an unsupported kind ({type(item).__name__})")


def check_number(value: float | None, field: str, low: float, high: float) -> float | None:
    """A finite number in [low, high] (NaN and infinities refused with a reason)."""
    if value is None:
        return None
    if not math.isfinite(value) or not low <= value <= high:
        raise InputError(field, f"must be a finite number between {low:g} and {high:g}")
    return float(value)


def check_threshold(value: float | str | None, field: str = "threshold") -> float | str | None:
    """A threshold: a number 0..100, 'auto' (the likely matches), or None; a form's text too."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        if value.strip().lower() == "auto":
            return "auto"
        try:
            value = float(value)
        except ValueError:
            raise InputError(field, "must be a number 0..100 or 'auto'") from None
    return check_number(value, field, 0, 100)


def parse_ids(raw: str | list[int] | None, field: str) -> list[int] | None:
    """Image ids of a feedback field (`more`, `less`): a list, or a form's '3,12' / '[3, 12]' /
    'id:3,id:12'; at most MAX_FEEDBACK_IDS, each a possible image id."""
    if raw is None:
        return None
    if isinstance(raw, str):
        parts = [p.strip().removeprefix("id:") for p in raw.strip().strip("[]").split(",")]
        if not all(p.lstrip("-").isdigit() for p in parts if p):
            raise InputError(field, "takes image ids such as '3,12'")
        raw = [int(p) for p in parts if p]
    if len(raw) > MAX_FEEDBACK_IDS:
        raise InputError(field, f"takes at most {MAX_FEEDBACK_IDS} ids, got {len(raw)}")
    if not all(MIN_ID <= int(i) <= MAX_ID for i in raw):
        raise InputError(field, "holds an id no image can have")
    return [int(i) for i in raw] or None


_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f]")


def safe_filename(name: str | None, default: str = "upload", max_chars: int = 200) -> str:
    """An upload's file name reduced to something harmless to store and show: its last path
    component, no control characters or lone surrogates, bounded length."""
    if not isinstance(name, str):
        return default
    name = name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    name = "".join(
        ch for ch in name if unicodedata.category(ch) not in ("Cc", "Cs", "Cf", "Co", "Cn")
    )
    name = _UNSAFE_NAME.sub("", name).strip().lstrip(".")
    if len(name) > max_chars:
        stem, dot, suffix = name.rpartition(".")
        name = (stem[: max_chars - 9] + dot + suffix[:8]) if dot else name[:max_chars]
    return name or default


def filter_fields(where: str) -> tuple[int, set[str]]:
    """(number of predicates, catalog columns named) of a filter; QueryError when it does not
    parse (the engine's message and position)."""
    from lookalike.query.filters import And, Not, Or, Predicate, parse_filter

    terms, columns = 0, set()
    stack = [parse_filter(where)]
    while stack:
        node = stack.pop()
        if isinstance(node, Predicate):
            terms += 1
            if node.field.kind == "column":
                columns.add(node.field.name)
        elif isinstance(node, Not):
            stack.append(node.item)
        elif isinstance(node, And | Or):
            stack.extend(node.items)
    return terms, columns
