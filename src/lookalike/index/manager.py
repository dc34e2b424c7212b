"""The indexes of one collection: which kind per attribute, loading, catching up, merging.

Every search first calls `sync`: when the catalog changed (its change token moved), only the
images named in the change log since the indexes' mark are read and applied to each loaded
index's delta, so the first search after a write costs about what any search costs. Indexes
are loaded from `indexes/<attribute>/` or built from the catalog when their files are missing,
stale (another extractor version, whitening or index settings) or corrupt.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.errors import CollectionError
from lookalike.features.base import IndexSpace
from lookalike.index import source
from lookalike.index.ann import ANN_KINDS, DEFAULT_EFFORT
from lookalike.index.attribute import (
    AttributeIndex,
    AttributeSpec,
    DistanceFn,
    IndexFileError,
    RoughDistanceFn,
)
from lookalike.store.catalog import Catalog

log = logging.getLogger(__name__)

INDEX_FOLDER = "indexes"
SETTINGS_KEY = "index_settings"
KINDS = ("auto", "flat", *ANN_KINDS)
FLAT_BELOW = 50_000  # exact search answers in milliseconds below this many images
# delta rows before a merge, whatever the collection's size: every search ranks the whole
# delta exactly (full-width rows), and every write restacks it, so a delta that grew with
# the collection (it was 2% of main: 20,000 rows, ~200 MB read per search at 1M) made both
# grow with it; a merge's O(collection) part (id map, tombstones) is paid once per MERGE_AT
MERGE_AT = 2_000
REBUILD_SHARE = 0.25  # tombstones (or pending changes) as a share of main: rebuild instead
DEFAULT_CANDIDATES = 10  # candidates per attribute = this x k


@dataclass(frozen=True)
class AttributeSource:
    """What the collection knows about an attribute: its extractor and any whitening."""

    name: str
    version: str
    stored_dim: int  # width of the vectors in the catalog
    dim: int  # width after `prepare` (what the index keeps)
    distance: DistanceFn
    space: IndexSpace
    prepare: Callable[[np.ndarray], np.ndarray] | None  # e.g. whitening; None = as stored
    fingerprint: str
    rough: RoughDistanceFn | None = None  # float32 distance + error bound (features/base.py)


def default_options(kind: str, space_dim: int) -> dict[str, Any]:
    """PCA + product-quantiser sizes for IVF-PQ: about 16-32 bytes per image and attribute."""
    if kind != "ivfpq":
        return {}
    reduced = min(space_dim, 128 if space_dim >= 1024 else 64)
    reduced -= reduced % 4
    return {"pca": reduced if reduced < space_dim else None, "code_bytes": max(1, reduced // 4)}


def choose_kind(setting: str, images: int, current: str | None = None) -> str:
    """`auto`: exact below FLAT_BELOW images, IVF-PQ above (with hysteresis, so a collection
    near the border does not flip on every open)."""
    if setting != "auto":
        return setting
    if current == "ivfpq" and images >= FLAT_BELOW // 2:
        return "ivfpq"
    return "flat" if images < FLAT_BELOW else "ivfpq"


def delta_full(delta_rows: int) -> bool:
    """Whether a delta is due for its merge: at MERGE_AT rows, not a share of main."""
    return delta_rows >= MERGE_AT


class IndexSet:
    def __init__(
        self, directory: Path, catalog: Catalog, sources: Callable[[str], AttributeSource]
    ):
        self.folder = directory / INDEX_FOLDER
        self.catalog = catalog
        self.sources = sources
        self._indexes: dict[str, AttributeIndex] = {}
        self._token: object = None
        self._candidates: tuple[object, int] | None = None
        self._lock = threading.RLock()
        # around each index build (attribute, kind, images): a build reads every signature
        # (minutes at 1M), so the CLI shows what it is waiting for
        self.on_build: Callable[[str, str, int], AbstractContextManager[Any]] | None = None

    # -- settings ---------------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        stored = self.catalog.get_meta(SETTINGS_KEY, {}) or {}
        return {
            "kinds": dict(stored.get("kinds", {})),
            "options": dict(stored.get("options", {})),
            "effort": {**DEFAULT_EFFORT, **stored.get("effort", {})},
            "candidates": int(stored.get("candidates", DEFAULT_CANDIDATES)),
        }

    def candidates(self) -> int:
        """Candidates per attribute as a multiple of k (settings re-read after a change)."""
        token = self.catalog.change_token()
        if self._candidates is None or self._candidates[0] != token:
            self._candidates = (token, self.settings()["candidates"])
        return self._candidates[1]

    def configure(
        self,
        *,
        kinds: dict[str, str] | None = None,
        options: dict[str, dict[str, Any]] | None = None,
        effort: dict[str, int] | None = None,
        candidates: int | None = None,
    ) -> dict[str, Any]:
        """Change index settings (kept in the catalog); indexes follow on their next use."""
        settings = self.settings()
        for name, kind in (kinds or {}).items():
            if kind not in KINDS:
                raise CollectionError(f"unknown index kind {kind!r}; known: {', '.join(KINDS)}")
            settings["kinds"][name] = kind
        for name, opts in (options or {}).items():
            settings["options"][name] = dict(opts)
        for kind, value in (effort or {}).items():
            if int(value) < 1:
                raise CollectionError(f"effort must be at least 1, got {value}")
            settings["effort"][kind] = int(value)
        if candidates is not None:
            if candidates < 1:
                raise CollectionError(f"candidates must be at least 1, got {candidates}")
            settings["candidates"] = int(candidates)
        self.catalog.set_meta(SETTINGS_KEY, settings)
        for index in self._indexes.values():
            index.effort = settings["effort"].get(index.spec.kind, index.effort)
        return settings

    def _spec(
        self, name: str, settings: dict[str, Any], current: str | None, *, recount: bool = True
    ) -> AttributeSpec:
        """The spec an index of `name` should have; `auto` is decided again (by counting the
        images) only when opening or rebuilding, not on every catch-up."""
        src = self.sources(name)
        setting = settings["kinds"].get(name, "auto")
        if setting == "auto" and current is not None and not recount:
            kind = current
        else:
            kind = choose_kind(setting, self.catalog.count(), current)
        options = {**default_options(kind, src.space.dim), **settings["options"].get(name, {})}
        return AttributeSpec(
            name=name,
            dim=src.dim,
            fingerprint=src.fingerprint,
            distance=src.distance,
            space=src.space,
            kind=kind,
            options=options if kind != "flat" else {},
            rough=src.rough,
        )

    # -- getting an index --------------------------------------------------------------------

    def get(self, name: str) -> AttributeIndex:
        """The attribute's index, caught up with every committed write."""
        with self._lock:
            self.sync()
            index = self._indexes.get(name)
            if index is None:
                self._indexes[name] = self._open(name)
                self._catch_up([self._indexes[name]])
            return self._indexes[name]

    def loaded(self) -> dict[str, AttributeIndex]:
        return dict(self._indexes)

    def _open(self, name: str, *, force_build: bool = False) -> AttributeIndex:
        settings = self.settings()
        folder = self.folder / name
        spec = self._spec(name, settings, self._stored_kind(folder))
        index = None
        if not force_build:
            try:
                index = AttributeIndex.load(spec, folder)
            except IndexFileError:
                index = None
        if index is None:
            index = self._build(spec)
        index.effort = settings["effort"].get(spec.kind, index.effort)
        return index

    @staticmethod
    def _stored_kind(folder: Path) -> str | None:
        import json

        try:
            return json.loads((folder / "state.json").read_text()).get("kind")
        except (OSError, ValueError, AttributeError):
            return None

    def _build(self, spec: AttributeSpec) -> AttributeIndex:
        src = self.sources(spec.name)
        mark = source.change_mark(self.catalog)  # read first: later changes are replayed
        images = self.catalog.count()
        log.info("building the %s index (%s) of %s images", spec.name, spec.kind, f"{images:,}")

        def rows():
            for ids, matrix in self.catalog.signature_chunks(
                spec.name, src.version, src.stored_dim
            ):  # in bounded chunks: memory stays bounded however large the collection
                yield ids, (src.prepare(matrix) if src.prepare else matrix)

        notice = self.on_build(spec.name, spec.kind, images) if self.on_build else nullcontext()
        with notice:
            return AttributeIndex.build(spec, self.folder / spec.name, rows(), mark)

    # -- catching up -----------------------------------------------------------------------

    def sync(self) -> None:
        """Apply whatever was committed since the last call (cheap when nothing was)."""
        with self._lock:
            token = self.catalog.change_token()
            if token == self._token:
                return
            settings = self.settings()
            for name, index in list(self._indexes.items()):
                spec = self._spec(name, settings, index.spec.kind, recount=False)
                if spec.key != index.spec.key:  # new version, whitening or settings
                    self._indexes[name] = self._open(name)
            self._catch_up(list(self._indexes.values()))
            self._token = token

    def _catch_up(self, indexes: list[AttributeIndex]) -> None:
        """Bring indexes to the newest change: indexes at the same mark share one read of
        the log and one read of the changed images' vectors (all their attributes)."""
        by_mark: dict[int, list[AttributeIndex]] = {}
        for index in indexes:
            by_mark.setdefault(index.mark, []).append(index)
        for mark, group in by_mark.items():
            limit = max(MERGE_AT, int(REBUILD_SHARE * min(ix.count for ix in group)))
            ids, newest, more = source.changes_since(self.catalog, mark, limit)
            if more:  # a bulk load since the build: rebuilding is cheaper than a delta
                for index in group:
                    self._rebuild_now(index)
                continue
            if len(ids):
                sources = {ix.spec.name: self.sources(ix.spec.name) for ix in group}
                found = source.current_vectors(
                    self.catalog, ids, {name: src.version for name, src in sources.items()}
                )
                for index in group:
                    src = sources[index.spec.name]
                    vectors = found[src.name]
                    if src.prepare is not None:
                        vectors = {
                            i: (None if v is None else src.prepare(v[None, :])[0])
                            for i, v in vectors.items()
                        }
                    index.apply(vectors, newest)
            for index in group:
                self._maybe_merge(index)

    def _rebuild_now(self, index: AttributeIndex) -> AttributeIndex:
        rebuilt = self._build(index.spec)
        rebuilt.effort = index.effort
        self._indexes[index.spec.name] = rebuilt
        return rebuilt

    def _maybe_merge(self, index: AttributeIndex) -> None:
        if index.tombstones > REBUILD_SHARE * max(index.count, 1) and index.count >= MERGE_AT:
            self._rebuild_now(index)
        elif delta_full(len(index.delta)):
            index.merge()

    # -- maintenance -------------------------------------------------------------------------

    def merge(self, names: list[str] | None = None) -> None:
        """Fold every delta into its main index now (normally done past a size)."""
        with self._lock:
            for name in names or list(self._indexes):
                self.get(name).merge()

    def rebuild(self, names: list[str]) -> None:
        """Build the named indexes again from the catalog."""
        with self._lock:
            for name in names:
                self._indexes[name] = self._open(name, force_build=True)
                self._catch_up([self._indexes[name]])

    def verify(self, names: list[str]) -> dict[str, str]:
        """attribute -> problem, for index files that would be rebuilt on open (empty: fine)."""
        problems: dict[str, str] = {}
        settings = self.settings()
        for name in names:
            folder = self.folder / name
            if not folder.exists():
                continue  # never searched yet: built on first use, nothing to repair
            spec = self._spec(name, settings, self._stored_kind(folder))
            try:
                AttributeIndex.load(spec, folder)
            except IndexFileError as exc:
                problems[name] = str(exc)
        return problems

    def describe(self) -> dict[str, Any]:
        return {
            name: {
                "kind": index.spec.kind,
                "images": len(index),
                "delta": len(index.delta),
                "tombstones": index.tombstones,
                "effort": index.effort,
                "options": index.spec.options,
            }
            for name, index in self._indexes.items()
        }
