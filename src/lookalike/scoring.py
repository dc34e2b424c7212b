"""Scores as users of classic image databases expect them (after Oracle interMedia).

Every attribute gives a distance from 0 (no difference) to 100 (maximum difference). The user's
weights, each in 0..1, are normalised to sum 1 and the score is the weighted sum of distances;
an image is "similar" when its score is at most the threshold.

A plain `location` weight means "where it sits matters": it is spread over the location variants
of the attributes that are weighted (colour -> color_location, ...) in proportion to their
weights, so `color=0.5, location=0.5` compares colour half globally and half cell by cell.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from lookalike.errors import WeightsError
from lookalike.features.registry import LOCATION_OF

# Attributes that carry visual content by themselves; `location` needs one of them.
CONTENT_ATTRIBUTES = ("color", "texture", "shape")
ALIASES = {
    "colour": "color",
    "colour_location": "color_location",
    "perceptual_colour": "perceptual",
}


def parse_weights(spec: str | Mapping[str, float] | None) -> dict[str, float]:
    """'color=0.7,texture=0.2' or a mapping -> {name: weight}, names as given (aliases folded)."""
    if spec is None:
        return {}
    if isinstance(spec, str):
        items: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            name, sep, value = part.partition("=")
            if not sep:
                raise WeightsError(f"weight {part!r} should look like name=0.5")
            try:
                items[name.strip()] = float(value)
            except ValueError:
                raise WeightsError(
                    f"weight for {name.strip()!r} is not a number: {value!r}"
                ) from None
        spec = items
    return {ALIASES.get(k.strip().lower(), k.strip().lower()): float(v) for k, v in spec.items()}


def normalise_weights(
    spec: str | Mapping[str, float] | None,
    available: Iterable[str],
    default: Mapping[str, float],
) -> dict[str, float]:
    """Validate weights, expand `location`, drop zeros and scale to sum 1."""
    available = list(available)
    raw = parse_weights(spec) or parse_weights(default)
    for name, value in raw.items():
        if name != "location" and name not in available:
            raise WeightsError(
                f"unknown attribute {name!r}; this collection has: "
                + ", ".join(["location", *available])
            )
        if not 0.0 <= value <= 1.0 or np.isnan(value):
            raise WeightsError(f"weight for {name!r} must be between 0 and 1, got {value}")
    location = raw.pop("location", 0.0)
    if location > 0:
        base = {
            a: raw.get(a, 0.0)
            for a in CONTENT_ATTRIBUTES
            if raw.get(a, 0.0) > 0 and LOCATION_OF[a] in available
        }
        if not base:
            raise WeightsError(
                "a location weight needs a colour, texture or shape weight above 0 whose "
                "location variant this collection has (location says where; they say what)"
            )
        total_base = sum(base.values())
        for attribute, weight in base.items():
            target = LOCATION_OF[attribute]
            raw[target] = raw.get(target, 0.0) + location * weight / total_base
    weights = {name: value for name, value in raw.items() if value > 0}
    if not weights:
        raise WeightsError(
            "at least one of color, texture, shape (or another content attribute such as "
            "perceptual or deep) must have a weight above 0"
        )
    total = sum(weights.values())
    return {name: value / total for name, value in weights.items()}


def default_weights_for(
    attributes: Iterable[str], preferred: Mapping[str, float]
) -> dict[str, float]:
    """The preferred default weights, cut down to the attributes a collection has (equal
    weights when none of the preferred ones is there), so a collection of any attribute set
    can be searched without naming weights."""
    attributes = list(attributes)
    kept = {name: w for name, w in preferred.items() if name in attributes and w > 0}
    has_location = any(
        base in kept and LOCATION_OF[base] in attributes for base in CONTENT_ATTRIBUTES
    )
    if preferred.get("location", 0) > 0 and has_location:
        kept["location"] = preferred["location"]
    return kept or {name: 1.0 for name in attributes}


def fuse(distances: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """Weighted sum of per-attribute distances (each 0..100) -> scores 0..100 (a new array).
    Clipped by two ufuncs in place: np.clip's Python layer cost more than the sum on a
    search's ~100 candidates."""
    total = None
    for name, weight in weights.items():
        part = np.multiply(weight, np.asarray(distances[name], dtype=np.float64))
        total = part if total is None else np.add(total, part, out=total)
    if total is None:
        raise WeightsError("no weighted attribute to score")
    return np.minimum(np.maximum(total, 0.0, out=total), 100.0, out=total)


def is_similar(score: float, threshold: float | None) -> bool | None:
    """interMedia's rule: similar when the weighted sum is at most the threshold."""
    if threshold is None:
        return None
    return bool(score <= threshold)


def check_threshold(threshold: float | None) -> None:
    if threshold is not None and not 0.0 <= threshold <= 100.0:
        raise WeightsError(f"threshold must be between 0 and 100, got {threshold}")
