"""The public façade: a Collection you create or open, add images to, and search.

from lookalike import Collection
with Collection.open_or_create("photos.lookalike") as coll:
    coll.add(["~/Pictures"])
    for hit in coll.search("query.jpg", weights="color=0.6,texture=0.4", top_k=5):
        print(hit.score, hit.path, hit.breakdown)
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import inspect
import io
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from PIL import Image

from lookalike import ingest
from lookalike.adapt import ADAPTATION_KEY
from lookalike.calibration import CalibrationStore
from lookalike.decode import DEFAULT_MAX_PIXELS, Preprocess, is_url, read_source_bytes
from lookalike.errors import CollectionBusy, CollectionError, DecodeError, LookalikeError
from lookalike.features.base import Extractor, PreparedImage
from lookalike.features.registry import CLASSIC_ATTRIBUTES, is_available
from lookalike.features.text_tower import TextTower
from lookalike.features.whitening import (
    Whitening,
    evenly_spaced,
    fit_pca_whitening,
    whitened_distance,
    whitened_rough_distance,
    whitened_space,
)
from lookalike.index import check as _index_check  # noqa: F401  (registers `indexes` in check)
from lookalike.index.attribute import AttributeIndex, IndexChanged, in_sorted
from lookalike.index.manager import AttributeSource, IndexSet
from lookalike.query.feedback import Feedback, apply_feedback
from lookalike.query.indexkey import index_key_record, index_key_records
from lookalike.query.parts import PerceptualRows
from lookalike.query.plan import (
    PageKeys,
    Planner,
    PlanSources,
    Ranking,
    SearchResults,
    window_key,
)
from lookalike.query.plan import SearchHit as SearchHit  # re-exported: part of the API
from lookalike.query.understand import read_query_box
from lookalike.scoring import default_weights_for, normalise_weights
from lookalike.store.backend import is_store_uri
from lookalike.store.catalog import CATALOG_FILE, Catalog, FailureRecord, ImageRecord, NewImage

if TYPE_CHECKING:
    from lookalike.check import CheckReport

# Default weights, measured on copies of the sample photos and Fashion-MNIST in one run
# (bench_quality.py --weights-sweep, bench/README.md issue 12). The classic attributes keep
# their proportions (colour 0.3 : texture 0.35 : shape 0.15 : location 0.2, what a collection
# without the CNN uses) at 2/3 of the CNN's weight: with deep at half their sum (before), on an
# inset the classic colour and texture see mostly the background and outvoted the CNN (copy
# P@1 0.944 -> 0.981, 0.994 with `--windows`; Fashion-MNIST P@10 0.714 -> 0.720). Raising the CNN
# further (classic at 1/2) or deep alone found no more copies and ranked Fashion-MNIST lower.
CLASSIC_PROPORTIONS = {"color": 0.3, "texture": 0.35, "shape": 0.15, "location": 0.2}
DEEP_DEFAULT_WEIGHT = 1.0  # the CNN is the strongest single attribute on every set measured
DEFAULT_WEIGHTS = {name: w * 2 / 3 for name, w in CLASSIC_PROPORTIONS.items()}
UPLOADS = "uploads"  # folder inside a collection for originals of images added as bytes
FILTER_CACHE = 16  # filters whose matching ids are kept until the catalog changes
SEARCH_ATTEMPTS = 5  # a search that a concurrent write overtook runs again, at most this often
ImageQuery = str | os.PathLike[str] | bytes | int | np.ndarray | Image.Image
T = TypeVar("T")


ON_DUPLICATE = ("keep", "replace-metadata")  # what add_bytes does with an identical upload


def creation_settings(
    *,
    attributes: Sequence[str] | Mapping[str, Mapping[str, Any]] | None = None,
    preprocess: Preprocess | None = None,
    default_weights: Mapping[str, float] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    tag_floor: float = ingest.TAG_FLOOR,
) -> dict[str, Any]:
    """A new collection's settings, checked (any backend). Attributes default to the classic
    set, plus `deep` when PyTorch and the packaged model are installed."""
    if attributes is None:
        attributes = list(CLASSIC_ATTRIBUTES) + (["deep"] if is_available("deep") else [])
    specs = (
        {name: dict(opts) for name, opts in attributes.items()}
        if isinstance(attributes, Mapping)
        else {name: {} for name in attributes}
    )
    for name in specs:
        if not is_available(name):
            raise CollectionError(f"attribute {name!r} is unknown or its dependencies are missing")
    if default_weights is not None:
        normalise_weights(default_weights, specs, {})  # refuse bad weights before creating
        weights = dict(default_weights)
    else:
        weights = default_weights_for(specs, {**DEFAULT_WEIGHTS, "deep": DEEP_DEFAULT_WEIGHT})
    return {
        "preprocess": (preprocess or Preprocess()).to_dict(),
        "attributes": specs,
        "default_weights": weights,
        "max_pixels": int(max_pixels),
        "tag_floor": float(tag_floor),
        "created_at": time.time(),
    }


def _remote() -> Any:
    """The Milvus-backed collection class, imported only when a store URI is used."""
    from lookalike.remote import MilvusCollection

    return MilvusCollection


class AddedImage(int):
    """The id of an added image (an int: callers that want only the id use it as one) that
    also says whether the call created it (False: identical bytes were already stored)."""

    created: bool

    def __new__(cls, image_id: int, *, created: bool) -> AddedImage:
        added = super().__new__(cls, image_id)
        added.created = created
        return added

    @property
    def id(self) -> int:
        return int(self)


STAGING_PREFIX = ".creating-"  # a collection being created, inside its folder: pid-random


def _create_catalog(path: Path, settings: Mapping[str, Any]) -> None:
    """Build the catalog and its settings under a staging folder, then link the finished file
    into place: a kill at any moment leaves no catalog or a whole one, never one without
    settings (whose every search would fail). Linking never replaces a catalog that another
    process created meanwhile."""
    for stale in path.glob(STAGING_PREFIX + "*"):
        pid = stale.name.removeprefix(STAGING_PREFIX).split("-")[0]
        if pid.isdigit() and not _is_running(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=path))
    try:
        catalog = Catalog(staging, create=True)
        try:
            catalog.set_meta_many(settings)
        finally:
            catalog.close()  # the last connection to close folds the WAL into the file
        try:
            os.link(staging / CATALOG_FILE, path / CATALOG_FILE)
        except FileExistsError:
            raise CollectionError(f"a collection already exists at {path}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_unfinished(catalog: Catalog) -> bool:
    """A catalog without settings and without images: its creation was interrupted."""
    return catalog.get_meta("attributes") is None and catalog.count() == 0


@functools.cache
def query_defaults(query: Callable[..., Any]) -> dict[str, Any]:
    """A `query` method's options and their defaults, from its signature: what `nearest`
    passes for the options it is not given."""
    return {
        name: option.default
        for name, option in inspect.signature(query).parameters.items()
        if option.kind is inspect.Parameter.KEYWORD_ONLY
    }


class Collection:
    """A folder on disk: catalog.sqlite plus derived indexes. Safe to share across threads."""

    def __init__(self, directory: Path, catalog: Catalog):
        self.directory = directory
        self.catalog = catalog
        self.preprocess = Preprocess.from_dict(catalog.get_meta("preprocess", {}))
        self.attributes: dict[str, dict[str, Any]] = catalog.get_meta("attributes", {})
        self.default_weights: dict[str, float] = catalog.get_meta(
            "default_weights", DEFAULT_WEIGHTS
        )
        self.max_pixels: int = catalog.get_meta("max_pixels", DEFAULT_MAX_PIXELS)
        missing = [name for name in self.attributes if not is_available(name)]
        if missing:
            raise CollectionError(
                f"this collection uses {', '.join(missing)}, whose dependencies are not "
                "installed (deep needs: pip install 'lookalike[deep]')"
            )
        self._extractors = ingest.build_extractors(self.attributes)
        self._whitenings: dict[str, tuple[Hashable, Whitening | None]] = {}
        self._tower: TextTower | None = None
        self._perceptual_rows: tuple[Any, PerceptualRows] | None = None  # of a row snapshot
        self._searchable_kept: tuple[list[np.ndarray], np.ndarray] | None = None
        self._perceptual_main: tuple[Any, tuple[np.ndarray, np.ndarray]] | None = None  # per map
        self.indexes = IndexSet(directory, catalog, self._attribute_source)
        self.calibrations = CalibrationStore(catalog, self.index_for, lambda: list(self.attributes))
        self._filters: OrderedDict[str, tuple[Hashable, np.ndarray]] = OrderedDict()
        self._filters_lock = threading.Lock()
        self._parsed_weights: dict[tuple[Any, ...], dict[str, float]] = {}
        self.planner = Planner(
            PlanSources(
                catalog=catalog,
                index=self.index_for,
                prepare_query=self._prepare_query,
                candidates=self.indexes.candidates,
                perceptual=self._perceptual,
                text_distances=self._text_distances,
                calibration=self.calibrations.get,
                index_keys=self._index_keys,
                hit_fields=catalog.paths_and_metadata,
            )
        )
        self.tag_floor: float = catalog.get_meta("tag_floor", ingest.TAG_FLOOR)
        self._zero_shot_cache: tuple[Hashable, Any] | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        directory: str | os.PathLike[str],
        *,
        attributes: Sequence[str] | Mapping[str, Mapping[str, Any]] | None = None,
        preprocess: Preprocess | None = None,
        default_weights: Mapping[str, float] | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        tag_floor: float = ingest.TAG_FLOOR,
    ) -> Collection:
        """Make a new collection folder. Attributes default to the classic set, plus `deep`
        when PyTorch and the packaged model are installed."""
        options = dict(
            attributes=attributes,
            preprocess=preprocess,
            default_weights=default_weights,
            max_pixels=max_pixels,
            tag_floor=tag_floor,
        )
        if is_store_uri(directory):
            return _remote().create(directory, **options)  # type: ignore[return-value]
        path = Path(directory).expanduser()
        if (path / CATALOG_FILE).exists():
            raise CollectionError(f"a collection already exists at {path}")
        if path.exists() and not path.is_dir():
            raise CollectionError(f"{path} exists and is not a folder")
        settings = creation_settings(**options)  # refuses bad settings before creating
        path.mkdir(parents=True, exist_ok=True)
        _create_catalog(path, settings)
        return cls(path, Catalog(path))

    @classmethod
    def open(cls, directory: str | os.PathLike[str]) -> Collection:
        """A folder collection, or one on a server named by a store URI
        (`milvus://host:19530/name`, see docs/scale-out.md)."""
        if is_store_uri(directory):
            return _remote().open(directory)  # type: ignore[return-value]
        path = Path(directory).expanduser()
        catalog = Catalog(path)
        if _is_unfinished(catalog):
            catalog.close()
            raise CollectionError(
                f"the collection at {path} was never fully created (its creation was "
                "interrupted); run `lookalike index` on it to create it again"
            )
        return cls(path, catalog)

    @classmethod
    def open_or_create(cls, directory: str | os.PathLike[str], **create_options: Any) -> Collection:
        """Open the collection, or create it; one left unfinished by an interrupted creation
        (possible before creation became atomic) is created again."""
        if is_store_uri(directory):
            return _remote().open_or_create(directory, **create_options)  # type: ignore[return-value]
        path = Path(directory).expanduser()
        if (path / CATALOG_FILE).exists():
            catalog = Catalog(path)
            unfinished = _is_unfinished(catalog)
            catalog.close()
            if not unfinished:
                return cls.open(path)
            for name in (CATALOG_FILE, f"{CATALOG_FILE}-wal", f"{CATALOG_FILE}-shm"):
                (path / name).unlink(missing_ok=True)
        return cls.create(path, **create_options)

    def close(self) -> None:
        self.catalog.close()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- extraction settings ------------------------------------------------------------------

    def _settings(self) -> ingest.Settings:
        batch = {n for n, e in self.extractors.items() if hasattr(e, "extract_batch")}
        return ingest.Settings(
            preprocess=self.preprocess.to_dict(),
            attributes={n: o for n, o in self.attributes.items() if n not in batch},
            max_pixels=self.max_pixels,
            keep_prepared=bool(batch),
        )

    @property
    def extractors(self) -> dict[str, Extractor]:
        return self._extractors

    def _describe_one(
        self,
        data: bytes,
        label: str,
        *,
        tags: bool = True,
        attributes: Sequence[str] | None = None,
    ) -> ingest.Extracted:
        """Every attribute of one image (or just `attributes`), in this process."""
        settings = self._settings()
        extractors = self.extractors
        if attributes is not None:
            extractors = {n: e for n, e in extractors.items() if n in attributes}
            settings = dataclasses.replace(
                settings,
                attributes={n: o for n, o in settings.attributes.items() if n in attributes},
                keep_prepared=any(hasattr(e, "extract_batch") for e in extractors.values()),
            )
        item = ingest.describe_bytes(data, label, settings)
        ingest.finish_batch([item], extractors, tags=tags, tag_floor=self.tag_floor)
        return item

    # Set by a server: new image bytes are described there (its worker processes at a lower
    # CPU priority, server/describers.py), not in this process; same arguments and answer
    # as `_describe_new`.
    describe_elsewhere: Callable[..., tuple[ingest.Extracted, dict[str, np.ndarray]]] | None = None

    def _describe_new(
        self,
        data: bytes,
        label: str,
        *,
        tags: bool = True,
        attributes: Sequence[str] | None = None,
        windows: bool = False,
    ) -> tuple[ingest.Extracted, dict[str, np.ndarray]]:
        """New image bytes described (`_describe_one`), with their query windows when asked
        (`_query_windows`); in `describe_elsewhere` when set."""
        elsewhere = getattr(self, "describe_elsewhere", None)  # MilvusCollection borrows this
        if elsewhere is not None:
            return elsewhere(data, label, tags=tags, attributes=attributes, windows=windows)
        item = self._describe_one(data, label, tags=tags, attributes=attributes)
        wanted = list(self.extractors) if attributes is None else list(attributes)
        return item, Collection._query_windows(self, data, label, wanted) if windows else {}  # type: ignore[arg-type]

    def _warm_up(self) -> None:
        """Load the batch extractors' models (the CNN) now, while the workers start, so the
        first images are committed seconds after they are described, not after a load."""
        blank = PreparedImage(np.zeros((32, 32, 3), np.float32))
        for extractor in self.extractors.values():
            if hasattr(extractor, "extract_batch"):
                extractor.extract_batch([blank])  # type: ignore[attr-defined]

    def _versions(self) -> dict[str, str]:
        """attribute -> the version its extractor writes now."""
        return {name: ex.version for name, ex in self.extractors.items()}

    # -- writing ------------------------------------------------------------------------------

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
        retry_failed: bool = False,
    ) -> ingest.IngestReport:
        """Index folders, files or URLs; only new, changed or stale images are processed.

        `metadata` maps a source (as given, or its absolute path) to a metadata dict.
        With `prune`, images that were inside a scanned folder and are gone are removed.
        `jobs` worker processes (default: all cores; 1 = in this process) describe the files,
        each within `file_budget_s` seconds; a file that fails, crashes or hangs its worker
        is reported in `failed` and the run goes on. Finished images are committed at least
        every `ingest.COMMIT_AFTER_S` seconds, so a killed run keeps them. `cluster` describes
        the images on a Dask cluster instead (see lookalike.distributed).
        A file that failed is remembered with its size and mtime: while those stay, later runs
        report it (in `failed` and `not_retried`) without reading it, unless `retry_failed`.
        """
        from lookalike.distributed import describe

        if isinstance(sources, str | os.PathLike):
            sources = [sources]
        scanned = ingest.scan(sources, recursive=recursive)
        found, roots = scanned.sources, scanned.roots
        metadata = {self._key(k): dict(v) for k, v in (metadata or {}).items()}
        report = ingest.IngestReport()
        report.failed.extend(scanned.failed)
        states = self.catalog.file_states()
        stale = self.catalog.stale_images(self._versions())
        settings = self._settings()
        setup = ingest.reading_setup(
            settings, {n: e.version for n, e in self.extractors.items()}, file_budget_s
        )
        failures = self.catalog.failures()
        work = ingest.plan(
            found,
            states,
            lambda i: i not in stale,
            facts=scanned.facts,
            failures={} if retry_failed else failures,
            setup=setup,
        )
        report.failed.extend(work.failed)
        for source, reason in work.not_retried:
            report.failed.append((source, reason))
            report.not_retried.add(source)
        self._forget_stale_failures(failures, found, work)
        for source, image_id, new_facts in work.unchanged:
            if new_facts is not None:
                self.catalog.touch(image_id, *new_facts)
            report.unchanged.append(source)
            report.ids[source] = image_id
            if source in metadata:
                self.catalog.set_metadata(image_id, metadata[source], merge=False)
        todo = work.todo

        total = len(todo)
        batch = ingest.CommitBatch()
        # the CNN runs in a thread beside the workers; finished images are committed here
        stage = ingest.BatchStage(self.extractors, tag_floor=self.tag_floor)

        def store(items: list[ingest.Extracted]) -> None:
            for item in items:
                try:
                    self._store(item, metadata.get(item.source), report)
                except (UnicodeError, ValueError, OverflowError) as exc:  # this image alone
                    report.failed.append(
                        (ingest.printable_path(item.source), f"cannot be stored: {exc}")
                    )

        jobs = jobs or (os.cpu_count() or 1)
        results = describe(
            todo,
            settings,
            jobs,
            cluster,
            budget_s=file_budget_s,
            while_starting=self._warm_up,
        )
        done = 0
        with stage:
            for result in results:
                if result is not None:
                    done += 1
                    if isinstance(result, DecodeError):
                        report.failed.append((result.path, result.reason))
                        self._remember_failure(result, work.facts, setup)
                    else:
                        batch.add(result)
                if batch.due():
                    stage.submit(batch.take())
                store(stage.finished())
                if progress and result is not None:
                    label = result.path if isinstance(result, DecodeError) else result.source
                    progress(done, total, label)
            stage.submit(batch.take())
            store(stage.close())

        if prune and roots:
            keep = set(found)
            gone = [
                (image_id, path)
                for path, (image_id, *_rest) in states.items()
                if path not in keep
                and any(path.startswith(root + os.sep) for root in roots)
                and not os.path.exists(path)
            ]
            self.catalog.delete(image_id for image_id, _ in gone)
            report.removed.extend(path for _, path in gone)
        return report

    def _remember_failure(
        self, error: DecodeError, facts: Mapping[str, ingest.Facts], setup: str
    ) -> None:
        """Record a file that failed with the (size, mtime) it had before it was read."""
        if error.path in facts:
            size, mtime = facts[error.path]
            record = FailureRecord(size, mtime, setup, error.reason)
            self.catalog.record_failures([(error.path, record)])

    def _forget_stale_failures(
        self, failures: Mapping[str, FailureRecord], found: list[str], work: ingest.Plan
    ) -> None:
        """Drop the records of failed files that are gone, or that are indexed and unchanged."""
        unchanged = {source for source, _, _ in work.unchanged}
        present = set(found)
        self.catalog.forget_failures(
            path
            for path in failures
            if path in unchanged or (path not in present and not os.path.exists(path))
        )

    @staticmethod
    def _key(source: str | os.PathLike[str]) -> str:
        text = os.fspath(source)
        if is_url(text):
            return text
        return str(Path(text).expanduser().resolve())

    @staticmethod
    def _new_image(item: ingest.Extracted, metadata: Mapping[str, Any] | None) -> NewImage:
        return NewImage(
            path=item.source,
            size=item.size,
            mtime=item.mtime,
            sha256=item.sha256,
            width=item.width,
            height=item.height,
            format=item.format,
            signatures=item.signatures,
            metadata=metadata,
            auto_keywords=item.auto_keywords,
        )

    def _store(
        self,
        item: ingest.Extracted,
        metadata: Mapping[str, Any] | None,
        report: ingest.IngestReport,
    ) -> int:
        image_id, is_new = self.catalog.put_image(self._new_image(item, metadata))
        (report.added if is_new else report.updated).append(item.source)
        report.ids[item.source] = image_id
        return image_id

    def _keep_upload(self, data: bytes, name: str, item: ingest.Extracted) -> None:
        """Store uploaded bytes under uploads/ (named by content hash) and point `item` at it,
        so an upload has an original to show like any indexed file."""
        suffix = Path(name).suffix.lower()
        if suffix not in ingest.IMAGE_SUFFIXES:
            suffix = "." + item.format.lower().replace("jpeg", "jpg")
        target = self.directory / UPLOADS / f"{item.sha256[:32]}{suffix}"
        if not target.exists():
            target.parent.mkdir(exist_ok=True)
            partial = target.with_suffix(target.suffix + ".partial")
            partial.write_bytes(data)
            os.replace(partial, target)  # never a half-written original under the real name
        stat = target.stat()
        item.source, item.size, item.mtime = str(target.resolve()), stat.st_size, stat.st_mtime

    def _forget_upload(self, path: str) -> None:
        """Delete a stored upload that no image refers to any more (files of the user's own
        folders are never touched)."""
        file = Path(path)
        if file.parent == (self.directory / UPLOADS).resolve() and not self.catalog.path_in_use(
            path
        ):
            file.unlink(missing_ok=True)

    def add_bytes(
        self,
        data: bytes,
        name: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        on_duplicate: str = "keep",
    ) -> AddedImage:
        """Add an uploaded image (kept in the collection's uploads/ folder, named by its content
        hash); returns its id, an int that also says whether this call `created` the image.

        Bytes identical to a stored upload are never stored twice: the existing image's id
        comes back with `created=False`. Its metadata stays as it is (`on_duplicate="keep"`,
        the default) or is replaced by this call's (`on_duplicate="replace-metadata"`)."""
        if on_duplicate not in ON_DUPLICATE:
            raise LookalikeError(f"on_duplicate must be one of {', '.join(ON_DUPLICATE)}")
        meta = {"filename": Path(name).name, **dict(metadata or {})}
        image_id = self._stored_upload(hashlib.sha256(data).hexdigest())
        if image_id is None:
            item, _ = self._describe_new(data, name)
            self._keep_upload(data, name, item)
            image_id, created = self.catalog.put_image(
                self._new_image(item, meta), only_if_new=True
            )
            if created:
                return AddedImage(image_id, created=True)
        if on_duplicate == "replace-metadata":
            self.catalog.set_metadata(image_id, meta, merge=False)
        return AddedImage(image_id, created=False)

    def _stored_upload(self, sha256: str) -> int | None:
        """The id of the upload whose bytes hash to `sha256`, if there is one."""
        folder = (self.directory / UPLOADS).resolve()
        for image_id, path in self.catalog.images_with_hash(sha256):
            if Path(path).parent == folder:
                return image_id
        return None

    def add_vectors(
        self,
        paths: Sequence[str],
        vectors: Mapping[str, np.ndarray],
        metadata: Sequence[Mapping[str, Any] | str | None] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[int]:
        """Add images whose signatures were computed elsewhere, without decoding anything.

        `vectors` maps every attribute of the collection to a matrix with one row per path
        (searches need each image's signature in every attribute, so a subset is refused);
        `metadata` gives each image a dict (or its JSON text). Paths need no file on disk;
        paths already in the collection are refused. Everything is validated before anything
        is written, then written in one transaction: all images are added, or none.
        Returns the new ids, in the order of `paths`. `progress(done, total)`: rows written
        (an image and each of its signatures) of all, as the transaction goes."""
        from lookalike.bulk import validate_vectors

        rows = validate_vectors(paths, vectors, metadata, self.extractors)
        return self.catalog.put_imported(rows.paths, rows.signatures, rows.metadata, progress)

    def check(
        self, *, repair: bool = False, progress: Callable[[str, int, int], None] | None = None
    ) -> CheckReport:
        """Verify the collection (see `lookalike.check`); with `repair`, fix what can be.
        `progress(check, done, total)` as each check starts."""
        from lookalike.check import run_checks

        return run_checks(self, repair=repair, progress=progress)

    def update(
        self,
        image: int | str,
        *,
        source: str | os.PathLike[str] | bytes | None = None,
        metadata: Mapping[str, Any] | None = None,
        merge_metadata: bool = True,
        name: str = "upload",
    ) -> ImageRecord:
        """Replace an image's pixels and/or change its metadata; the id stays.

        `source` may be new bytes (kept under uploads/, `name` gives the suffix), another file
        or URL (the image then points at it), or None with no metadata: re-read its own file.
        """
        record = self.get(image)
        if source is not None or metadata is None:
            label = (
                record.path
                if source is None
                else self._key(name if isinstance(source, bytes) else source)
            )
            data = source if isinstance(source, bytes) else read_source_bytes(label)
            item, _ = self._describe_new(data, label)
            if isinstance(source, bytes):
                self._keep_upload(data, name, item)
            elif not is_url(label):
                stat = os.stat(label)
                item.size, item.mtime = stat.st_size, stat.st_mtime
            self.catalog.put_image(self._new_image(item, None), image_id=record.id)
            if item.source != record.path:
                self._forget_upload(record.path)
        if metadata is not None:
            self.catalog.set_metadata(record.id, metadata, merge=merge_metadata)
        return self.get(record.id)

    def remove(self, images: Iterable[int | str] | int | str) -> int:
        """Remove images by id or path (an upload's stored file goes too); how many removed."""
        if isinstance(images, int | str):
            images = [images]
        records = [self.get(image) for image in images]
        removed = self.catalog.delete(record.id for record in records)
        for record in records:
            self._forget_upload(record.path)
        return removed

    # -- reading ------------------------------------------------------------------------------

    def get(self, image: int | str) -> ImageRecord:
        """An image by id (`41` or `"41"`, or `"id:41"` as the CLI writes it), or by path (as
        stored, or resolved from a relative path)."""
        record = None
        number = image.removeprefix("id:") if isinstance(image, str) else image
        if isinstance(number, int) or number.isdigit():
            record = self.catalog.get(int(number))
        if record is None and isinstance(image, str):
            record = self.catalog.get_by_path(image) or self.catalog.get_by_path(self._key(image))
        if record is None:
            raise CollectionError(f"no image {image!r} in the collection")
        return record

    def __len__(self) -> int:
        return self.catalog.count()

    def info(self) -> dict[str, Any]:
        stale = len(self.catalog.stale_images(self._versions()))
        size = sum(f.stat().st_size for f in self.directory.iterdir() if f.is_file())
        return {
            "path": str(self.directory),
            "images": len(self),
            "stale": stale,
            "attributes": {
                name: {"version": ex.version, "dim": ex.dim, "options": self.attributes[name]}
                for name, ex in self.extractors.items()
            },
            "preprocess": self.preprocess.to_dict(),
            "default_weights": self.default_weights,
            "bytes_on_disk": size,
        }

    # -- searching ----------------------------------------------------------------------------

    def index_for(self, attribute: str) -> AttributeIndex:
        """The search index of one attribute, caught up with every committed write."""
        if attribute not in self.attributes:
            raise CollectionError(f"this collection has no {attribute!r} attribute")
        return self.indexes.get(attribute)

    def _attribute_source(self, attribute: str) -> AttributeSource:
        """What the index of `attribute` is built from: the extractor, or its whitening."""
        extractor = self.extractors[attribute]
        whitening = self._whitening(attribute)
        if whitening is None:
            distance, space, prepare, dim, tag = (
                extractor.distance,
                extractor.index_space(),
                None,
                extractor.dim,
                "raw",
            )
            rough = getattr(extractor, "rough_distance", None)
        else:
            distance, space, prepare, dim = (
                whitened_distance,
                whitened_space(whitening.dim),
                whitening.apply,
                whitening.dim,
            )
            rough = whitened_rough_distance
            tag = "whitened:" + hashlib.sha256(whitening.to_bytes()).hexdigest()[:16]
        return AttributeSource(
            name=attribute,
            version=extractor.version,
            stored_dim=extractor.dim,
            dim=dim,
            distance=distance,
            space=space,
            prepare=prepare,
            fingerprint=f"{extractor.version}|{extractor.dim}|{tag}",
            rough=rough,
        )

    def _prepare_query(self, attribute: str, vector: np.ndarray) -> np.ndarray:
        whitening = self._whitening(attribute)
        return vector if whitening is None else whitening.apply(vector[None, :])[0]

    def _whitening(self, attribute: str) -> Whitening | None:
        """The attribute's whitening, re-read from the catalog only after it has changed (the
        stored matrix is megabytes of JSON: not something to parse on every query)."""
        token = self.catalog.change_token()
        cached = self._whitenings.get(attribute)
        if cached is None or cached[0] != token:
            stored = self.catalog.get_meta(ADAPTATION_KEY.format(attribute))  # adapt wins
            stored = stored or self.catalog.get_meta(f"whitening:{attribute}")
            whitening = (
                None if stored is None else Whitening.from_bytes(base64.b64decode(stored["data"]))
            )
            cached = (token, whitening)
            self._whitenings[attribute] = cached
        return cached[1]

    def fit_whitening(self, attribute: str = "deep", dim: int | None = None) -> dict[str, Any]:
        """Learn PCA-whitening of `attribute` from this collection's own vectors and use it for
        every search from now on (stored signatures are untouched; `clear_whitening` undoes it).

        Whitening decorrelates the embedding's dimensions and damps the few directions that
        dominate every image, which usually sharpens nearest neighbours; it needs many more
        images than dimensions (pass `dim` to reduce, e.g. 128)."""
        if attribute not in self.attributes:
            raise CollectionError(f"this collection has no {attribute!r} attribute")
        extractor = self.extractors[attribute]
        version, width = extractor.version, extractor.dim
        matrix = evenly_spaced(  # at most FIT_SAMPLE vectors, streamed: memory stays bounded
            self.catalog.signature_chunks(attribute, version, width),
            self.catalog.current_signatures(attribute, version),
        )
        whitening = fit_pca_whitening(matrix, dim=dim)
        info = {"images": len(matrix), "dim": whitening.dim, "input_dim": whitening.input_dim}
        self.catalog.set_meta(
            f"whitening:{attribute}",
            {
                **info,
                "fitted_at": time.time(),
                "data": base64.b64encode(whitening.to_bytes()).decode("ascii"),
            },
        )
        return info

    def clear_whitening(self, attribute: str = "deep") -> bool:
        """Stop whitening `attribute`; True if it was whitened."""
        was = self.catalog.get_meta(f"whitening:{attribute}") is not None
        self.catalog.delete_meta(f"whitening:{attribute}")
        return was

    def adapt(self, labels: str | os.PathLike[str] | Mapping[str, str]) -> dict[str, Any]:
        """Learn from labelled examples (a folder of class folders, a CSV, or {path or "id:N":
        label}) a projection of the deep vectors and attribute weights that separate the
        labels' classes; use both from now on. Returns the held-out report. Reversible with
        `reset_adaptation`; stored signatures are untouched."""
        from lookalike.adapt import adaptation_meta, fit_adaptation, labelled_signatures

        signatures, names = labelled_signatures(self, labels)
        adaptation = fit_adaptation(signatures, names, self.extractors)
        previous = self.catalog.get_meta(ADAPTATION_KEY.format("deep"))
        self.catalog.set_meta_many(adaptation_meta(adaptation, self.default_weights, previous))
        self.default_weights = adaptation.weights
        return adaptation.report

    def reset_adaptation(self) -> bool:
        """Forget what `adapt` learned: the previous default weights and projection return."""
        stored = self.catalog.get_meta(ADAPTATION_KEY.format("deep"))
        if stored is None:
            return False
        self.catalog.set_meta("default_weights", stored["previous_weights"])
        self.catalog.delete_meta(ADAPTATION_KEY.format("deep"))
        self.default_weights = stored["previous_weights"]
        return True

    def _zero_shot(self) -> Any:
        """The ConSE scorer (over the classes learned by `adapt`, else ImageNet's), rebuilt
        after a change."""
        from lookalike.adapt import stored_classes
        from lookalike.query.zeroshot import labelled_zero_shot, load_zero_shot

        token = self.catalog.change_token()
        if self._zero_shot_cache is None or self._zero_shot_cache[0] != token:
            learned = stored_classes(self.catalog.get_meta(ADAPTATION_KEY.format("deep")))
            if learned is not None:  # the user's own classes know this collection better
                index = self.index_for("deep")  # adapted vectors, like the centroids
                ids = index.ids
                scorer = labelled_zero_shot(ids, index.rows(ids), learned[1], learned[0])
            else:
                scorer = load_zero_shot(self.catalog, self.extractors.get("deep"))
            self._zero_shot_cache = (token, scorer)
        return self._zero_shot_cache[1]

    def set_text_tower(self, model: str | os.PathLike[str], tokenizer: str | os.PathLike[str]):
        """Use a CLIP-style text tower (matching this collection's `deep` image tower) so that
        text queries also match what images show; checked by embedding a word before saving."""
        if "deep" not in self.attributes:
            raise CollectionError("a text tower needs the 'deep' attribute (its image tower)")
        tower = TextTower(str(Path(model).resolve()), str(Path(tokenizer).resolve()))
        width = tower.embed(["a photo"]).shape[1]
        if width != self.extractors["deep"].dim:
            raise CollectionError(
                f"the text tower gives {width}-d vectors but the deep attribute has "
                f"{self.extractors['deep'].dim}: they must come from one model"
            )
        self.catalog.set_meta(
            "text_tower", {"model": str(tower.model_path), "tokenizer": str(tower.tokenizer_path)}
        )
        self._tower = tower

    def clear_text_tower(self) -> bool:
        was = self.catalog.get_meta("text_tower") is not None
        self.catalog.delete_meta("text_tower")
        self._tower = None
        return was

    def _text_tower(self) -> TextTower | None:
        spec = self.catalog.get_meta("text_tower")
        if spec is None:
            return None
        if self._tower is None or str(self._tower.model_path) != spec["model"]:
            self._tower = TextTower(spec["model"], spec["tokenizer"])
        return self._tower

    def _text_distances(self, text: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """The text part: keyword match, or with a text tower the nearer of keyword match and
        tower-to-image distance."""
        from lookalike.query.text import text_match

        match = text_match(self.catalog, text, zero_shot=self._zero_shot())
        distances = match.distances
        tower = self._text_tower()
        if tower is not None:
            vector = self._prepare_query("deep", tower.embed([text])[0])
            index = self.index_for("deep")
            visual = np.full(len(match.ids), 100.0)
            present = index.contains(match.ids)
            if present.any():
                visual[present] = index.distances(vector, match.ids[present])
            distances = np.minimum(distances, visual)
            match.explain["text_tower"] = str(tower.model_path)
        return match.ids, distances, match.explain

    def describe(
        self, image: ImageQuery, attributes: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """The signature of a query image (only `attributes`, default all): a stored image's
        own, or freshly extracted."""
        # by the class: remote.py's MilvusCollection borrows this method, not the one below
        return Collection._describe_query(self, image, attributes)  # type: ignore[arg-type]

    def _describe_query(
        self, image: ImageQuery, attributes: Sequence[str] | None, *, windows: bool = False
    ) -> dict[str, np.ndarray]:
        """`describe`, plus with `windows` each windowed attribute's query windows under
        `window_key(name)` (a new image only: a stored image is searched as it was stored)."""
        wanted = list(self.extractors) if attributes is None else list(attributes)
        if isinstance(image, int) or (isinstance(image, str) and image.startswith("id:")):
            from lookalike.index.source import current_vectors

            image_id = int(str(image).removeprefix("id:"))
            versions = {name: self.extractors[name].version for name in wanted}
            found = current_vectors(self.catalog, [image_id], versions)  # one read
            if all(found[name][image_id] is None for name in wanted):
                self.get(image_id)  # says "no image 42" when there is none
            out = {}
            for name in wanted:
                vector = found[name][image_id]
                if vector is None:
                    raise CollectionError(
                        f"image {image_id} has no current {name} signature; re-index it"
                    )
                out[name] = vector
            return out
        if isinstance(image, np.ndarray | Image.Image):
            pil = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
            buffer = io.BytesIO()
            pil.save(buffer, format="PNG")  # one decode path for every kind of query
            data, label = buffer.getvalue(), "<array>"
        elif isinstance(image, bytes):
            data, label = image, "<bytes>"
        else:
            label = os.fspath(image)
            data = read_source_bytes(label)
        item, window_vectors = Collection._describe_new(
            self,  # type: ignore[arg-type]
            data,
            label,
            tags=False,
            attributes=wanted,
            windows=windows,
        )
        out = {name: vec for name, (_, vec) in item.signatures.items() if name in wanted}
        return {**out, **window_vectors}

    def _query_windows(
        self, data: bytes, label: str, attributes: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """Sub-window vectors of a query image for the attributes that have them (the deep
        one: features/deep.py `query_windows`)."""
        return {
            window_key(name): extractor.windows_from_bytes(  # type: ignore[attr-defined]
                data, label, self.preprocess, self.max_pixels
            )
            for name, extractor in self.extractors.items()
            if name in attributes and getattr(extractor, "window_input", None) is not None
        }

    def search(
        self,
        image: ImageQuery,
        *,
        weights: str | Mapping[str, float] | None = None,
        top_k: int | None = 10,
        threshold: float | None = None,
        where: str | None = None,
    ) -> SearchResults:
        """Rank stored images by weighted distance to `image` (path, URL, bytes, id, array)."""
        return self.query(
            image=image, weights=weights, top_k=top_k, threshold=threshold, where=where
        )

    def query(
        self,
        *,
        image: ImageQuery | None = None,
        text: str | None = None,
        sketch: Any = None,
        layout: str | None = None,
        colors: str | Sequence[str] | None = None,
        where: str | None = None,
        weights: str | Mapping[str, float] | None = None,
        part_weights: str | Mapping[str, float] | None = None,
        top_k: int | None = 10,
        threshold: float | str | None = None,
        exact: bool = False,
        expand: bool = False,
        windows: bool = False,
        more: Sequence[int | str] | None = None,
        less: Sequence[int | str] | None = None,
        calibrated: bool = False,
        understand: bool = True,
    ) -> SearchResults:
        """One query of any kind, or several combined, optionally filtered by metadata.

        Parts: `image` (example image, weighted by attribute `weights`), `text` (keywords and
        metadata, expanded), `sketch` (a grid of colour terms, None = unspecified; a QueryGrid,
        a list of rows, grid text, or a drawing image), `layout` (a sentence such as "top
        blue and bottom grey"), `colors` (an index key such as "blue then white"). Each part
        gives a distance 0..100; `part_weights` (0..1, normalised; default equal) fuse them.
        `explain` says what each part understood and weighed. `exact` scores every image
        instead of the index's candidates (the reference `tune` measures against). `expand`
        searches the image part with its deep vector moved towards its confident top
        neighbours (alpha-QE, `query/expansion_image.py`). `windows` also
        matches a new query image's sub-windows at twice the scale against the deep vectors,
        per image the best (features/deep.py `query_windows`): an inset or a picture on a
        background finds its source. Off by default: it runs the CNN a second time at 448
        pixels (~3x the CPU of a search by a new image, bench/README.md); ignored with `expand`.

        `text` is read as one query box (`understand`, query/understand.py): colour words
        become the colour part, layout phrases the layout part, the rest keywords.
        `more` / `less`: ids of answers wanted / not wanted (query/feedback.py). Scores fuse
        raw 0..100 distances (interMedia's meaning; measured the better ranking, see
        bench/README.md) or, with `calibrated=True`, calibrated ones (calibration.py); every
        answer carries the likely-matches cut, and `threshold="auto"` keeps only those.
        """
        return self._overtakable(
            "searches",
            lambda: self.planner.results(
                self._query(
                    image=image, text=text, sketch=sketch, layout=layout, colors=colors,
                    where=where, weights=weights, part_weights=part_weights, top_k=top_k,
                    threshold=threshold, exact=exact, expand=expand, windows=windows,
                    more=more, less=less, calibrated=calibrated, understand=understand,
                )
            ),
        )  # fmt: skip

    def nearest(self, image: ImageQuery | None = None, **query: Any) -> Ranking:
        """`query(image=image, **query)` answered as arrays, with no record read: ids best
        first, scores, each attribute's distances (`Ranking`). For callers that keep their
        own records: a fifth less time than `query` for a deep search by id at 1M images."""
        options = {**query_defaults(Collection.query), **query, "image": image}
        return self._overtakable("searches", lambda: self._query(**options))

    def _overtakable(self, what: str, read: Callable[[], T]) -> T:
        """Run a read of the shared indexes again when a write in another thread overtook it
        (IndexChanged: rows it had chosen left the index); after SEARCH_ATTEMPTS, busy."""
        for _ in range(SEARCH_ATTEMPTS):
            try:
                with self.catalog.one_change_token():  # one look at the catalog per attempt
                    return read()
            except IndexChanged:
                continue
        raise CollectionBusy(
            f"the collection changed under {SEARCH_ATTEMPTS} {what} in a row (writes in "
            "other threads); retry"
        )

    def _query(
        self,
        *,
        image: ImageQuery | None,
        text: str | None,
        sketch: Any,
        layout: str | None,
        colors: str | Sequence[str] | None,
        where: str | None,
        weights: str | Mapping[str, float] | None,
        part_weights: str | Mapping[str, float] | None,
        top_k: int | None,
        threshold: float | str | None,
        exact: bool,
        expand: bool,
        windows: bool,
        more: Sequence[int | str] | None,
        less: Sequence[int | str] | None,
        calibrated: bool,
        understand: bool,
    ) -> Ranking:
        understood = None
        if text and understand:
            text, colors, layout, understood = read_query_box(
                text, colors, layout, visual="perceptual" in self.attributes
            )
        marks = Feedback.parse(more, less)
        attribute_weights: dict[str, float] = {}
        if image is not None or marks.more:
            attribute_weights = self._weights(weights)
        expanded_from: list[int] = []

        def described(names: list[str]) -> dict[str, np.ndarray]:
            out = self._indexed_vectors(image, names)
            if out is None:
                out = self._describe_query(image, names, windows=windows and not expand)
            if expand and "deep" in out:
                out["deep"], neighbours = self._expanded(out["deep"])
                expanded_from.extend(neighbours)
            return out

        signature = None if image is None else described
        allowed = self._filter_ids(where) if where else None
        feedback_info = None
        if marks:
            signature, attribute_weights, feedback_info = apply_feedback(
                marks,
                signature,
                attribute_weights,
                self._stored_signatures,
                self._calibrated_distance,
            )
            if marks.less:  # answers not wanted: every other image (or the filter's) allowed
                pool = self._searchable(attribute_weights) if allowed is None else allowed
                allowed = pool[~in_sorted(np.unique(np.array(marks.less, np.int64)), pool)]
        ranking = self.planner.ranking(
            signature=signature,
            attribute_weights=attribute_weights,
            text=text,
            sketch=sketch,
            layout=layout,
            colors=colors,
            allowed=allowed,
            where=where,
            part_weights=part_weights,
            top_k=top_k,
            threshold=threshold,
            exact=exact,
            calibrated=calibrated,
            query_ids=self._same_as_query(image),
        )
        if expanded_from:
            ranking.explain["expand"] = {"neighbours": expanded_from}
        if understood is not None:
            ranking.explain["understood"] = understood
        if feedback_info is not None:
            ranking.explain["feedback"] = feedback_info
        return ranking

    def _weights(self, weights: str | Mapping[str, float] | None) -> dict[str, float]:
        """Normalised attribute weights; those given as text (or none) are parsed once: a
        search by id with weights "deep=1" spent ~2% of its time parsing them."""
        if weights is not None and not isinstance(weights, str):
            return normalise_weights(weights, self.attributes, self.default_weights)
        key = (weights, tuple(self.attributes), tuple(self.default_weights.items()))
        cached = self._parsed_weights.get(key)  # adapt / reset change the default weights
        if cached is None:
            cached = normalise_weights(weights, self.attributes, self.default_weights)
            if len(self._parsed_weights) < 64:  # a bounded memo of a few spellings
                self._parsed_weights[key] = cached
        return dict(cached)

    def _indexed_vectors(
        self, image: ImageQuery | None, names: Sequence[str]
    ) -> dict[str, np.ndarray] | None:
        """A stored image's vectors from the caught-up indexes' own rows (the catalog's vectors,
        byte for byte, without a catalog read), or None: not an id, an attribute with a
        whitening (its index keeps the whitened vector), or not in every index."""
        if not (isinstance(image, int) or (isinstance(image, str) and image.startswith("id:"))):
            return None
        image_id = int(str(image).removeprefix("id:"))
        if not 0 <= image_id < 2**62 or any(self._whitening(name) is not None for name in names):
            return None
        rows = {name: self.index_for(name).row(image_id) for name in names}
        if any(row is None for row in rows.values()):
            return None  # the catalog's read says why (no such image, no current vector)
        return rows  # type: ignore[return-value]

    def _expanded(self, vector: np.ndarray) -> tuple[np.ndarray, list[int]]:
        """The deep vector moved towards its nearest stored neighbours (alpha-QE), and their
        ids; found through the planner, so an ANN index serves it like any query."""
        from lookalike.query.expansion_image import DEFAULT_NEIGHBOURS, expand_query_vector

        part = self.planner.image_part({"deep": vector}, {"deep": 1.0}, k=DEFAULT_NEIGHBOURS)
        nearest = part.ids[np.argsort(part.distances["deep"], kind="stable")[:DEFAULT_NEIGHBOURS]]
        if not len(nearest):
            return vector, []
        rows = self._stored_signatures([int(i) for i in nearest], ["deep"])
        if not rows:
            return vector, []
        neighbours = np.stack([signature["deep"] for _, signature in rows])
        return expand_query_vector(vector, neighbours), [image_id for image_id, _ in rows]

    def _calibrated_distance(self, name: str, query: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """An attribute's distance on the calibrated scale (raw without a calibration)."""
        raw = self.extractors[name].distance(query, rows)
        calibration = self.calibrations.get([name])
        return raw if calibration is None else calibration.calibrate(name, raw)

    def _same_as_query(self, image: ImageQuery | None) -> list[int]:
        """Stored images that are the query itself: its id, or the same bytes."""
        if image is None:
            return []
        if isinstance(image, int) or (isinstance(image, str) and image.startswith("id:")):
            return [int(str(image).removeprefix("id:"))]
        data = image if isinstance(image, bytes) else None
        if isinstance(image, str | os.PathLike) and not is_url(os.fspath(image)):
            try:
                data = read_source_bytes(os.fspath(image))
            except (OSError, DecodeError):
                return []
        if data is None:
            return []
        return [i for i, _ in self.catalog.images_with_hash(hashlib.sha256(data).hexdigest())]

    def _index_keys(self, ids: np.ndarray) -> PageKeys | None:
        """The index keys of a page of hits (their colour terms by dominance, seed 004), from
        their own perceptual rows (no whole-matrix gather) as they are now, read and made into
        terms when a caller reads them (`PageKeys`, `AttributeIndex.rows_later`)."""
        if "perceptual" not in self.attributes or not len(ids):
            return None
        from lookalike.features.perceptual import split_perceptual

        present, read = self.index_for("perceptual").rows_later(ids)
        return PageKeys(
            read,
            np.flatnonzero(present),
            len(ids),
            lambda rows: index_key_records(split_perceptual(rows)[0]),
        )

    def index_key(self, image: int | str | ImageRecord) -> list[dict[str, Any]] | None:
        """An image's index key (None without the perceptual attribute); given its record
        (already read), the record is not read again."""
        record = image if isinstance(image, ImageRecord) else self.get(image)
        if "perceptual" not in self.attributes:
            return None
        stored = self.catalog.signature(record.id, "perceptual")
        if stored is None:
            return None
        from lookalike.features.perceptual import split_perceptual

        try:
            hist = split_perceptual(stored[1])[0][0]
        except ValueError:  # a damaged signature: `check` reports it; the record still shows
            return None
        return index_key_record(hist)

    def image_info(self, image: int | str) -> dict[str, Any]:
        """An image's record as shown to people: its facts, metadata and index key."""
        record = self.get(image)
        return {**record.to_dict(), "index_key": self.index_key(record)}

    def _perceptual(self) -> PerceptualRows:
        """Every image's term histogram and index matrix, for sketch, layout and colour
        queries: the main rows split once per map (kept: ~300 B an image), the delta's per
        snapshot, so a write costs the next such query its own rows, not the collection's."""
        if "perceptual" not in self.attributes:
            raise CollectionError(
                "sketch, layout and colour queries need the 'perceptual' attribute, "
                "which this collection does not extract"
            )
        from lookalike.features.perceptual import split_perceptual

        blocks = self.index_for("perceptual").row_blocks()
        kept = self._perceptual_rows
        if kept is not None and kept[0] is blocks:
            return kept[1]
        main = self._perceptual_main
        if main is None or main[0] is not blocks.main_map:
            hists, matrices = split_perceptual(blocks.main)
            main = (blocks.main_map, (np.ascontiguousarray(hists), matrices))
            self._perceptual_main = main
        rows = PerceptualRows(blocks.ids, (main[1], split_perceptual(blocks.delta)), blocks.order)
        self._perceptual_rows = (blocks, rows)
        return rows

    def _filter_ids(self, where: str) -> np.ndarray:
        """Ids of images passing a filter, compiled to parameterised SQL over the catalog's
        metadata index; the answer is kept until the catalog changes (a wide filter, e.g. a
        NOT, still reads many index rows)."""
        from lookalike.query.filters import compile_filter_ids

        token = self.catalog.change_token()
        with self._filters_lock:
            cached = self._filters.get(where)
        if cached is not None and cached[0] == token:
            return cached[1]
        sql, params = compile_filter_ids(where)
        ids = np.unique(np.array([r[0] for r in self.catalog.query(sql, params)], dtype=np.int64))
        with self._filters_lock:
            self._filters[where] = (token, ids)
            while len(self._filters) > FILTER_CACHE:
                self._filters.popitem(last=False)
        return ids

    def distances(
        self, signature: Mapping[str, np.ndarray], weights: Mapping[str, float]
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Exact per-attribute distances from `signature` to every image current in all
        weighted attributes: (name -> distances, ids)."""
        part = self.planner.image_part(signature, weights, k=None)
        return part.distances, part.ids

    # -- indexes: tuning, duplicates, upkeep ------------------------------------------------

    def _stored_signatures(
        self, ids: list[int], attributes: Sequence[str]
    ) -> list[tuple[int, dict[str, np.ndarray]]]:
        """Raw stored signatures of many images in one catalog read (images lacking a current
        vector of any attribute are left out)."""
        from lookalike.index.source import current_vectors

        versions = {name: self.extractors[name].version for name in attributes}
        found = current_vectors(self.catalog, ids, versions)
        out = []
        for image_id in ids:
            signature = {name: found[name][image_id] for name in attributes}
            if all(v is not None for v in signature.values()):
                out.append((image_id, signature))
        return out

    def _searchable(self, attributes: Iterable[str]) -> np.ndarray:
        """Ids of images searchable in every one of `attributes`; kept while every index's
        sorted ids are the same arrays (until a write): 0.15 s at 1M images to make."""
        lists = [self.index_for(name).ids for name in attributes]
        kept = self._searchable_kept
        if (
            kept is not None
            and len(kept[0]) == len(lists)
            and all(a is b for a, b in zip(kept[0], lists, strict=True))
        ):
            return kept[1]
        pool = None
        for ids in lists:
            pool = ids if pool is None else pool[in_sorted(ids, pool)]
        pool = np.zeros(0, np.int64) if pool is None else pool
        self._searchable_kept = (lists, pool)
        return pool

    def tune(
        self,
        recall: float = 0.95,
        *,
        queries: int = 50,
        k: int = 10,
        weights: str | Mapping[str, float] | None = None,
        seed: int = 0,
        progress: Callable[[str, int, int], None] | None = None,
    ):
        """Measure recall@k of the candidate plan against exact search on sampled stored
        images, keep the cheapest effort, then the fewest candidates per attribute, that reach
        `recall`; returns the curve. `progress(stage, done, total)` as queries are run."""
        from lookalike.query.tune import tune

        if not 0.0 < recall <= 1.0:
            raise CollectionError(f"recall must be in (0, 1], got {recall}")
        attribute_weights = normalise_weights(weights, self.attributes, self.default_weights)
        pool = self._searchable(attribute_weights)
        if len(pool) == 0:
            raise CollectionError("the collection has no images to tune on")
        rng = np.random.default_rng(seed)
        ids = rng.choice(pool, min(queries, len(pool)), replace=False)
        signatures = [
            s for _, s in self._stored_signatures(list(map(int, ids)), list(attribute_weights))
        ]
        report = self._overtakable(
            "tuning runs",
            lambda: tune(
                self.planner,
                self.index_for,
                signatures,
                attribute_weights,
                target=recall,
                k=k,
                progress=progress,
            ),
        )
        if report.chosen is not None and report.chosen.level:
            self.indexes.configure(effort=report.chosen.level, candidates=report.chosen.candidates)
        return report

    def duplicates(
        self,
        *,
        threshold: float | None = None,
        weights: str | Mapping[str, float] | None = None,
        k: int = 10,
        progress: Callable[[int, int], None] | None = None,
    ):
        """Groups of near-duplicate images (fused score <= threshold), each pair's score;
        `progress(done, total)` as images are searched (from 0 again if a write overtakes)."""
        from lookalike.query.duplicates import DEFAULT_THRESHOLD, find_duplicates
        from lookalike.scoring import check_threshold

        threshold = DEFAULT_THRESHOLD if threshold is None else threshold
        check_threshold(threshold)
        attribute_weights = normalise_weights(weights, self.attributes, self.default_weights)
        return self._overtakable(
            "duplicate searches",
            lambda: find_duplicates(
                self.planner,
                self._searchable(attribute_weights),
                lambda ids: self._stored_signatures(ids, list(attribute_weights)),
                attribute_weights,
                threshold=threshold,
                k=k,
                progress=progress,
            ),
        )

    def configure_index(
        self,
        attribute: str | None = None,
        *,
        kind: str | None = None,
        pca: int | None = None,
        effort: Mapping[str, int] | None = None,
        candidates: int | None = None,
    ) -> dict[str, Any]:
        """Choose the index of one attribute (`auto`, `flat`, `hnsw`, `ivfpq`; PCA width for
        IVF-PQ) or of all (attribute None), the effort per kind, candidates per attribute."""
        names = list(self.attributes) if attribute is None else [attribute]
        for name in names:
            if name not in self.attributes:
                raise CollectionError(f"this collection has no {name!r} attribute")
        return self.indexes.configure(
            kinds={n: kind for n in names} if kind else None,
            options={n: {"pca": pca} for n in names} if pca else None,
            effort=dict(effort or {}),
            candidates=candidates,
        )

    def merge_indexes(self) -> None:
        """Fold the live deltas of the indexes in use into their main part now (otherwise
        done past a size); indexes not loaded have no delta."""
        self.indexes.merge()

    def verify_indexes(self) -> dict[str, str]:
        """attribute -> problem with its index files (they would be rebuilt on next use)."""
        return self.indexes.verify(list(self.attributes))

    def rebuild_indexes(self, attributes: Sequence[str] | None = None) -> None:
        self.indexes.rebuild(list(attributes or self.attributes))
