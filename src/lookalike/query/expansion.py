"""Query expansion for text search: "kitten" also finds images tagged "tabby cat".

Two sources of extra terms, each added term carrying the reason it was added:

* colour synonyms: a colour word brings its synonyms ("red" -> crimson, scarlet, maroon, ...),
  through a function passed in by the caller (normally built from `lookalike.query.colorwords`
  with `colour_expander`); this module does not import it, so it works without it.
* semantic neighbours: the query phrase and each of its content words are embedded with the
  packaged sentence model (`lookalike.semantic`) and compared with the collection's vocabulary
  (its keywords and tags); entries with cosine >= `SEMANTIC_THRESHOLD` are added, at most
  `max_per_term` per probe, best first.

Both sides are embedded inside the template "a photo of {}". Measured with all-MiniLM-L6-v2 on
the ~2,000 keywords that ImageNet labels produce: the template ranks "kitten" -> cat breeds
(0.67-0.82) above "puppy" (0.61), where the bare words put puppy (0.61) above "tabby cat" (0.59).
The threshold 0.62 keeps kitten -> tabby cat (0.70), Egyptian cat (0.67); cup of coffee -> coffee
mug (0.91), espresso (0.65; 0.68 through the word "coffee"); and drops kitten -> puppy (0.61),
kitten -> espresso (0.28), cup of coffee -> tabby cat (0.39). Colour words in a longer query are
not probed on their own, only through the phrase: the model puts "red" next to "red fox", "red
wine" and "red setter" (0.68-0.87), which is not what "red car" means. A one-word query is
always probed, colour or not ("coffee" is a colour in the colour vocabulary and also a drink).

Vocabulary embeddings are cached by text in a process-wide LRU (32,768 entries, ~50 MB), so a
collection's vocabulary is embedded once, not per query. A collection with a much larger
vocabulary should store the embeddings with its keywords instead.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from lookalike.semantic import SemanticUnavailable

SEMANTIC_THRESHOLD = 0.62
MAX_PER_TERM = 8
TEMPLATE = "a photo of {}"
CACHE_SIZE = 32768

# Function words and words that describe the search itself, not the picture.
STOPWORDS = frozenset(
    "a an the of on in at with and or to for from by into onto near under over some any my our "
    "your their its this that these those is are be photo photos picture pictures image images "
    "showing show shows".split()
)
# Prepositions after which a colour word is more likely the thing it is named after.
_NOUN_PREPOSITIONS = frozenset("of with for from on by at into onto under over near".split())
_WORD = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")

ColourSynonyms = Callable[[str], tuple[str, ...]]
Embedder = Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class AddedTerm:
    """A term the query did not contain, why it was added, and how strongly it applies."""

    term: str
    reason: str
    score: float  # 1.0 for colour synonyms, the cosine for semantic neighbours
    source: str  # "colour" or "semantic"


@dataclass(frozen=True)
class Expansion:
    """The query's own terms and the terms added to them."""

    query: str
    original: tuple[str, ...]
    added: tuple[AddedTerm, ...] = ()
    notes: tuple[str, ...] = ()  # e.g. why semantic expansion was skipped

    @property
    def added_terms(self) -> tuple[str, ...]:
        return tuple(a.term for a in self.added)

    @property
    def terms(self) -> tuple[str, ...]:
        """Original terms first, then the added ones, best first."""
        return self.original + self.added_terms

    @property
    def reasons(self) -> tuple[tuple[str, str], ...]:
        """(term, reason) pairs, e.g. ("burgundy", "colour synonym of red")."""
        return tuple((a.term, a.reason) for a in self.added)


