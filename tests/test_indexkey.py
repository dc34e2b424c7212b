"""Index-key queries: "dominant colours are blue then white", tolerant to near ties."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.errors import QueryError
from lookalike.features.perceptual import TERMS
from lookalike.query.indexkey import parse_index_key, score_index_key


def hist(**shares: float) -> np.ndarray:
    out = np.zeros(11, np.float32)
    for term, share in shares.items():
        out[TERMS.index(term)] = share
    return out


def test_parse_sentences_and_lists():
    assert parse_index_key("dominant colours are blue then white").terms == ("blue", "white")
    assert parse_index_key("Navy, off-white > light grey").terms == ("blue", "white", "grey")
    assert parse_index_key(["navy", "gray"]).terms == ("blue", "grey")
    beige = parse_index_key("beige then blue")
    assert beige.positions[0] == ("brown", "white")
    assert beige.describe() == "brown or white, then blue"


def test_parse_errors_name_the_word_and_position():
    with pytest.raises(QueryError) as error:
        parse_index_key("blue then plaid")
    assert "plaid" in str(error.value) and error.value.position == 10
    with pytest.raises(QueryError):
        parse_index_key("the dominant colours are")
    with pytest.raises(QueryError) as error:
        parse_index_key("blue then navy")
    assert "twice" in str(error.value) and error.value.position == 10
    with pytest.raises(QueryError):
        parse_index_key(["blue", "plaid"])


def test_scores_rank_the_exact_key_first():
    query = parse_index_key("blue then white")
    hists = np.stack(
        [
            hist(blue=0.6, white=0.3, grey=0.1),  # exact
            hist(white=0.6, blue=0.3, grey=0.1),  # swapped, far apart
            hist(blue=0.6, grey=0.3, white=0.1),  # white third
            hist(green=0.7, red=0.3),  # neither colour
        ]
    )
    scores = query.score(hists)
    assert scores[0] == pytest.approx(1.0)
    assert scores[3] == pytest.approx(0.0)
    assert scores[0] > scores[2] > scores[1] > scores[3]
    assert ((scores >= 0) & (scores <= 1)).all()


def test_near_equal_shares_match_in_either_order():
    query = parse_index_key("blue then white")
    close = hist(white=0.48, blue=0.46, grey=0.06)  # differ by 0.02 < tolerance 0.05
    assert query.score(close[None])[0] == pytest.approx(1.0)
    strict = parse_index_key("blue then white", tolerance=0.0)
    assert strict.score(close[None])[0] < 1.0


def test_only_listed_positions_count_and_absent_terms_score_zero():
    assert score_index_key(["blue"], hist(blue=0.5, red=0.3, green=0.2)[None])[0] == 1.0
    # white present under min_share counts as absent
    value = score_index_key(["blue", "white"], hist(blue=0.995, white=0.005)[None])[0]
    assert value == pytest.approx(1.0 / 1.5)


def test_first_position_weighs_more():
    query = parse_index_key("blue then white")
    first_right = hist(blue=0.6, grey=0.3, white=0.1)[None]
    second_right = hist(grey=0.6, white=0.3, blue=0.1)[None]
    assert query.score(first_right)[0] > query.score(second_right)[0]


def test_vectorised_over_many_histograms():
    rng = np.random.default_rng(0)
    hists = rng.dirichlet(np.ones(11), size=500).astype(np.float32)
    scores = parse_index_key("red, green, blue").score(hists)
    assert scores.shape == (500,) and ((scores >= 0) & (scores <= 1)).all()
