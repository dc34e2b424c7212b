"""Scores calibrated against the collection's own distances, and where likely matches end.

Each attribute's 0..100 distance has its own spread: on one collection colour distances of
unrelated images sit around 40, texture around 15. A weighted sum of raw distances therefore
weighs attributes by their spread as much as by the user's weights. Calibration maps a raw
distance d of attribute a to 100 x F_a(d), where F_a is the empirical distribution of a's
distances between random pairs of stored images: "this close or closer happens for F_a(d) of
random pairs". Every attribute then speaks the same unit, so weights mix comparable
quantities. F_a is piecewise linear through (0, 0), the sorted sample and (100, 1), so it is
strictly increasing: it never merges two distances into a tie (the near-duplicate tail below
the closest random pair keeps its order, scaled by that pair's distance).

The sample (anchors x partners pairs, per attribute) is kept in the catalog's meta table and
made again when the collection has grown or shrunk by `REFRESH_FACTOR`, or when an
attribute's index fingerprint (extractor version, whitening) changed.

Likely matches: the same sample gives the scores of random pairs under any weights (fuse the
sample's per-attribute values); other query parts (text, layout, colours) contribute their own
distances to random stored images. A hit is *likely* when its score lies below the
`LIKELY_QUANTILE` of those null scores. A collection with many near-duplicates holds them
among its random pairs too (three copies of every photo make 3% of pairs duplicates), and a
plain 1% quantile would be drawn inside the duplicates; so pairs that are exceptional on the
raw scale (below median - z x 1.4826 MAD, the normal 1% point; median and MAD hardly move
for a few duplicates) are left out of the null first.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lookalike.index.attribute import AttributeIndex
from lookalike.scoring import fuse
from lookalike.store.catalog import Catalog

META_KEY = "calibration"
ANCHORS = 64  # sampled images, each compared with PARTNERS others
PARTNERS = 64
MIN_IMAGES = 8  # fewer stored images: no calibration (raw scores, no likely cut)
REFRESH_FACTOR = 2.0  # recalibrate when the collection is this many times larger or smaller
LIKELY_QUANTILE = 0.01
LIKELY_Z = 2.326  # the normal distribution's 1% point
NULL_DRAWS = 4096


@dataclass(frozen=True)
class Calibration:
    """Distances of sampled random pairs, per attribute (columns of `pairs`)."""

    attributes: tuple[str, ...]
    fingerprints: dict[str, str]
    images: int
    pairs: np.ndarray  # (p, len(attributes)) float32 raw distances

    def covers(self, attributes: Sequence[str]) -> bool:
        return all(a in self.attributes for a in attributes)

    def column(self, attribute: str) -> np.ndarray:
        return self.pairs[:, self.attributes.index(attribute)]

    def calibrate(self, attribute: str, distances: np.ndarray) -> np.ndarray:
        """Raw 0..100 distances -> 100 x the share of random pairs at most this far."""
        sample = np.sort(self.column(attribute).astype(np.float64))
        n = len(sample)
        xs = np.concatenate([[0.0], sample, [100.0]])
        ys = np.concatenate([[0.0], (np.arange(n) + 0.5) / n, [1.0]])
        xs = np.maximum.accumulate(xs)  # sample values of 0 or 100 keep the curve monotone
        return 100.0 * np.interp(np.asarray(distances, np.float64), xs, ys)

    def apply(self, distances: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {name: self.calibrate(name, d) for name, d in distances.items()}

    def fuse(self, distances: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
        """Calibrated fusion: each attribute's share of closer random pairs as a normal score
        (probit), weighted mean, back to 0..100 (Stouffer's rule). A mean of the shares
        themselves would let several middling attributes add up to a match; in probit units
        one attribute at the 0.01% tail outweighs several at the 10%."""
        from scipy.special import ndtr, ndtri  # here: it costs every CLI start 0.3-1 s

        z = sum(
            w * ndtri(np.clip(self.calibrate(name, distances[name]) / 100.0, 1e-6, 1 - 1e-6))
            for name, w in weights.items()
        )
        return 100.0 * ndtr(np.asarray(z, np.float64))

    def null_image(self, weights: Mapping[str, float], calibrated: bool) -> np.ndarray:
        """Fused scores of the sampled random pairs under `weights`."""
        raw = {name: self.column(name).astype(np.float64) for name in weights}
        return self.fuse(raw, weights) if calibrated else fuse(raw, weights)

    def to_meta(self) -> dict[str, Any]:
        return {
            "attributes": list(self.attributes),
            "fingerprints": self.fingerprints,
            "images": self.images,
            "pairs": base64.b64encode(self.pairs.astype("<f4").tobytes()).decode("ascii"),
            "made_at": time.time(),
        }

    @classmethod
    def from_meta(cls, data: Mapping[str, Any]) -> Calibration:
        attributes = tuple(data["attributes"])
        flat = np.frombuffer(base64.b64decode(data["pairs"]), "<f4")
        return cls(
            attributes,
            dict(data["fingerprints"]),
            int(data["images"]),
            flat.reshape(-1, len(attributes)).copy(),
        )


def sample_pairs(
    indexes: Mapping[str, AttributeIndex], seed: int = 0
) -> tuple[np.ndarray, int] | None:
    """(pairs x attributes) raw distances between random stored images, and the pool size."""
    pool = None
    for index in indexes.values():
        pool = index.ids if pool is None else np.intersect1d(pool, index.ids, True)
    if pool is None or len(pool) < MIN_IMAGES:
        return None
    rng = np.random.default_rng(seed)
    anchors = rng.choice(pool, min(ANCHORS, len(pool)), replace=False)
    columns = []
    for index in indexes.values():
        rows = index.rows(anchors)
        values = []
        for k, anchor in enumerate(anchors):
            partners = np.random.default_rng(seed + k + 1).choice(
                pool, min(PARTNERS + 1, len(pool)), replace=False
            )
            partners = np.sort(partners[partners != anchor][:PARTNERS])
            values.append(index.distances(rows[k], partners))
        columns.append(np.concatenate(values))
    return np.stack(columns, axis=1).astype(np.float32), len(pool)


class CalibrationStore:
    """The collection's calibration: read from the catalog, made or refreshed when needed."""

    def __init__(
        self,
        catalog: Catalog,
        index: Callable[[str], AttributeIndex],
        attributes: Callable[[], Sequence[str]],
    ):
        self.catalog = catalog
        self.index = index
        self.attributes = attributes
        self._cached: tuple[Any, Calibration | None] | None = None
        self._answer: tuple[Any, tuple[str, ...], Calibration | None] | None = None

    def get(self, wanted: Sequence[str]) -> Calibration | None:
        """A current calibration covering `wanted` (made now if missing or out of date)."""
        token = self.catalog.change_token()
        answer = self._answer  # same catalog, same question: same answer, no index touched
        if answer is not None and answer[0] == token and answer[1] == tuple(wanted):
            return answer[2]
        made = self._get(wanted)
        self._answer = (token, tuple(wanted), made)
        return made

    def _get(self, wanted: Sequence[str]) -> Calibration | None:
        names = list(self.attributes())
        indexes = {name: self.index(name) for name in names}
        fingerprints = {name: ix.spec.fingerprint for name, ix in indexes.items()}
        size = min((len(ix) for ix in indexes.values()), default=0)
        token = self.catalog.change_token()
        if self._cached is None or self._cached[0] != token:
            stored = self.catalog.get_meta(META_KEY)
            self._cached = (token, None if stored is None else Calibration.from_meta(stored))
        current = self._cached[1]
        if current is not None and self._fresh(current, fingerprints, size, wanted):
            return current
        if size < MIN_IMAGES:
            return None
        sampled = sample_pairs(indexes)
        if sampled is None:
            return None
        pairs, pool = sampled
        made = Calibration(tuple(names), fingerprints, pool, pairs)
        self.catalog.set_meta(META_KEY, made.to_meta())
        self._cached = (self.catalog.change_token(), made)
        return made

    @staticmethod
    def _fresh(
        calibration: Calibration, fingerprints: Mapping[str, str], size: int, wanted: Sequence[str]
    ) -> bool:
        grown = size / max(calibration.images, 1)
        return (
            calibration.covers(wanted)
            and all(calibration.fingerprints.get(n) == fingerprints.get(n) for n in wanted)
            and 1.0 / REFRESH_FACTOR < grown < REFRESH_FACTOR
        )


def likely_cut(
    image_null: tuple[np.ndarray, np.ndarray] | None,
    other_parts: Mapping[str, np.ndarray],
    mix: Mapping[str, float],
    seed: int = 0,
) -> float | None:
    """The score below which a hit beats all but LIKELY_QUANTILE of unrelated images.

    `image_null`: fused image-part scores of the random pairs, (as ranked, raw) (None without
    a calibration); `other_parts`: each other part's distances to every stored image (random
    images are drawn from them). Pairs that are exceptional themselves on the raw scale
    (below median - z x 1.4826 MAD: near-duplicates among the random pairs) are left out of
    the null before its quantile is taken."""
    if "image" in mix and image_null is None:
        return None
    draws = NULL_DRAWS if image_null is None else len(image_null[0])
    picks = {
        name: np.random.default_rng(seed + n).integers(0, len(values), draws)
        for n, (name, values) in enumerate(other_parts.items())
        if len(values)
    }
    totals = []
    for column in (0, 1):
        total = np.zeros(draws)
        for name, weight in mix.items():
            if name == "image":
                values = image_null[column]  # type: ignore[index]
            elif name in picks:
                values = np.asarray(other_parts[name], np.float64)[picks[name]]
            else:
                return None
            total += weight * values
        totals.append(total)
    ranked, raw = totals
    median = float(np.median(raw))
    spread = 1.4826 * float(np.median(np.abs(raw - median)))
    ordinary = raw >= median - LIKELY_Z * spread
    return float(np.quantile(ranked[ordinary], LIKELY_QUANTILE))
