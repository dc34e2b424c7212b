"""Zero-shot text through the classifier (ConSE, Norouzi et al. 2014).

The CNN's classifier knows 1000 ImageNet classes; a text query names anything. ConSE places
every image in the sentence model's space as the convex combination of the embeddings of its
most probable class names, weighted by their probabilities (divided by how often the classifier
says each class in this collection, see `ZeroShot.class_prior`), and ranks images by the cosine
between that point and the query's embedding. "ankle boot" then finds images the classifier
calls "cowboy boot" or "clog" even though no tag says "ankle boot", and no floor decides which
classes count: every image gets a score.

Ingest keeps, beside the deep signature, each image's top `TOP_CLASSES` class indices and
probabilities (a small pseudo-signature `CLASSES_SIGNATURE`, versioned with the deep
extractor); the class names are embedded once per collection and kept in the catalog.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

TOP_CLASSES = 10  # ConSE's T: the paper found 10 best; beyond it the tail is noise
CLASSES_SIGNATURE = "deep:classes"  # not an attribute: nothing searches or weighs it directly
_VERSION_TAG = "classes1"
# Cosine (sentence space) at or below which a zero-shot match counts as no match (distance 100).
# Measured with all-MiniLM-L6-v2 on ImageNet class names: unrelated names ~0.1-0.3.
COS_FLOOR = 0.1
NUM_CLASSES = 1000
PRIOR_PSEUDO_IMAGES = 10  # a small collection's prior leans on uniform predictions


def classes_version(deep_version: str) -> str:
    """The pseudo-signature is only as current as the deep extractor that made it."""
    return f"{deep_version};{_VERSION_TAG}"


def class_signature(probabilities: np.ndarray, top: int = TOP_CLASSES) -> np.ndarray:
    """(n, classes) softmax rows -> (n, 2 * top) float32: top class indices, then their
    probabilities, best first (indices are exact in float32 below 2**24)."""
    probs = np.atleast_2d(np.asarray(probabilities, dtype=np.float32))
    order = np.argsort(-probs, axis=1, kind="stable")[:, :top]
    taken = np.take_along_axis(probs, order, axis=1)
    return np.concatenate([order.astype(np.float32), taken], axis=1)


def split_signature(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 2 * top) -> class indices (n, top) int64 and probabilities (n, top) float32."""
    top = matrix.shape[1] // 2
    return matrix[:, :top].astype(np.int64), matrix[:, top:].astype(np.float32)


@functools.cache
def class_phrases() -> tuple[str, ...]:
    """One phrase per ImageNet class: its English synonyms ("jersey, t-shirt, tee shirt")."""
    from lookalike.features.deep import _imagenet_labels
    from lookalike.tags import label_synonyms

    return tuple(", ".join(label_synonyms(label)) or label for label in _imagenet_labels())


@dataclass
class ZeroShot:
    """ConSE scorer over one snapshot of the images' top classes: ImageNet's (the stored class
    signatures) or, once `adapt` has learned them, the user's labelled classes."""

    ids: np.ndarray  # (n,) image ids
    classes: np.ndarray  # (n, top) class indices into `phrases`
    probabilities: np.ndarray  # (n, top)
    phrases: tuple[str, ...] = ()  # class names; empty: ImageNet's (class_phrases())
    discount_prior: bool = True

    @classmethod
    def from_matrix(cls, ids: np.ndarray, matrix: np.ndarray) -> ZeroShot:
        classes, probabilities = split_signature(matrix)
        return cls(np.asarray(ids, dtype=np.int64), classes, probabilities)

    def class_prior(self) -> np.ndarray:
        """How often the classifier says each class in this collection (mean probability over
        the stored top classes), smoothed by PRIOR_PSEUDO_IMAGES of uniform predictions.

        Dividing by it discounts what the classifier says of everything here: Fashion-MNIST's
        small grey pictures are all "pedestal" or "bolo tie" to an ImageNet model, and those
        classes would otherwise pull every image alike (P@10 of the class names 0.23 -> 0.35)."""
        count = len(self._phrases())
        total = np.zeros(count)
        np.add.at(total, self.classes.ravel(), self.probabilities.ravel())
        uniform = PRIOR_PSEUDO_IMAGES / count
        return (total + uniform) / (len(self.ids) + PRIOR_PSEUDO_IMAGES)

    def used_phrases(self) -> list[str]:
        """The class phrases of the classes that occur among the images' top classes."""
        phrases = self._phrases()
        return [phrases[c] for c in np.unique(self.classes)]

    def _phrases(self) -> tuple[str, ...]:
        return self.phrases or class_phrases()

    def distances(self, text: str, embed: Callable[[Sequence[str]], np.ndarray]) -> np.ndarray:
        """0..100 from `text` to every image: 100 * (1 - cos) / (1 - COS_FLOOR), clipped.

        Only the classes that occur among the images' top classes are embedded; `embed` sees
        every text through the expansion TEMPLATE ("a photo of ..."), like keyword expansion,
        so a catalog-backed embedder (`query.text.stored_embedder`) keeps the class vectors."""
        from lookalike.query.expansion import TEMPLATE

        if not len(self.ids):
            return np.zeros(0)
        used = np.unique(self.classes)
        texts = [TEMPLATE.format(p.lower()) for p in self.used_phrases()]
        names = _normalise(embed(texts))
        query = _normalise(embed([TEMPLATE.format(text.lower())]))[0]
        position = np.searchsorted(used, self.classes)
        weights = self.probabilities
        if self.discount_prior:
            weights = weights / self.class_prior()[self.classes]
        weights = weights / np.maximum(weights.sum(1, keepdims=True), 1e-12)
        # The convex combination itself (ConSE), then its cosine with the query.
        points = np.einsum("nt,ntd->nd", weights, names[position])
        cos = _normalise(points) @ query
        return np.clip(100.0 * (1.0 - cos) / (1.0 - COS_FLOOR), 0.0, 100.0)


def _normalise(vectors: np.ndarray) -> np.ndarray:
    v = np.asarray(vectors, dtype=np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def load_zero_shot(catalog: Any, deep: Any) -> ZeroShot | None:
    """The ConSE scorer over the catalog's current class signatures; None when the deep
    attribute has no classifier or no image has a class signature yet."""
    if deep is None or not getattr(deep, "has_classifier", False):
        return None
    ids, matrix = catalog.signature_matrix(
        CLASSES_SIGNATURE, classes_version(deep.version), 2 * TOP_CLASSES
    )
    return ZeroShot.from_matrix(ids, matrix) if len(ids) else None


LABEL_TEMPERATURE = 0.05  # softmax over cosines to the user's class centroids


def labelled_zero_shot(
    ids: np.ndarray, vectors: np.ndarray, centroids: np.ndarray, names: Sequence[str]
) -> ZeroShot:
    """ConSE over the user's own classes (learned by `adapt`): each image's probabilities are
    a softmax of its cosines to the class centroids in the adapted deep space, so a text query
    naming a label ("sandal") or something near it in meaning finds that class's images."""
    cos = _normalise(vectors) @ _normalise(centroids).T
    logits = (cos - cos.max(axis=1, keepdims=True)) / LABEL_TEMPERATURE
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    top = min(TOP_CLASSES, len(names))
    classes, probabilities = split_signature(class_signature(probs, top))
    return ZeroShot(np.asarray(ids, np.int64), classes, probabilities, tuple(names), False)
