"""A collection kept on a Milvus server: the `Collection` API for `milvus://host:port/name`.

`Collection.open` / `create` hand a store URI here; everything a user does with a folder
collection's images works the same: add (folders, files, URLs; in local processes or on a
Dask cluster), add_vectors, update metadata, remove, get, search by example with weights,
filters, threshold and top-k. Extraction is the embedded backend's own code (the same
extractors and settings), and so is scoring: Milvus proposes candidates per attribute (HNSW,
filtered inside Milvus by the translated filter), then every candidate's raw signature comes
back and is scored with the extractors' exact 0..100 distances, filtered exactly by the filter
language's own evaluator, fused and ranked as the planner ranks. Queries with other parts
(text, sketch, layout, colours, alone or with an example image) go through the planner
itself, with this module's two stages as its image stage: colour parts score every image's
perceptual signature (read in one scan), text parts the catalog's full-text rows rebuilt in
memory from the stored keywords and metadata (store/text_snapshot.py) plus, with the deep
classifier, ConSE zero-shot over the class lists kept in the deep rows; so the hits and scores
are the folder backend's. What a folder collection does and this one does not (check, tune,
whiten, adapt, duplicates, feedback) is a one-line error (`NotOnMilvus`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from lookalike import ingest
from lookalike.api import Collection, creation_settings, query_defaults
from lookalike.bulk import validate_vectors
from lookalike.decode import Preprocess, read_source_bytes
from lookalike.errors import CollectionError, DecodeError, LookalikeError
from lookalike.features.base import Extractor
from lookalike.index.attribute import in_sorted
from lookalike.query.milvus_filter import MilvusFilter, quote, translate
from lookalike.query.parts import PerceptualRows
from lookalike.query.plan import ImagePart, Planner, PlanSources, Ranking, SearchResults
from lookalike.query.understand import read_query_box
from lookalike.scoring import check_threshold, fuse, normalise_weights
from lookalike.store.backend import StoreAddress, parse_store_uri
from lookalike.store.catalog import ImageRecord, _user_keywords
from lookalike.store.milvus import (
    MAX_LIMIT,
    RECORD_FIELDS,
    AttributeLayout,
    MilvusStore,
    decode_vectors,
    image_id_for,
)
from lookalike.store.text_snapshot import TextSnapshot

DEFAULT_CANDIDATES = 10  # candidates per attribute = this x k (as the embedded planner)
WRITE_BATCH = 64


class NotOnMilvus(CollectionError, AttributeError):
    """A folder collection's operation this backend lacks: a one-line error for the CLI, and
    still an AttributeError for `hasattr` / `getattr(..., default)`."""


class _MilvusPlanner(Planner):
    """The planner with a Milvus image stage: `image_part(signature, weights, k, extra,
    exact)` searches Milvus inside the query's filter (see MilvusCollection._image_part)."""

    def __init__(self, sources: PlanSources, image_part: Any):
        super().__init__(sources)
        self._milvus_image_part = image_part

    def image_part(
        self,
        signature: Mapping[str, np.ndarray],
        weights: Mapping[str, float],
        *,
        k: int | None,
        allowed: np.ndarray | None = None,
        extra: Sequence[np.ndarray] = (),
        effort: int | None = None,
        exact: bool = False,
    ) -> ImagePart:
        ids, distances, plan = self._milvus_image_part(signature, weights, k, extra, exact)
        if allowed is not None:  # already inside the filter; the planner's own guarantee
            keep = in_sorted(allowed, ids)  # allowed: ascending, as the planner takes it
            ids, distances = ids[keep], {n: d[keep] for n, d in distances.items()}
        return ImagePart(ids, distances, plan == "exact")