def tokenize(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def content_words(text: str) -> list[str]:
    """Lower-cased words without stopwords, in order, without repeats."""
    out: list[str] = []
    for w in tokenize(text):
        if w not in STOPWORDS and w not in out:
            out.append(w)
    return out


def colour_expander(
    terms_for_word: Callable[[str], tuple[str, ...]],
    synonyms_of_term: Callable[[str], tuple[str, ...]],
) -> ColourSynonyms:
    """Build the `colour_synonyms` function from colorwords' two look-ups.

    A colour word expands to its most likely basic term and that term's synonyms, e.g.
    "burgundy" -> red, crimson, scarlet, maroon, ... (the word itself left out).
    """

    def synonyms(word: str) -> tuple[str, ...]:
        terms = terms_for_word(word)
        if not terms:
            return ()
        term = terms[0]
        found = (term, *synonyms_of_term(term))
        return tuple(t for t in found if t != word)

    return synonyms


def expand(
    query_text: str,
    vocabulary: Iterable[str],
    colour_synonyms: ColourSynonyms | None = None,
    *,
    threshold: float = SEMANTIC_THRESHOLD,
    max_per_term: int = MAX_PER_TERM,
    embed: Embedder | None = None,
) -> Expansion:
    """Expand a text query with colour synonyms and semantic neighbours from `vocabulary`.

    `embed` defaults to `lookalike.semantic.embed`; if the sentence model is not installed the
    expansion keeps its colour synonyms and says so in `notes` rather than failing the search.
    """
    words = content_words(query_text)
    phrase = " ".join(tokenize(query_text))
    original: list[str] = ([phrase] if len(words) > 1 else []) + words
    if not original and phrase:
        original = [phrase]  # a query of stopwords only: search it as it is
    seen = {t.lower() for t in original}
    added: list[AddedTerm] = []
    notes: list[str] = []

    colour_words: set[str] = set()
    if colour_synonyms is not None:
        for word, synonyms in _colour_spans(tokenize(query_text), colour_synonyms):
            colour_words.update(word.split())
            for syn in synonyms:
                if syn.lower() not in seen:
                    seen.add(syn.lower())
                    added.append(AddedTerm(syn, f"colour synonym of {word}", 1.0, "colour"))

    vocab = _unique(vocabulary)
    # A colour word in a longer query is probed only through the phrase ("red car" keeps its
    # context); a query that is nothing but a colour word ("coffee", "orange") is probed too,
    # since the user may mean the thing as well as the colour.
    if len(words) > 1:
        probes = _unique([phrase] + [w for w in words if w not in colour_words])
    else:
        probes = list(words)
    if vocab and probes:
        try:
            added.extend(_semantic_neighbours(probes, vocab, seen, threshold, max_per_term, embed))
        except SemanticUnavailable as e:
            notes.append(f"semantic expansion skipped: {e}")
    return Expansion(query_text, tuple(original), tuple(added), tuple(notes))


def _colour_spans(
    tokens: list[str], colour_synonyms: ColourSynonyms
) -> list[tuple[str, tuple[str, ...]]]:
    """(colour word or two-word colour, its synonyms) for the colours the query means as colours.

    Many colour words are also things (coffee, wine, lime, chocolate). After a preposition that
    introduces a noun and not followed by another content word, the word is read as the thing:
    "cup of coffee" is not brown, while "coffee cup", "dress in wine red" and "coffee" alone
    (ambiguous, so both readings) are colours.
    """
    found: list[tuple[str, tuple[str, ...]]] = []
    i = 0
    while i < len(tokens):
        if tokens[i] in STOPWORDS:
            i += 1
            continue
        for span in (2, 1):
            piece = tokens[i : i + span]
            if len(piece) < span or any(t in STOPWORDS for t in piece):
                continue
            word = " ".join(piece)
            synonyms = tuple(colour_synonyms(word) or ())
            if not synonyms:
                continue
            before = tokens[i - 1] if i > 0 else ""
            after = tokens[i + span] if i + span < len(tokens) else ""
            if before in _NOUN_PREPOSITIONS and (not after or after in STOPWORDS):
                continue  # "cup of coffee": the drink, not the colour
            found.append((word, synonyms))
            i += span
            break
        else:
            i += 1
    return found


def _semantic_neighbours(
    probes: list[str],
    vocab: list[str],
    seen: set[str],
    threshold: float,
    max_per_term: int,
    embed: Embedder | None,
) -> list[AddedTerm]:
    if embed is None:
        p, v = _embed_cached(probes), _embed_cached(vocab)
    else:  # a caller's own embedder (tests): no caching, its vectors are its business
        p = _normalise(embed([TEMPLATE.format(t.lower()) for t in probes]))
        v = _normalise(embed([TEMPLATE.format(t.lower()) for t in vocab]))
    sims = p @ v.T  # (probes, vocab)
    best: dict[str, tuple[float, str]] = {}
    for i, probe in enumerate(probes):
        order = np.argsort(-sims[i])
        kept = 0
        for j in order:
            score = float(sims[i, j])
            if score < threshold or kept >= max_per_term:
                break
            term = vocab[j]
            if term.lower() in seen:
                continue
            kept += 1
            if term not in best or score > best[term][0]:
                best[term] = (score, probe)
    ranked = sorted(best.items(), key=lambda item: (-item[1][0], item[0]))
    out = []
    for term, (score, probe) in ranked:
        seen.add(term.lower())
        out.append(
            AddedTerm(term, f"semantic neighbour of '{probe}' ({score:.2f})", score, "semantic")
        )
    return out


def _unique(texts: Iterable[str]) -> list[str]:
    out: list[str] = []
    keys: set[str] = set()
    for t in texts:
        text = " ".join(str(t).split())
        if text and text.lower() not in keys:
            keys.add(text.lower())
            out.append(text)
    return out


def _normalise(vectors: np.ndarray) -> np.ndarray:
    x = np.asarray(vectors, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


_cache: OrderedDict[str, np.ndarray] = OrderedDict()
_cache_lock = threading.Lock()


def _embed_cached(texts: list[str]) -> np.ndarray:
    """Embed texts in the template with the sentence model, reusing vectors seen before (LRU)."""
    from lookalike import semantic

    keys = [TEMPLATE.format(t.lower()) for t in texts]
    with _cache_lock:
        found = {k: _cache[k] for k in keys if k in _cache}
        for k in found:
            _cache.move_to_end(k)
    missing = list(dict.fromkeys(k for k in keys if k not in found))
    if missing:
        vectors = _normalise(semantic.embed(missing))
        with _cache_lock:
            for k, vec in zip(missing, vectors, strict=True):
                found[k] = vec
                _cache[k] = vec
            while len(_cache) > CACHE_SIZE:
                _cache.popitem(last=False)
    return np.stack([found[k] for k in keys])


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()
