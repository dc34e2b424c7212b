"""Synthetic signatures with the structure of real collections, written to a catalog in bulk.

Images come in scenes (clusters of uneven size) and, inside a scene, in tight groups of
near-duplicates; every attribute of an image is drawn around its scene's prototype, so the
attributes agree the way they do on photos. Histogram attributes are sparse Dirichlet
prototypes with multiplicative noise, renormalised per block; the perceptual index matrix
flips a share of its cells; the deep part is like a CNN's pooled embedding: a shared mean
direction (unrelated photos have cosine 0.2-0.5), an anisotropic spread (a few directions carry
most variance), non-negative (ReLU), unit length.

`bulk_insert` adds them through `Collection.add_vectors` in large transactions (no decoding),
for benchmarks and tests of big collections.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from lookalike.api import Collection
from lookalike.features.registry import CLASSIC_ATTRIBUTES

DEEP_DIM = 1280
RANK = 160  # directions of the deep part that carry structure (plus a little isotropic noise)
SCENE_SIZE = 60  # images per scene on average (8 sub-groups of near-alike images each)


def _blocks(extractor) -> list[int]:
    """Histogram blocks of an attribute, summing to its width."""
    if hasattr(extractor, "blocks"):
        return list(extractor.blocks)
    if hasattr(extractor, "cell_dim"):
        return [extractor.cell_dim] * (extractor.dim // extractor.cell_dim)
    return [extractor.dim]


class Generator:
    """Deterministic: image i always gets the same vectors for a given seed and size."""

    TABLE = 4096  # shared offsets of near-duplicate groups (scene x sub-group), by hash

    def __init__(self, collection: Collection, n: int, seed: int = 7):
        self.n = n
        self.seed = seed
        self.extractors = collection.extractors
        rng = np.random.default_rng(seed)
        scenes = max(1, n // SCENE_SIZE)
        sizes = rng.pareto(1.5, scenes) + 1.0
        self.scene_of = rng.choice(scenes, n, p=sizes / sizes.sum())
        self.group_of = (self.scene_of * 8 + rng.integers(0, 8, n)) % self.TABLE
        self.prototypes: dict[str, np.ndarray] = {}
        self.offsets: dict[str, np.ndarray] = {}
        for name, ex in self.extractors.items():
            if name == "deep":
                # a few directions dominate (1/(1+d/20)): the top RANK carry the structure
                spectrum = 1.0 / (1.0 + np.arange(RANK) / 20.0)
                basis, _ = np.linalg.qr(rng.standard_normal((DEEP_DIM, RANK)))
                self.deep_basis = (basis * spectrum[None, :]).astype(np.float32)
                self.deep_mean = (0.12 * np.abs(rng.standard_normal(DEEP_DIM))).astype(np.float32)
                z = rng.standard_normal((scenes, RANK)).astype(np.float32)
                self.prototypes[name] = z @ self.deep_basis.T
                g = rng.standard_normal((self.TABLE, RANK)).astype(np.float32)
                self.offsets[name] = g @ self.deep_basis.T
            elif name == "perceptual":
                hist = rng.dirichlet(np.full(11, 0.3), scenes).astype(np.float32)
                cells = rng.integers(0, 11, (scenes, 256)).astype(np.float32)
                self.prototypes[name] = np.concatenate([hist, cells], axis=1)
                self.offsets[name] = rng.gamma(2.0, 0.5, (self.TABLE, 11)).astype(np.float32)
            else:
                parts = [rng.dirichlet(np.full(b, 0.4), scenes) for b in _blocks(ex)]
                self.prototypes[name] = np.concatenate(parts, axis=1).astype(np.float32)
                self.offsets[name] = rng.gamma(2.0, 0.5, (self.TABLE, ex.dim)).astype(np.float32)

    def chunk(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Signatures of images start..stop-1 (0-based) for every attribute."""
        rng = np.random.default_rng((self.seed, start))
        scenes, groups = self.scene_of[start:stop], self.group_of[start:stop]
        out: dict[str, np.ndarray] = {}
        m = stop - start
        for name, ex in self.extractors.items():
            proto, offset = self.prototypes[name][scenes], self.offsets[name][groups]
            if name == "deep":
                noise = rng.standard_normal((m, RANK)).astype(np.float32) @ self.deep_basis.T
                flat = rng.standard_normal((m, DEEP_DIM), dtype=np.float32) * 0.02
                x = np.maximum(self.deep_mean + proto + 0.3 * offset + 0.35 * noise + flat, 0.0)
                out[name] = x / np.linalg.norm(x, axis=1, keepdims=True)
            elif name == "perceptual":
                hist = proto[:, :11] * offset * rng.gamma(4.0, 0.25, (m, 11)).astype(np.float32)
                hist /= np.maximum(hist.sum(axis=1, keepdims=True), 1e-12)
                cells = proto[:, 11:].copy()
                flip = rng.random(cells.shape) < 0.12
                cells[flip] = rng.integers(0, 11, int(flip.sum()))
                out[name] = np.concatenate([hist, cells], axis=1).astype(np.float32)
            else:
                x = proto * offset * rng.gamma(3.0, 1 / 3.0, proto.shape).astype(np.float32)
                edges = np.cumsum([0, *_blocks(ex)])
                for a, b in zip(edges[:-1], edges[1:], strict=True):
                    x[:, a:b] /= np.maximum(x[:, a:b].sum(axis=1, keepdims=True), 1e-12)
                out[name] = x.astype(np.float32)
        return out


def bulk_insert(
    collection: Collection, n: int, *, seed: int = 7, chunk: int = 5_000
) -> Iterator[int]:
    """Add n synthetic images through `Collection.add_vectors` (metadata: `shard` = index %
    100, `scene`); yields the number written after each transaction."""
    gen = Generator(collection, n, seed)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        collection.add_vectors(
            [f"synthetic://{i + 1}" for i in range(start, stop)],
            gen.chunk(start, stop),
            [{"shard": (i + 1) % 100, "scene": int(gen.scene_of[i])} for i in range(start, stop)],
        )
        yield stop


def make_collection(path, n: int, *, deep: bool = True, seed: int = 7) -> Collection:
    """A new collection of n synthetic images of the default attribute set."""
    attributes = list(CLASSIC_ATTRIBUTES) + (["deep"] if deep else [])
    coll = Collection.create(path, attributes=attributes)
    for _ in bulk_insert(coll, n, seed=seed):
        pass
    return coll
