"""One query box: a typed text read into the query parts the engine has.

People type "blue", "red dress" or "top blue and bottom grey" into one box; the engine has
separate parts for colours (the index key), layouts (the 16 x 16 grid) and words (keywords,
tags, metadata). This module reads the text word by word:

* colour words and phrases of `colorwords` ("navy", "light blue") become the colour part,
  in the order typed ("blue and white" is the index key blue, then white);
* when the text also holds layout words (regions such as top / left / centre / corners,
  quantities such as mostly / some / no, relations such as above / left of), the colour and
  layout words together are the layout sentence instead, read by `layout.parse_layout`;
* quoted "phrases", prefix* words and every other word that is not a filler are keywords;
  a colour name that is not a basic term ("navy", "espresso") is a keyword as well, since in
  a catalogue it may name a product or a tag as much as a colour.

The reading is returned whole (`Understanding.explain`) so the answer can show how the text
was read; callers turn it off with `understand=False` or override a part by giving it.
A layout reading that the layout parser refuses falls back to colours plus keywords (the
refusal is kept in the explanation) rather than failing a query the words alone could answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from lookalike.errors import QueryError
from lookalike.query.colorwords import parse_color, words_with_positions
from lookalike.query.layout import LAYOUT_WORDS, parse_layout

# Words that carry nothing on their own in a search box ("photos of a red dress").
_FILLERS = frozenset(
    """a an the of with and in on at some any image images picture pictures photo photos
    show me find search for that which is are coloured colored colour color colours colors
    one ones""".split()
)
_QUOTED = re.compile(r'"[^"]*"')
_PREFIX = re.compile(r"\b\w+\*")


@dataclass
class Understanding:
    """How one text was read: the parts it gives (None = not given) and why."""

    text: str
    keywords: str | None = None
    colors: list[str] = field(default_factory=list)
    layout: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def colors_query(self) -> str | None:
        return " then ".join(self.colors) if self.colors else None

    def explain(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "keywords": self.keywords,
            "colors": self.colors_query,
            "layout": self.layout,
            "notes": self.notes,
        }


def understand(text: str) -> Understanding:
    """Split a query box's text into keywords, a colour part and a layout part."""
    kept = [m.group(0) for m in _QUOTED.finditer(text)]
    rest = _QUOTED.sub(" ", text)
    kept += [m.group(0) for m in _PREFIX.finditer(rest)]
    rest = _PREFIX.sub(" ", rest)
    tokens = words_with_positions(rest)
    words = [w for w, _ in tokens]
    keywords: list[str] = []
    visual: list[str] = []  # colour and layout words, in order, for the layout reading
    colours: list[str] = []
    named: list[str] = []  # colour synonyms that are words of their own
    layout_words = 0
    i = 0
    while i < len(words):
        parsed = parse_color(words, i)
        if parsed is not None:
            terms, used = parsed
            if terms[0] not in colours:
                colours.append(terms[0])
            if used == 1 and words[i] not in terms and words[i] != "gray":
                named.append(words[i])  # "espresso", "navy": a colour, and maybe a keyword too
            visual.extend(words[i : i + used])
            i += used
            continue
        word = words[i]
        if word in LAYOUT_WORDS:
            layout_words += word not in _FILLERS
            visual.append(word)
        elif word in _FILLERS or not word.isalnum():
            visual.append(word)
        else:
            keywords.append(word)
        i += 1
    reading = Understanding(text=text)
    if colours and layout_words:
        sentence = " ".join(visual)
        try:
            parse_layout(sentence)
        except QueryError as err:
            reading.notes.append(f"not read as a layout ({err}); colours and words kept")
        else:
            reading.layout = sentence
            reading.notes.append(f"read as the layout {sentence!r}")
    if reading.layout is None and colours:
        reading.colors = colours
        reading.notes.append("colour words: " + ", ".join(colours))
    words_left = kept + keywords
    if reading.layout is None and named:
        words_left += named  # a shop's "espresso" may be a product word, not only a brown
        reading.notes.append("colour names also searched as words: " + ", ".join(named))
    if reading.layout is None and not colours:
        words_left = [text.strip()] if text.strip() else []  # nothing visual: the text as typed
    reading.keywords = " ".join(words_left) or None
    return reading


def read_query_box(
    text: str, colors: Any, layout: str | None, *, visual: bool
) -> tuple[str | None, Any, str | None, dict[str, Any]]:
    """(text, colors, layout) after reading the text; parts the caller gave win over the
    reading, and without colour-grid attributes (`visual` False) the text stays words."""
    reading = understand(text)
    if not visual and (reading.colors or reading.layout):
        reading = Understanding(text=text, keywords=text)
        reading.notes.append("this collection has no perceptual attribute: text kept as words")
    if reading.colors and colors is None:
        colors = reading.colors_query
    elif reading.colors:
        reading.notes.append("colours given explicitly: the colour words are not used")
    if reading.layout and layout is None:
        layout = reading.layout
    elif reading.layout:
        reading.notes.append("layout given explicitly: the layout words are not used")
    return reading.keywords, colors, layout, reading.explain()


__all__ = ["Understanding", "read_query_box", "understand"]
