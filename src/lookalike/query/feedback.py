"""More like this / less like this: relevance feedback on the attribute vectors (Rocchio).

The user marks some answers as wanted ("more") and some as not ("less"). Per attribute, the
query vector moves toward the mean of the wanted examples and away from the mean of the
unwanted ones:

    q' = ALPHA q + BETA mean(more) - GAMMA mean(less)

on the stored vectors the attribute's distance reads. Histogram-like vectors (never negative)
are clipped at 0 and rescaled to the query's mass, so q' is again a histogram the distance
understands. Without a query image the wanted examples' mean is the query. The perceptual
attribute's index matrix holds colour-term numbers, not amounts: its cells take the most
common term of the query and the wanted examples instead of a mean.

Weights follow agreement: an attribute on which the wanted examples (and the query image)
lie close together, measured on the calibrated scale (the share of random pairs that are
closer, so attributes are comparable), gains weight; one on which they are as far apart as
random images loses it: w'_a ~ w_a (1 - c_a)^2, c_a in [0, 1] the mean calibrated distance
among them. Images marked "less" are left out of the answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lookalike.errors import QueryError
from lookalike.features.perceptual import N_TERMS

ALPHA, BETA, GAMMA = 1.0, 0.75, 0.25


@dataclass
class Feedback:
    more: list[int]
    less: list[int]

    @classmethod
    def parse(cls, more: Sequence[int | str] | None, less: Sequence[int | str] | None) -> Feedback:
        if not more and not less:  # every search without feedback
            return cls([], [])

        def ids(values: Sequence[int | str] | None, name: str) -> list[int]:
            out = []
            for value in values or ():
                text = str(value).strip().removeprefix("id:")
                if not text.isdigit():
                    raise QueryError(f"{name} takes image ids such as id:3, got {value!r}")
                out.append(int(text))
            return list(dict.fromkeys(out))

        feedback = cls(ids(more, "more"), ids(less, "less"))
        both = set(feedback.more) & set(feedback.less)
        if both:
            raise QueryError(f"image {min(both)} is marked both more and less")
        return feedback

    def __bool__(self) -> bool:
        return bool(self.more or self.less)


def _combine_perceptual(
    query: np.ndarray | None, more: np.ndarray, less: np.ndarray, coefficients: tuple
) -> np.ndarray:
    """Histogram part by Rocchio; index-matrix cells by the most common term."""
    hist = _rocchio(
        None if query is None else query[:N_TERMS], more[:, :N_TERMS], less[:, :N_TERMS]
    )
    voters = more[:, N_TERMS:] if query is None else np.vstack([query[N_TERMS:], more[:, N_TERMS:]])
    if len(voters) == 0:
        return np.concatenate([hist, query[N_TERMS:]])  # type: ignore[index]
    cells = np.rint(voters).astype(np.int64)
    counts = np.stack([(cells == t).sum(axis=0) for t in range(-1, N_TERMS)])
    return np.concatenate([hist, (counts.argmax(axis=0) - 1).astype(np.float32)])


def _rocchio(query: np.ndarray | None, more: np.ndarray, less: np.ndarray) -> np.ndarray:
    parts = [] if query is None else [ALPHA * query]
    if len(more):
        parts.append(BETA * more.mean(axis=0))
    if len(less) and parts:
        parts.append(-GAMMA * less.mean(axis=0))
    moved = np.sum(parts, axis=0)
    relevant = ([] if query is None else [query]) + list(more)
    if all(v.min() >= 0 for v in [*relevant, *less]):  # histograms: stay one, of the same mass
        moved = np.maximum(moved, 0.0)
        total = float(moved.sum())
        if total > 0:
            moved *= float(np.mean([v.sum() for v in relevant])) / total
    return moved.astype(np.float32)


COMBINERS: dict[str, Callable[..., np.ndarray]] = {"perceptual": _combine_perceptual}


def move_query(
    query: Mapping[str, np.ndarray] | None,
    more: Mapping[str, np.ndarray],
    less: Mapping[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """The moved query vector of every attribute (`more`/`less`: attribute -> (k, dim))."""
    names = list(more) if query is None else list(query)
    out = {}
    for name in names:
        q = None if query is None else np.asarray(query[name], np.float32)
        m = np.asarray(more[name], np.float32)
        ls = np.asarray(less[name], np.float32)
        if name in COMBINERS:
            out[name] = COMBINERS[name](q, m, ls, (ALPHA, BETA, GAMMA))
        else:
            out[name] = _rocchio(q, m, ls)
    return out


def shift_weights(
    weights: Mapping[str, float],
    spread: Mapping[str, float],
) -> dict[str, float]:
    """Weights moved toward attributes on which the wanted examples agree.

    `spread`: attribute -> mean calibrated distance (0..1) among the wanted examples."""
    raw = {a: w * (1.0 - min(max(spread.get(a, 0.5), 0.0), 1.0)) ** 2 for a, w in weights.items()}
    total = sum(raw.values())
    if total <= 0:
        return dict(weights)
    return {a: v / total for a, v in raw.items()}


def agreement(
    vectors: Mapping[str, np.ndarray],
    distance: Callable[[str, np.ndarray, np.ndarray], np.ndarray],
) -> dict[str, float]:
    """Mean pairwise distance (0..1 after `distance`, which should be calibrated) among the
    rows of each attribute's (k, dim) matrix; attributes with fewer than 2 rows are left out."""
    out: dict[str, float] = {}
    for name, rows in vectors.items():
        if len(rows) < 2:
            continue
        values = [distance(name, rows[i], rows[i + 1 :]) for i in range(len(rows) - 1)]
        out[name] = float(np.mean(np.concatenate(values))) / 100.0
    return out


