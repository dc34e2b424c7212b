"""How `lookalike search` prints its hits in a terminal: one line per hit that fits the width.

Plain strings only (no Rich markup), so a path holding `[` or `*` prints as it is, and the
line-fitting is testable without a terminal.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

ELLIPSIS = "…"
MIN_PATH_COLUMNS = 12  # below this a path is cut anyway; the line may then exceed the width
LIKELY_MARK = "*"
QUERY_MARK = " (the query)"  # after the path of the hit that is the query image itself


def shown_path(path: str) -> str:
    """Paths under the current folder are shown relative to it: shorter, same meaning."""
    if "://" in path:
        return path
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def fit_left(text: str, width: int) -> str:
    """Cut `text` to `width` characters from the left: the end of a path (its file name) is
    the part a person reads."""
    if len(text) <= width:
        return text
    if width <= 1:
        return ELLIPSIS[:width]
    return ELLIPSIS + text[-(width - 1) :]


def fit_right(text: str, width: int) -> str:
    """Cut `text` to `width` characters, keeping its start."""
    if len(text) <= width:
        return text
    if width <= 1:
        return ELLIPSIS[:width]
    return text[: width - 1] + ELLIPSIS


def is_likely(hit: Any) -> bool:
    """The engine's calibrated cut when it gives one (`likely`), else the threshold's verdict."""
    likely = getattr(hit, "likely", None)
    if likely is None:
        likely = hit.similar
    return bool(likely)


def hit_lines(hits: Sequence[Any], width: int, details: bool = False) -> list[str]:
    """One line per hit: rank, score (0 = identical), a mark for likely matches, id, path, and
    "(the query)" after the query image itself (it is shown, but it is not a match).

    With `details`, each hit is followed by its per-attribute distances, wrapped to the width.
    """
    rank_w = len(str(len(hits)))
    id_w = max((len(str(hit.id)) for hit in hits), default=1)
    lines: list[str] = []
    for rank, hit in enumerate(hits, start=1):
        mark = LIKELY_MARK if is_likely(hit) else " "
        head = f"{rank:>{rank_w}}  {hit.score:6.2f}{mark} id:{hit.id:<{id_w}}  "
        tail = QUERY_MARK if getattr(hit, "is_query", False) else ""
        room = max(MIN_PATH_COLUMNS, width - len(head) - len(tail))
        lines.append(head + fit_left(shown_path(hit.path), room) + tail)
        if details:
            parts = [f"{name} {value:.1f}" for name, value in hit.breakdown.items()]
            lines.extend(wrap_words(parts, width, indent=" " * (rank_w + 2)))
    return lines


def wrap_words(words: Iterable[str], width: int, indent: str = "", sep: str = "  ") -> list[str]:
    """Words joined by `sep` into lines of at most `width` characters (a word longer than a
    line is cut)."""
    lines: list[str] = []
    line = ""
    for word in words:
        word = fit_right(word, max(1, width - len(indent)))
        candidate = f"{line}{sep}{word}" if line else word
        if line and len(indent) + len(candidate) > width:
            lines.append(indent + line)
            line = word
        else:
            line = candidate
    if line:
        lines.append(indent + line)
    return lines


def header_lines(
    weights: dict[str, float],
    threshold: float | None,
    marked: bool,
    width: int,
    likely_cut: float | None = None,
) -> list[str]:
    """What the scores mean and how they were weighted, wrapped to the width. The mark means
    the engine's likely-matches cut when it drew one (given after the hits), else the
    threshold's verdict."""
    label = "weights: "
    items = [f"{name}={value:.2f}" for name, value in weights.items()]
    lines = wrap_words(items, width, indent=" " * len(label), sep=", ")
    if lines:
        lines[0] = label + lines[0][len(label) :]
    legend = "score: 0 = identical, 100 = nothing alike"
    if marked:
        cut = f" (score at most {threshold:g})" if threshold is not None else ""
        if likely_cut is not None:
            cut = ""  # the engine's cut has a line of its own, after the hits
        legend += f"; {LIKELY_MARK} = likely match{cut}"
    return [*lines, fit_right(legend, width)]


def likely_cut_lines(results: Any, width: int) -> list[str]:
    """The engine's likely-matches cut as one line (none when it drew no cut), with the scale
    it was drawn on: calibrated distances or raw 0..100 ones."""
    cut = getattr(results, "likely_cut", None)
    if cut is None:
        return []
    scale = "calibrated" if getattr(results, "calibrated", False) else "raw"
    count = sum(1 for hit in results.hits if getattr(hit, "likely", None))
    line = f"likely matches: score below {cut:.2f} ({scale} scale), {count} of {len(results.hits)}"
    return [fit_right(line + " shown", width)]