class MilvusCollection:
    """The Collection API over a Milvus server (see the module doc)."""

    # Extraction is shared with the folder backend: the same code, not a copy of it.
    _settings = Collection._settings
    _describe_one = Collection._describe_one
    _key = staticmethod(Collection._key)
    search = Collection.search

    def __init__(self, store: MilvusStore, settings: Mapping[str, Any]):
        self.store = store
        self.address: StoreAddress = store.address
        self.attributes: dict[str, dict[str, Any]] = dict(settings["attributes"])
        self.preprocess = Preprocess.from_dict(settings["preprocess"])
        self.default_weights: dict[str, float] = dict(settings["default_weights"])
        self.max_pixels: int = int(settings["max_pixels"])
        self.tag_floor: float = float(settings["tag_floor"])
        self._extractors = ingest.build_extractors(self.attributes)
        self.layouts = {
            name: AttributeLayout(name, ex.version, ex.dim, ex.index_space())
            for name, ex in self._extractors.items()
        }
        self._sources = PlanSources(
            catalog=self,  # type: ignore[arg-type]  # the ranking reads records (get_many)
            index=None,  # type: ignore[arg-type]  # the image stage is _image_part's
            prepare_query=None,  # type: ignore[arg-type]
            candidates=lambda: self.candidates,
            perceptual=self._perceptual,
            text_distances=self._text_distances,
        )
        self._ranker = Planner(self._sources)
        self._text_vectors: dict[tuple[str, str], np.ndarray] = {}  # sentence vectors, per process
        self.candidates = DEFAULT_CANDIDATES
        self.effort: int | None = None  # HNSW ef; None: at least the number of candidates

    def __getattr__(self, name: str) -> Any:
        """What a folder collection does and this backend does not (check, whiten, tune,
        duplicates, adapt, ...) is a clear error, not an AttributeError."""
        if not name.startswith("_") and hasattr(Collection, name):
            raise NotOnMilvus(
                f"`{name}` is not available on the Milvus backend: copy the collection to a "
                "folder (`lookalike copy`) for it"
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def extractors(self) -> dict[str, Extractor]:
        return self._extractors

    @property
    def first(self) -> str:
        """The attribute whose collection answers record reads (all hold the same records)."""
        return next(iter(self.layouts))

    # -- lifecycle ------------------------------------------------------------------------------

    @classmethod
    def create(cls, uri: str | os.PathLike[str], **options: Any) -> MilvusCollection:
        store = MilvusStore(parse_store_uri(uri))
        if store.settings() is not None:
            raise CollectionError(f"a collection already exists at {store.address}")
        settings = creation_settings(**options)
        collection = cls(store, settings)
        store.create(settings, list(collection.layouts.values()))
        return collection

    @classmethod
    def open(cls, uri: str | os.PathLike[str]) -> MilvusCollection:
        store = MilvusStore(parse_store_uri(uri))
        settings = store.settings()
        if settings is None:
            store.close()
            raise CollectionError(f"no collection at {store.address}")
        return cls(store, settings)

    @classmethod
    def open_or_create(cls, uri: str | os.PathLike[str], **options: Any) -> MilvusCollection:
        store = MilvusStore(parse_store_uri(uri))
        exists = store.settings() is not None
        store.close()
        return cls.open(uri) if exists else cls.create(uri, **options)

    def drop(self) -> None:
        """Delete the collection from the server (every attribute's Milvus collection)."""
        self.store.drop(list(self.layouts))

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> MilvusCollection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing --------------------------------------------------------------------------------

    def add(
        self,
        sources: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
        *,
        recursive: bool = True,
        prune: bool = False,
        metadata: Mapping[str, Mapping[str, Any]] | None = None,
        jobs: int | None = None,
        progress: ingest.ProgressCallback | None = None,
        file_budget_s: float = ingest.FILE_BUDGET_S,
        cluster: str | None = None,
        retry_failed: bool = True,
    ) -> ingest.IngestReport:
        """Index folders, files or URLs; only new, changed or stale images are described
        (`cluster`: a Dask scheduler address or `local:N`, see lookalike.distributed).
        Described images are written at least every `ingest.COMMIT_AFTER_S` seconds.
        Failures are not remembered here: every run retries them (`retry_failed` is moot)."""
        from lookalike.distributed import describe

        if isinstance(sources, str | os.PathLike):
            sources = [sources]
        scanned = ingest.scan(sources, recursive=recursive)
        found, roots = scanned.sources, scanned.roots
        metadata = {self._key(k): dict(v) for k, v in (metadata or {}).items()}
        report = ingest.IngestReport()
        report.failed.extend(scanned.failed)
        states, current = self._file_states()
        work = ingest.plan(found, states, lambda i: i in current)
        report.failed.extend(work.failed)
        refresh: dict[int, dict[str, Any]] = {}
        for source, image_id, new_facts in work.unchanged:
            report.unchanged.append(source)
            report.ids[source] = image_id
            change: dict[str, Any] = {}
            if new_facts is not None:
                change.update(size=new_facts[0], mtime=new_facts[1])
            if source in metadata:
                change["metadata"] = metadata[source]
            if change:
                refresh[image_id] = change
        self._rewrite(refresh)
        batch: list[ingest.Extracted] = []
        oldest = 0.0

        def flush() -> None:
            ingest.finish_batch(batch, self.extractors, tag_floor=self.tag_floor)
            self._put(batch, metadata, report)
            batch.clear()

        todo = work.todo
        jobs = jobs or (os.cpu_count() or 1)
        done = 0
        for result in describe(todo, self._settings(), jobs, cluster, budget_s=file_budget_s):
            if result is not None:  # None: workers are busy, a chance to write what waits
                done += 1
                if isinstance(result, DecodeError):
                    report.failed.append((result.path, result.reason))
                else:
                    oldest = oldest if batch else time.monotonic()
                    batch.append(result)
                if progress:
                    label = result.path if isinstance(result, DecodeError) else result.source
                    progress(done, len(todo), label)
            if batch and (
                len(batch) >= WRITE_BATCH or time.monotonic() - oldest >= ingest.COMMIT_AFTER_S
            ):
                flush()
        flush()
        if prune and roots:
            keep = set(found)
            gone = [
                (image_id, path)
                for path, (image_id, *_rest) in states.items()
                if path not in keep
                and any(path.startswith(root + os.sep) for root in roots)
                and not os.path.exists(path)
            ]
            self.store.delete(list(self.layouts), [i for i, _ in gone])
            report.removed.extend(path for _, path in gone)
        return report

    def _file_states(self) -> tuple[dict[str, tuple[int, int, float, str]], set[int]]:
        """path -> (id, size, mtime, sha256), and the ids current in every attribute."""
        states: dict[str, tuple[int, int, float, str]] = {}
        for rows in self.store.scan(self.first, ["path", "size", "mtime", "sha256"]):
            states.update((r["path"], (r["id"], r["size"], r["mtime"], r["sha256"])) for r in rows)
        current: set[int] | None = None
        for name, layout in self.layouts.items():
            ids = {
                r["id"]
                for rows in self.store.scan(name, ["id"], f"version == {quote(layout.version)}")
                for r in rows
            }
            current = ids if current is None else current & ids
        return states, current or set()

    def _put(
        self,
        items: Sequence[ingest.Extracted],
        metadata: Mapping[str, Mapping[str, Any]],
        report: ingest.IngestReport,
    ) -> None:
        """Write described images: new ones added, known paths replaced (keeping their
        metadata unless new metadata is given, and their added_at)."""
        if not items:
            return
        ids = [image_id_for(item.source) for item in items]
        known = self.store.records(self.first, ids)
        now = time.time()
        rows = []
        for image_id, item in zip(ids, items, strict=True):
            old = known.get(image_id)
            if old is not None and old["path"] != item.source:
                raise LookalikeError(
                    f"{item.source} and {old['path']} have the same id {image_id}; "
                    "rename one of them"
                )
            meta = metadata.get(item.source)
            meta = dict(meta) if meta is not None else (old["metadata"] if old else {})
            rows.append(
                {
                    "id": image_id,
                    "path": item.source,
                    "size": int(item.size),
                    "mtime": float(item.mtime),
                    "sha256": item.sha256,
                    "width": int(item.width),
                    "height": int(item.height),
                    "format": item.format,
                    "added_at": old["added_at"] if old else now,
                    "updated_at": now,
                    "metadata": meta,
                    "keywords": _keywords(meta, item.auto_keywords),
                    "signatures": {n: v for n, (_, v) in item.signatures.items()},
                }
            )
        self.store.upsert(list(self.layouts.values()), rows)
        for image_id, item in zip(ids, items, strict=True):
            (report.updated if image_id in known else report.added).append(item.source)
            report.ids[item.source] = image_id

    def _rewrite(self, changes: Mapping[int, Mapping[str, Any]]) -> None:
        """Change record fields of stored images (Milvus rewrites whole rows: each attribute's
        row is read back with its raw vector and upserted with the change)."""
        if not changes:
            return
        ids = list(changes)
        now = time.time()
        for start in range(0, len(ids), WRITE_BATCH):
            chunk = ids[start : start + WRITE_BATCH]
            for layout in self.layouts.values():
                rows = self.store.full_rows(layout, chunk)
                vectors = self.store.vectors(layout, chunk)
                merged = []
                for image_id in chunk:
                    if image_id not in rows or image_id not in vectors:
                        continue
                    row = {**rows[image_id], **changes[image_id], "updated_at": now}
                    if "metadata" in changes[image_id]:
                        auto = [(k, s) for k, src, s in row["keywords"] if src != "user"]
                        row["keywords"] = _keywords(row["metadata"], auto)
                    row["signatures"] = {layout.name: vectors[image_id]}
                    merged.append(row)
                self.store.upsert([layout], merged)

    def add_vectors(
        self,
        paths: Sequence[str],
        vectors: Mapping[str, np.ndarray],
        metadata: Sequence[Mapping[str, Any] | str | None] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[int]:
        """Add images whose signatures were computed elsewhere (see Collection.add_vectors).
        Everything is validated before anything is written; paths already stored are refused.
        Milvus has no transactions: if the server fails part-way, the rows written so far stay
        (the error says so) and `lookalike copy` resumes where it stopped. `progress(done,
        total)`: images written of all, after each write of 1,000."""
        rows = validate_vectors(paths, vectors, metadata, self.extractors)
        ids = [image_id_for(p) for p in rows.paths]
        taken = self.store.records(self.first, ids)
        if taken:
            raise CollectionError(
                f"{next(iter(taken.values()))['path']} is already in the collection"
            )
        now = time.time()
        records = [
            {
                "id": image_id,
                "path": path,
                "size": 0,
                "mtime": 0.0,
                "sha256": "",
                "width": 0,
                "height": 0,
                "format": "",
                "added_at": now,
                "updated_at": now,
                "metadata": rows.metadata[i],
                "keywords": _keywords(rows.metadata[i], None),
                "signatures": {n: m[i] for n, (_, m) in rows.signatures.items()},
            }
            for i, (image_id, path) in enumerate(zip(ids, rows.paths, strict=True))
        ]
        layouts = list(self.layouts.values())
        for start in range(0, len(records), 1000):
            try:
                self.store.upsert(layouts, records[start : start + 1000])
            except LookalikeError as exc:
                raise type(exc)(f"{exc} ({start} of {len(records)} images were written)") from None
            if progress is not None:
                progress(min(start + 1000, len(records)), len(records))
        return ids

    def update(
        self,
        image: int | str,
        *,
        source: Any = None,
        metadata: Mapping[str, Any] | None = None,
        merge_metadata: bool = True,
        name: str = "upload",
    ) -> ImageRecord:
        """Change an image's metadata (replacing pixels: remove it and add the new file)."""
        record = self.get(image)
        if source is not None:
            raise CollectionError(
                "on the Milvus backend update changes metadata or re-reads the image's own "
                "file; to replace an image, remove it and add the new file"
            )
        if metadata is None:  # re-read its own file
            self._put(
                [self._describe_one(read_source_bytes(record.path), record.path)],
                {},
                ingest.IngestReport(),
            )
            return self.get(record.id)
        new = {**record.metadata, **metadata} if merge_metadata else dict(metadata)
        validate_vectors(["-"], {}, [new], {})  # the same refusal of unstorable metadata
        self._rewrite({record.id: {"metadata": new}})
        return self.get(record.id)

    def remove(self, images: Iterable[int | str] | int | str) -> int:
        if isinstance(images, int | str):
            images = [images]
        records = [self.get(image) for image in images]
        ids = list(dict.fromkeys(r.id for r in records))
        self.store.delete(list(self.layouts), ids)
        return len(ids)

    # -- reading --------------------------------------------------------------------------------

    def get(self, image: int | str) -> ImageRecord:
        """An image by id, or by path (as stored, or resolved from a relative path)."""
        candidates: list[int] = []
        if isinstance(image, int) or (isinstance(image, str) and image.isdigit()):
            candidates.append(int(image))
        if isinstance(image, str):
            candidates += [image_id_for(image), image_id_for(self._key(image))]
        found = self.store.records(self.first, candidates)
        for image_id in candidates:
            row = found.get(image_id)
            if row is not None and (
                image_id == candidates[0] or row["path"] in (image, self._key(str(image)))
            ):
                return _record(row)
        raise CollectionError(f"no image {image!r} in the collection")

    def __len__(self) -> int:
        return self.store.count(self.first)

    def info(self) -> dict[str, Any]:
        return {
            "path": str(self.address),
            "images": len(self),
            "stale": 0,
            "attributes": {
                name: {"version": ex.version, "dim": ex.dim, "options": self.attributes[name]}
                for name, ex in self.extractors.items()
            },
            "preprocess": self.preprocess.to_dict(),
            "default_weights": self.default_weights,
            "server": self.address.server,
        }

    def describe(
        self, image: Any, attributes: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """The signature of a query image: a stored image's own (id:N), or extracted."""
        wanted = list(self.extractors) if attributes is None else list(attributes)
        if isinstance(image, int) or (isinstance(image, str) and image.startswith("id:")):
            record = self.get(int(str(image).removeprefix("id:")))
            out = {}
            for name in wanted:
                found = self.store.vectors(self.layouts[name], [record.id])
                if record.id not in found:
                    raise CollectionError(
                        f"image {record.id} has no current {name} signature; re-index it"
                    )
                out[name] = found[record.id]
            return out
        return Collection.describe(self, image, wanted)  # type: ignore[arg-type]

    def export_rows(
        self, batch: int = 500
    ) -> Iterator[list[tuple[ImageRecord, dict[str, np.ndarray]]]]:
        """Every image with a current signature of each attribute, with its raw signatures,
        a batch at a time (what `lookalike copy` reads)."""
        for rows in self.store.scan(self.first, RECORD_FIELDS, batch=batch):
            ids = [r["id"] for r in rows]
            vectors = {n: self.store.vectors(layout, ids) for n, layout in self.layouts.items()}
            yield [
                (_record(r), {n: v[r["id"]] for n, v in vectors.items()})
                for r in rows
                if all(r["id"] in v for v in vectors.values())
            ]

    def present(self, paths: Sequence[str]) -> set[str]:
        """Those of `paths` that are stored here."""
        found = self.store.records(self.first, [image_id_for(p) for p in paths])
        return {r["path"] for r in found.values()} & set(paths)

    def put_rows(self, rows: Sequence[tuple[ImageRecord, Mapping[str, np.ndarray]]]) -> None:
        """Store whole images as they are (facts, metadata, keywords, raw signatures): what
        `lookalike copy` writes. Ids come from the paths here."""
        self.store.upsert(
            list(self.layouts.values()),
            [
                {
                    **{k: getattr(record, k) for k in RECORD_FIELDS if k != "id"},
                    "id": image_id_for(record.path),
                    "keywords": [list(k) for k in record.keywords],
                    "signatures": dict(signature),
                }
                for record, signature in rows
            ],
        )

    # -- searching ------------------------------------------------------------------------------

    def query(
        self,
        *,
        image: Any = None,
        text: str | None = None,
        sketch: Any = None,
        layout: str | None = None,
        colors: Any = None,
        where: str | None = None,
        weights: str | Mapping[str, float] | None = None,
        part_weights: Any = None,
        top_k: int | None = 10,
        threshold: float | str | None = None,
        exact: bool = False,
        expand: bool = False,
        more: Sequence[int | str] | None = None,
        less: Sequence[int | str] | None = None,
        calibrated: bool = False,
        understand: bool = True,
        windows: bool = False,
    ) -> SearchResults:
        """One query of any kind, or several combined, optionally filtered (see
        Collection.query). Every read of one search sees every write acknowledged before the
        search began (store.snapshot)."""
        with self.store.snapshot():
            return self._ranker.results(
                self._ranking(
                    image=image, text=text, sketch=sketch, layout=layout, colors=colors,
                    where=where, weights=weights, part_weights=part_weights, top_k=top_k,
                    threshold=threshold, exact=exact, expand=expand, more=more, less=less,
                    calibrated=calibrated, understand=understand, windows=windows,
                )
            )  # fmt: skip

    def nearest(self, image: Any = None, **query: Any) -> Ranking:
        """`query(image=image, **query)` as arrays, with no record read (Collection.nearest)."""
        options = {**query_defaults(MilvusCollection.query), **query, "image": image}
        with self.store.snapshot():
            return self._ranking(**options)

    def _ranking(
        self,
        *,
        image: Any,
        text: str | None,
        sketch: Any,
        layout: str | None,
        colors: Any,
        where: str | None,
        weights: str | Mapping[str, float] | None,
        part_weights: Any,
        top_k: int | None,
        threshold: float | str | None,
        exact: bool,
        expand: bool,
        more: Sequence[int | str] | None,
        less: Sequence[int | str] | None,
        calibrated: bool,
        understand: bool,
        windows: bool,
    ) -> Ranking:
        if expand or windows or more or less or calibrated or isinstance(threshold, str):
            raise CollectionError(
                "feedback (more/less), calibrated scores, the 'auto' threshold, expansion "
                "and query windows are not available on the Milvus backend: copy the "
                "collection to a folder (`lookalike copy`) for those"
            )
        check_threshold(threshold)
        if top_k is not None and top_k < 1:
            raise LookalikeError("top_k must be at least 1")
        understood = None
        if text and understand:  # colour and layout words become those parts, as a folder's
            text, colors, layout, understood = read_query_box(
                text, colors, layout, visual="perceptual" in self.attributes
            )
        flt = translate(where) if where else None
        explain: dict[str, Any] = {"backend": str(self.address)}
        if where:
            explain["where"] = where
            explain["milvus_filter"] = flt.expression if flt else ""  # type: ignore[union-attr]
        has_text = text is not None and bool(text.strip())
        if has_text or any(v not in (None, "") for v in (sketch, layout, colors)):
            ranking = self._planned(
                image, text, sketch, layout, colors, flt, where, weights, part_weights,
                top_k, threshold, exact,
            )  # fmt: skip
            ranking.explain.update(explain)
            if understood is not None:
                ranking.explain["understood"] = understood
            return ranking
        if image is None:
            if flt is None:
                raise LookalikeError(
                    "nothing to search for: give an image, text, a sketch, a layout, colours "
                    "or a filter"
                )
            ids = np.array(sorted(self._matching(flt)), dtype=np.int64)
            return self._select(ids, np.zeros(len(ids)), {}, {}, top_k, threshold, explain)
        weights_n = normalise_weights(weights, self.attributes, self.default_weights)
        signature = self.describe(image, list(weights_n))
        ids, distances, plan = self._image_part(signature, weights_n, top_k, flt, exact)
        explain["plan"] = plan
        explain["parts"] = {"image": 1.0}
        scores = fuse(distances, weights_n) if len(ids) else np.zeros(0)
        return self._select(ids, scores, distances, weights_n, top_k, threshold, explain)

    def _planned(
        self,
        image: Any,
        text: str | None,
        sketch: Any,
        layout: str | None,
        colors: Any,
        flt: MilvusFilter | None,
        where: str | None,
        weights: str | Mapping[str, float] | None,
        part_weights: Any,
        top_k: int | None,
        threshold: float | None,
        exact: bool,
    ) -> Ranking:
        """A query with text, sketch, layout or colour parts (and maybe an example image),
        through the planner: every part scored and fused by part weights as a folder's are;
        the image stage searches Milvus inside the filter, joined by the other parts' best."""
        allowed = None if flt is None else np.array(sorted(self._matching(flt)), np.int64)
        attribute_weights: dict[str, float] = {}
        signature = None
        if image is not None:
            attribute_weights = normalise_weights(weights, self.attributes, self.default_weights)

            def signature(names: list[str]) -> dict[str, np.ndarray]:
                return self.describe(image, names)

        def image_part(
            wanted: Mapping[str, np.ndarray],
            weighted: Mapping[str, float],
            k: int | None,
            extra: Sequence[np.ndarray],
            exact: bool,
        ) -> tuple[np.ndarray, dict[str, np.ndarray], str]:
            return self._image_part(wanted, weighted, k, flt, exact, extra)

        return _MilvusPlanner(self._sources, image_part).ranking(
            signature=signature, attribute_weights=attribute_weights, text=text, sketch=sketch,
            layout=layout, colors=colors, allowed=allowed, where=where, part_weights=part_weights,
            top_k=top_k, threshold=threshold, exact=exact,
        )  # fmt: skip

    def _zero_shot(self) -> Any:
        """The ConSE scorer over the stored class signatures (kept in the `deep` rows), as a
        folder's `load_zero_shot`; None without a classifier or before any image has one."""
        from lookalike.query.zeroshot import CLASSES_SIGNATURE, ZeroShot

        deep = self.extractors.get("deep")
        if deep is None or not getattr(deep, "has_classifier", False):
            return None
        ids, matrix = self.store.side_matrix(self.layouts["deep"], CLASSES_SIGNATURE)
        return ZeroShot.from_matrix(ids, matrix) if len(ids) else None

    def _text_distances(self, text: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """The text part: the folder's own scoring (`query.text.text_match`) over the full-text
        rows of every image, rebuilt from its stored keywords and metadata in one scan."""
        from lookalike.query.text import text_match

        rows = (
            (r["id"], r["metadata"] or {}, r["keywords"])
            for batch in self.store.scan(self.first, ["metadata", "keywords"])
            for r in batch
        )
        snapshot = TextSnapshot(rows, self._text_vectors)
        try:
            match = text_match(snapshot, text, zero_shot=self._zero_shot())  # type: ignore[arg-type]
        finally:
            snapshot.close()
        return match.ids, match.distances, match.explain

    def _perceptual(self) -> PerceptualRows:
        """Every image with a current perceptual signature, its term histogram and 16x16
        index matrix (read in one scan, put in id order): what the planner scores sketch,
        layout and colour queries on."""
        if "perceptual" not in self.layouts:
            return Collection._perceptual(self)  # type: ignore[arg-type]  # its refusal
        from lookalike.features.perceptual import split_perceptual

        layout = self.layouts["perceptual"]
        ids: list[int] = []
        texts: list[str] = []
        current = f"version == {quote(layout.version)}"
        for rows in self.store.scan("perceptual", ["exact"], current):
            ids.extend(int(r["id"]) for r in rows)
            texts.extend(r["exact"] for r in rows)
        hists, matrices = split_perceptual(decode_vectors(texts, layout.dim))
        return PerceptualRows.of(np.array(ids, np.int64), hists, matrices)  # put in id order

    def _versioned(self, layout: AttributeLayout, flt: MilvusFilter | None) -> str:
        current = f"version == {quote(layout.version)}"
        return f"{current} and ({flt.expression})" if flt and flt.expression else current

    def _matching(self, flt: MilvusFilter) -> list[int]:
        """Ids of every image the filter admits (Milvus narrows, the evaluator decides)."""
        if flt.nothing:
            return []
        out = []
        for rows in self.store.scan(self.first, [], flt.expression):
            records = (
                self.store.records(self.first, [r["id"] for r in rows]) if not flt.exact else None
            )
            for row in rows:
                if records is None or flt.admits(_filter_record(records[row["id"]])):
                    out.append(int(row["id"]))
        return out

    def _image_part(
        self,
        signature: Mapping[str, np.ndarray],
        weights: Mapping[str, float],
        k: int | None,
        flt: MilvusFilter | None,
        exact: bool,
        extra: Sequence[np.ndarray] = (),
    ) -> tuple[np.ndarray, dict[str, np.ndarray], str]:
        """Stage one (candidates from Milvus, joined by `extra`: a hybrid's other parts' best
        images) and stage two (exact distances on them)."""
        if flt is not None and flt.nothing:
            return np.zeros(0, np.int64), {n: np.zeros(0) for n in weights}, "none"
        layouts = {name: self.layouts[name] for name in weights}
        if exact or k is None:
            return (*self._distances(signature, layouts, self._all_current(layouts, flt)), "exact")
        limit = k * self.candidates
        while True:
            found = {
                name: self.store.search(
                    layout, signature[name], limit, self._versioned(layout, flt), self.effort
                )
                for name, layout in layouts.items()
            }
            ids = np.unique(np.concatenate([*(f[0] for f in found.values()), *extra]))
            ids = self._admitted(ids, flt)
            exhausted = all(len(f[0]) < limit for f in found.values())
            if len(ids) >= k or exhausted or limit >= MAX_LIMIT:
                break
            limit = min(MAX_LIMIT, limit * 4)  # the filter's exact check dropped too many
        known = {name: f[1] for name, f in found.items()}
        return (*self._distances(signature, layouts, ids, known), "candidates")

    def _admitted(self, ids: np.ndarray, flt: MilvusFilter | None) -> np.ndarray:
        if flt is None or flt.exact or not len(ids):
            return ids
        records = self.store.records(self.first, [int(i) for i in ids])
        keep = [i for i in ids if int(i) in records and flt.admits(_filter_record(records[int(i)]))]
        return np.array(keep, dtype=np.int64)

    def _all_current(
        self, layouts: Mapping[str, AttributeLayout], flt: MilvusFilter | None
    ) -> np.ndarray:
        ids: np.ndarray | None = None
        for name, layout in layouts.items():
            found = np.array(
                [
                    r["id"]
                    for rows in self.store.scan(name, [], self._versioned(layout, flt))
                    for r in rows
                ],
                dtype=np.int64,
            )
            ids = np.unique(found) if ids is None else np.intersect1d(ids, found)
        assert ids is not None
        return self._admitted(ids, flt)

    def _distances(
        self,
        signature: Mapping[str, np.ndarray],
        layouts: Mapping[str, AttributeLayout],
        ids: np.ndarray,
        known: Mapping[str, Mapping[int, np.ndarray]] | None = None,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Exact 0..100 distances per attribute, with the extractors' own distance functions,
        for those of `ids` that have a current vector of every attribute (returned ids).
        `known`: vectors already at hand (a search returns its hits'); the rest are read."""
        wanted = [int(i) for i in ids]
        vectors = {}
        for name, layout in layouts.items():
            have = (known or {}).get(name, {})
            vectors[name] = {i: have[i] for i in wanted if i in have}
            missing = [i for i in wanted if i not in have]
            if missing:
                vectors[name].update(self.store.vectors(layout, missing))
        keep = np.array([i for i in wanted if all(i in v for v in vectors.values())], np.int64)
        out = {}
        for name, found in vectors.items():
            if not len(keep):
                out[name] = np.zeros(0)
                continue
            matrix = np.stack([found[int(i)] for i in keep])
            out[name] = np.asarray(self.extractors[name].distance(signature[name], matrix), float)
        return keep, out

    def _select(
        self,
        ids: np.ndarray,
        scores: np.ndarray,
        distances: Mapping[str, np.ndarray],
        weights: Mapping[str, float],
        top_k: int | None,
        threshold: float | None,
        explain: dict[str, Any],
    ) -> Ranking:
        """Top-k and threshold: the planner's own selection (records are read after)."""
        return self._ranker.select(ids, scores, distances, dict(weights), top_k, threshold, explain)

    def get_many(self, ids: Iterable[int]) -> dict[int, ImageRecord]:
        """id -> record of those of `ids` that exist (what the planner's ranking reads)."""
        return {i: _record(r) for i, r in self.store.records(self.first, list(ids)).items()}


def _keywords(
    metadata: Mapping[str, Any], auto: Iterable[tuple[str, float]] | None
) -> list[list[Any]]:
    """[(keyword, source, score)] as the catalog keeps them: the user's, then model tags."""
    user = [[k, "user", 1.0] for k in dict.fromkeys(_user_keywords(metadata))]
    return user + [[k, "model", float(s)] for k, s in (auto or [])]


def _record(row: Mapping[str, Any]) -> ImageRecord:
    return ImageRecord(
        id=int(row["id"]),
        path=row["path"],
        size=int(row["size"]),
        mtime=float(row["mtime"]),
        sha256=row["sha256"],
        width=int(row["width"]),
        height=int(row["height"]),
        format=row["format"],
        metadata=dict(row["metadata"] or {}),
        added_at=float(row["added_at"]),
        updated_at=float(row["updated_at"]),
        keywords=[(k, s, float(v)) for k, s, v in row["keywords"] or []],
    )


def _filter_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored row as the filter evaluator reads a record."""
    return {**row, "keywords": [k for k, _s, _v in row["keywords"] or []]}