def explain(feedback: Feedback, before: Mapping[str, float], after: Mapping[str, float]) -> Any:
    return {
        "more": feedback.more,
        "less": feedback.less,
        "excluded": feedback.less,
        "weights_before": {k: round(v, 4) for k, v in before.items()},
        "weights_after": {k: round(v, 4) for k, v in after.items()},
        "rule": f"Rocchio q' = {ALPHA} q + {BETA} mean(more) - {GAMMA} mean(less)",
    }


def apply_feedback(
    feedback: Feedback,
    signature: Callable[[list[str]], dict[str, np.ndarray]] | None,
    weights: Mapping[str, float],
    stored: Callable[[list[int], list[str]], list[tuple[int, dict[str, np.ndarray]]]],
    distance: Callable[[str, np.ndarray, np.ndarray], np.ndarray],
) -> tuple[Callable[[list[str]], dict[str, np.ndarray]], dict[str, float], dict[str, Any]]:
    """The moved query (as a signature function for the planner), the shifted weights and
    what was done. `distance(attribute, q, rows)` should be calibrated (0..100)."""
    if not feedback.more and signature is None:
        raise QueryError("'less' needs a query image or images marked 'more' to move from")
    names = list(weights)
    wanted = dict(stored(feedback.more + feedback.less, names))
    missing = [i for i in feedback.more + feedback.less if i not in wanted]
    if missing:
        raise QueryError(f"no searchable image {missing[0]} to give feedback on")

    def stack(ids: list[int], name: str) -> np.ndarray:
        return np.stack([wanted[i][name] for i in ids]) if ids else np.zeros((0, 0), np.float32)

    query = None if signature is None else signature(names)
    more = {n: stack(feedback.more, n) for n in names}
    less = {n: stack(feedback.less, n) for n in names}
    moved = move_query(query, more, less)
    relevant = {
        n: np.vstack(([query[n]] if query is not None else []) + list(more[n])) for n in names
    }
    shifted = shift_weights(weights, agreement(relevant, distance))
    return (lambda _names: moved), shifted, explain(feedback, weights, shifted)
