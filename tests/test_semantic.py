"""The packaged sentence model and text-query expansion."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.query.expansion import (
    SEMANTIC_THRESHOLD,
    Expansion,
    colour_expander,
    content_words,
    expand,
)
from lookalike.semantic import SemanticUnavailable

VOCABULARY = ["tabby cat", "espresso", "rocket", "astronaut"]

# A stand-in for lookalike.query.colorwords: word -> synonyms.
COLOURS = {
    "red": ("maroon", "burgundy", "crimson", "scarlet"),
    "burgundy": ("red", "maroon", "crimson"),
    "navy blue": ("blue", "azure", "cobalt"),
    "blue": ("azure", "cobalt"),
    "coffee": ("brown", "mocha"),
}


def stub_colours(word: str) -> tuple[str, ...]:
    return COLOURS.get(word, ())


def no_semantics(texts):
    raise SemanticUnavailable("sentence model not installed (test)")


# --- without the model ------------------------------------------------------------------------


def test_content_words():
    assert content_words("A photo of a Cup of Coffee") == ["cup", "coffee"]
    assert content_words("kitten kitten") == ["kitten"]


def test_colour_synonyms_with_reasons():
    e = expand("red car", [], stub_colours)
    assert isinstance(e, Expansion)
    assert e.original == ("red car", "red", "car")
    assert e.added_terms == ("maroon", "burgundy", "crimson", "scarlet")
    assert ("burgundy", "colour synonym of red") in e.reasons
    assert all(a.source == "colour" and a.score == 1.0 for a in e.added)
    assert e.terms[:3] == e.original


def test_two_word_colour_and_no_duplicates():
    e = expand("navy blue dress", [], stub_colours)
    assert e.added_terms == ("azure", "cobalt")  # "blue" is in the query already
    assert e.reasons[0] == ("azure", "colour synonym of navy blue")
    e = expand("burgundy red", [], stub_colours)  # synonyms shared by both words, added once
    assert len(e.added_terms) == len(set(e.added_terms))
    assert "red" not in e.added_terms  # already in the query


def test_colour_word_used_as_a_noun_is_not_a_colour():
    assert expand("cup of coffee", [], stub_colours).added == ()
    assert expand("coffee cup", [], stub_colours).added_terms == ("brown", "mocha")
    assert expand("coffee", [], stub_colours).added_terms == ("brown", "mocha")


def test_colour_expander_adapts_colorwords_style_lookups():
    terms = {"burgundy": ("red", "brown"), "red": ("red",)}
    synonyms = {"red": ("crimson", "burgundy"), "brown": ("tan",)}
    expand_colour = colour_expander(lambda w: terms.get(w, ()), lambda t: synonyms.get(t, ()))
    assert expand_colour("burgundy") == ("red", "crimson")
    assert expand_colour("red") == ("crimson", "burgundy")
    assert expand_colour("car") == ()


def test_missing_sentence_model_keeps_colour_expansion():
    e = expand("red kitten", VOCABULARY, stub_colours, embed=no_semantics)
    assert "crimson" in e.added_terms
    assert e.notes and "semantic expansion skipped" in e.notes[0]


def test_custom_embedder_and_threshold():
    table = {"kitten": [1, 0, 0], "tabby cat": [0.8, 0.6, 0], "espresso": [0, 0, 1]}

    def embed(texts):
        return np.array([table[t.removeprefix("a photo of ")] for t in texts], dtype=np.float32)

    e = expand("kitten", ["tabby cat", "espresso"], embed=embed)
    assert e.reasons == (("tabby cat", "semantic neighbour of 'kitten' (0.80)"),)
    assert expand("kitten", ["tabby cat", "espresso"], embed=embed, threshold=0.9).added == ()
    assert expand("kitten", [], embed=embed).added == ()


# --- with the packaged model ------------------------------------------------------------------


@pytest.fixture(scope="module")
def semantic():
    from lookalike import semantic  # its model comes with the project's install: no skip

    semantic.load_model()
    return semantic


def test_embed_shape_and_norm(semantic):
    v = semantic.embed(["kitten", "tabby cat", "espresso"])
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2]  # a kitten is more like a tabby cat than an espresso
    assert semantic.embed([]).shape == (0, 384)
    with pytest.raises(TypeError):
        semantic.embed("kitten")
    assert semantic.load_model() is semantic.load_model()  # loaded once
    assert semantic.is_available()


def test_kitten_expands_to_tabby_cat(semantic):
    e = expand("kitten", VOCABULARY)
    assert "tabby cat" in e.added_terms
    assert "espresso" not in e.added_terms and "rocket" not in e.added_terms
    term, reason = e.reasons[e.added_terms.index("tabby cat")]
    assert reason.startswith("semantic neighbour of 'kitten' (")
    assert e.added[0].score >= SEMANTIC_THRESHOLD


def test_cup_of_coffee_expands_to_espresso(semantic):
    e = expand("a cup of coffee", VOCABULARY, stub_colours)
    assert "espresso" in e.added_terms
    assert not {"tabby cat", "rocket", "astronaut", "brown"} & set(e.added_terms)


def test_unrelated_terms_do_not_pull_each_other(semantic):
    assert "kitten" not in expand("espresso", ["kitten", "tabby cat", "astronaut"]).added_terms
    assert "espresso" not in expand("tabby cat", ["espresso", "rocket"]).added_terms
    assert expand("astronaut", ["espresso", "tabby cat"]).added == ()


SENTENCE_TRANSFORMERS_PARITY = """
import numpy as np
from sentence_transformers import SentenceTransformer
from lookalike import semantic
texts = ["a photo of a kitten", "kitten", "", "Ünïcode café – naïve 日本", "a cup of coffee",
         "an astronaut on a long winding road " * 40]  # past the 256 tokens: truncated alike
texts += [f"a photo of a {w}" for w in ("dog", "tabby cat", "espresso", "rocket") * 20]
ours = semantic.embed(texts, batch_size=16)  # several batches of different lengths
model = SentenceTransformer(str(semantic.model_path()), device="cpu")
reference = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
print(float(np.abs(ours - reference).max()))
"""


def test_the_numpy_encoder_gives_sentence_transformers_vectors():
    """`SentenceEncoder` runs the packaged model as sentence-transformers does (tokenizer,
    truncation, BERT, mean pooling, normalisation): the same vectors to float32 rounding, for
    short, empty, non-ASCII and over-long texts batched together. In a subprocess: importing
    sentence-transformers costs ~17 s of CPU and ~400 MB the test worker would keep."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", SENTENCE_TRANSFORMERS_PARITY],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert float(proc.stdout.split()[-1]) < 2e-6, proc.stdout
