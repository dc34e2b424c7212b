"""Scan -> decode -> extract -> store, in parallel, resumable, with progress.

Work is planned first: each source is compared with the catalog by path, size and mtime (and,
when those changed, by content hash), so a re-run only processes what is new, changed, or whose
signature an extractor update made stale; a file that failed before and has not changed since
is reported again from the catalog's record, not read again. Decoding and the classic
features run in worker processes; extractors that work in batches (the CNN) run in this
process on what the workers prepared. Each image is committed on its own, so an interrupted
run keeps all finished work.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import queue
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from lookalike.decode import (
    IMAGE_SUFFIXES,
    Preprocess,
    decode_bytes,
    is_url,
    not_regular_reason,
    prepare,
    read_regular_file,
    read_source_bytes,
)
from lookalike.errors import DecodeError
from lookalike.features.base import Extractor, PreparedImage, warm_up
from lookalike.features.registry import create_extractor
from lookalike.pool import Failure, supervised_map
from lookalike.store.catalog import FailureRecord

ProgressCallback = Callable[[int, int, str], None]  # (done, total, current source)
FILE_BUDGET_S = 60.0  # read + decode + describe time allowed per file in a worker process
TICK_S = 0.5  # while workers are busy, the caller regains control at least this often


@dataclass
class IngestReport:
    """What a run did; `failed` keeps every skipped source with its reason."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    ids: dict[str, int] = field(default_factory=dict)
    not_retried: set[str] = field(default_factory=set)  # skipped: unchanged since they failed

    def summary(self) -> str:
        text = (
            f"{len(self.added)} added, {len(self.updated)} updated, "
            f"{len(self.unchanged)} unchanged, {len(self.removed)} removed, "
            f"{len(self.failed)} skipped"
        )
        if self.not_retried:
            count = len(self.not_retried)
            text += (
                f" ({count} unchanged since {'it' if count == 1 else 'they'} failed, not read "
                "again: index --retry-failed retries)"
            )
        return text


@dataclass(frozen=True)
class Settings:
    """Everything a worker needs to turn a source into signatures; picklable."""

    preprocess: dict[str, Any]
    attributes: dict[str, dict[str, Any]]  # per-image attributes: name -> extractor options
    max_pixels: int
    keep_prepared: bool = False  # batch attributes (the CNN) will need the prepared image


@dataclass
class Extracted:
    """A decoded, described image, ready for the batch stage and the catalog."""

    source: str
    size: int
    mtime: float
    sha256: str
    width: int
    height: int
    format: str
    signatures: dict[str, tuple[str, np.ndarray]]
    prepared: np.ndarray | None = None  # kept only when a batch extractor still needs it
    auto_keywords: list[tuple[str, float]] | None = None  # model tags, when a classifier ran


def printable_path(path: str) -> str:
    """A path as text that can be printed and stored: bytes that are not UTF-8 (kept by Python
    as lone surrogates) are shown as \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _unusable_name(path: str) -> str | None:
    """Why a file name cannot be stored (None: it can). The catalog, the JSON reports and the
    server all speak UTF-8; a name that is not is skipped with a reason, never stored mangled."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8 (rename the file to index it)"
    return None


def _entry_facts(entry: os.DirEntry[str]) -> os.stat_result | str:
    """A folder entry's stat (symlinks followed), or why it cannot be had."""
    try:
        return entry.stat()
    except FileNotFoundError:
        return "broken symbolic link" if entry.is_symlink() else "no such file"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop"
        return f"cannot read: {exc.strerror or exc}"


Facts = tuple[int, float]  # a file's (size, mtime)


@dataclass
class Scan:
    """What a scan found: sources to plan, scanned folders (for --prune), entries refused,
    and the (size, mtime) of each file found in a folder (its stat came with the scan)."""

    sources: list[str] = field(default_factory=list)
    roots: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    facts: dict[str, Facts] = field(default_factory=dict)


def scan(sources: Iterable[str | os.PathLike[str]], *, recursive: bool = True) -> Scan:
    """Expand folders into image files.

    Files inside a folder are picked by suffix (a README beside the photos is not an error);
    entries named like images that are not regular files (pipes, sockets, devices, broken
    links, link loops) and names that are not UTF-8 are reported with a reason, never read.
    Files named explicitly are always tried, so a mislabelled image is reported, not ignored.
    Hidden entries (and everything below a hidden folder) are left out; symbolic links to
    folders are not followed. Folder entries come in sorted path order, one stat each."""
    result = Scan()
    for source in sources:
        text = os.fspath(source)
        if is_url(text):
            result.sources.append(text)
            continue
        path = Path(text).expanduser()
        if path.is_dir():
            root = str(path.resolve())
            result.roots.append(root)
            for entry in _folder_entries(root, recursive):
                if os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
                    _add_entry(result, entry)
        else:
            _add_file(result, _absolute(path))
    result.sources = list(dict.fromkeys(result.sources))
    return result


def _folder_entries(folder: str, recursive: bool) -> Iterator[os.DirEntry[str]]:
    """Entries below `folder`, depth first with each folder's names sorted: the order of the
    sorted paths (what sorting pathlib's rglob gave), without building a Path per entry.
    Hidden names are skipped with all they hold; links to folders are listed, not entered."""
    try:
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
    except OSError:  # unreadable, or gone meanwhile: nothing to index there (as rglob)
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        yield entry
        if recursive and entry.is_dir(follow_symlinks=False):
            yield from _folder_entries(entry.path, recursive)


def _add_entry(result: Scan, entry: os.DirEntry[str]) -> None:
    """A folder entry named like an image: a source with its facts, or a refusal."""
    facts = _entry_facts(entry)
    problem = _unusable_name(entry.path)
    if problem is None and isinstance(facts, str):
        problem = facts
    if problem is None and isinstance(facts, os.stat_result):
        if stat.S_ISDIR(facts.st_mode):  # a folder named x.jpg: its images come from the walk
            return
        problem = not_regular_reason(facts.st_mode)
        if problem is None:
            result.sources.append(entry.path)
            result.facts[entry.path] = (facts.st_size, facts.st_mtime)
            return
    result.failed.append((printable_path(entry.path), problem or "cannot read"))


def _absolute(path: Path) -> str:
    """An explicitly named file as an absolute path (symlinks resolved where possible)."""
    try:
        return str(path.resolve()) if path.exists() else str(path)
    except (OSError, RuntimeError):  # a symlink loop: keep the name, reading reports it
        return str(path.absolute())


def _add_file(result: Scan, path: str) -> None:
    """A file named explicitly: always tried (reading it reports what is wrong with it)."""
    problem = _unusable_name(path)
    if problem is None:
        if not os.path.isdir(path):  # a folder named x.jpg: its images come from rglob
            result.sources.append(path)
    else:
        result.failed.append((printable_path(path), problem))


@dataclass
class Plan:
    """What a run must do: sources to describe, and known images to keep as they are.

    `unchanged` holds (source, image id, new (size, mtime) or None): a file whose size or
    mtime moved but whose content hash did not only needs its facts refreshed. `not_retried`
    holds (source, reason) of files unchanged since they failed; `facts` the (size, mtime) of
    each local file to describe, taken before it is read (what a failure is recorded with)."""

    todo: list[str] = field(default_factory=list)
    unchanged: list[tuple[str, int, tuple[int, float] | None]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    not_retried: list[tuple[str, str]] = field(default_factory=list)
    facts: dict[str, Facts] = field(default_factory=dict)


def plan(
    found: Iterable[str],
    states: Mapping[str, tuple[int, int, float, str]],
    is_current: Callable[[int], bool],
    *,
    facts: Mapping[str, Facts] | None = None,
    failures: Mapping[str, FailureRecord] | None = None,
    setup: str = "",
) -> Plan:
    """Compare sources with the catalog (path -> (id, size, mtime, sha256)).

    Unchanged = same size and mtime, or same content hash; and every signature current
    (`is_current(id)`), else the image is described again. A file in `failures` with the same
    size, mtime and reading `setup` is not read again. URLs are always fetched again.
    `facts` holds the (size, mtime) the scan already has; other files are stat'ed here."""
    result = Plan()
    facts = facts or {}
    failures = failures or {}
    for source in found:
        if is_url(source):
            result.todo.append(source)
            continue
        now = facts.get(source) or _stat_facts(source)  # or why it cannot be stat'ed
        known = states.get(source)
        if known is not None and now == known[1:3] and is_current(known[0]):
            result.unchanged.append((source, known[0], None))
            continue
        failure = failures.get(source)
        if failure and now == (failure.size, failure.mtime) and failure.setup == setup:
            result.not_retried.append((source, failure.reason))
            continue
        if not isinstance(now, str):
            result.facts[source] = now
        if known is None:
            result.todo.append(source)  # a file that cannot be stat'ed: reading it says why
        elif isinstance(now, str):
            result.failed.append((source, f"cannot read: {now}"))
        elif is_current(known[0]) and _content_hash(source) == known[3]:
            result.unchanged.append((source, known[0], now))
        else:
            result.todo.append(source)
    return result


def _stat_facts(path: str) -> Facts | str:
    """A file's (size, mtime), or why it cannot be stat'ed."""
    try:
        facts = os.stat(path)
    except OSError as exc:
        return str(exc.strerror or exc)
    return facts.st_size, facts.st_mtime


def reading_setup(settings: Settings, versions: Mapping[str, str], budget_s: float) -> str:
    """A fingerprint of how files are read and described: the settings, every extractor's
    version, lookalike's and Pillow's versions, the time budget. A remembered failure holds
    only under the same setup (an upgrade or a longer budget may read the file now)."""
    import PIL

    from lookalike import __version__

    text = json.dumps(
        [dataclasses.asdict(settings), dict(versions), __version__, PIL.__version__, budget_s],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _content_hash(path: str) -> str | None:
    try:
        return hashlib.sha256(read_regular_file(path)).hexdigest()
    except DecodeError:  # gone, unreadable, or no longer a regular file: describe it again
        return None


_WORKER_EXTRACTORS: dict[tuple, dict[str, Extractor]] = {}


def build_extractors(attributes: Mapping[str, Mapping[str, Any]]) -> dict[str, Extractor]:
    """Extractors for a settings dict, cached per process (models load once)."""
    key = tuple(sorted((name, tuple(sorted(opts.items()))) for name, opts in attributes.items()))
    if key not in _WORKER_EXTRACTORS:
        _WORKER_EXTRACTORS[key] = {
            name: create_extractor(name, **dict(opts)) for name, opts in attributes.items()
        }
    return _WORKER_EXTRACTORS[key]


def describe_bytes(
    data: bytes, label: str, settings: Settings, *, size: int | None = None, mtime: float = 0.0
) -> Extracted:
    """Decode and extract every per-image attribute; batch attributes are left for
    `finish_batch`, in the parent process, so workers never load the CNN."""
    preprocess = Preprocess.from_dict(settings.preprocess)
    decoded = decode_bytes(data, label, max_pixels=settings.max_pixels, draft=2 * preprocess.frame)
    prepared = prepare(decoded.rgb, preprocess)
    image = PreparedImage(prepared)
    signatures: dict[str, tuple[str, np.ndarray]] = {}
    for name, extractor in build_extractors(settings.attributes).items():
        signatures[name] = (extractor.version, np.asarray(extractor.extract(image), np.float32))
    return Extracted(
        source=label,
        size=decoded.size if size is None else size,
        mtime=mtime,
        sha256=decoded.sha256,
        width=decoded.width,
        height=decoded.height,
        format=decoded.format,
        signatures=signatures,
        prepared=prepared if settings.keep_prepared else None,
    )


def describe_source(source: str, settings: Settings) -> Extracted | DecodeError:
    """Describe one source; never raises for a bad image, returns the error instead."""
    try:
        data = read_source_bytes(source)
        mtime = 0.0 if is_url(source) else os.stat(source).st_mtime
        return describe_bytes(data, source, settings, mtime=mtime)
    except DecodeError as exc:
        return exc
    except Exception as exc:  # a bug in an extractor must not stop the batch
        return DecodeError(source, f"could not be described: {type(exc).__name__}: {exc}")


_WORKER_SETTINGS: list[Settings] = []


def _start_worker(settings: Settings) -> None:
    """Worker initializer: keep the settings and build the extractors once, before any task
    (so the first file's time budget is not spent importing or compiling)."""
    _WORKER_SETTINGS[:] = [settings]
    warm_up(build_extractors(settings.attributes).values())


TEST_FAULTS_ENV = "LOOKALIKE_TEST_WORKER_FAULTS"  # tests only: "crash=a.jpg;hang=b.png"


def _test_fault(source: str) -> None:
    """Test hook: make a worker crash, hang or raise on a named file, as a codec bug could.
    Set only by the test suite; a no-op unless the variable names this file."""
    for rule in os.environ.get(TEST_FAULTS_ENV, "").split(";"):
        action, _, name = rule.partition("=")
        if name and os.path.basename(source) == name:
            if action == "crash":
                os._exit(70)
            if action == "hang":
                time.sleep(3600)
            if action == "raise":
                raise MemoryError("test fault")  # not an Exception: escapes describe_source


def _describe_in_worker(source: str) -> Extracted | DecodeError:
    _test_fault(source)
    return describe_source(source, _WORKER_SETTINGS[0])


def describe_many(
    sources: list[str],
    settings: Settings,
    jobs: int,
    *,
    budget_s: float = FILE_BUDGET_S,
    while_starting: Callable[[], None] | None = None,
) -> Iterator[Extracted | DecodeError | None]:
    """Yield each source's result as it finishes, in supervised worker processes (any order).

    A file whose worker crashes or runs past `budget_s` comes back as a DecodeError like any
    bad file; None is yielded every TICK_S while workers are busy, so the caller can commit
    on time. With one job everything runs here, in order, without a time budget.
    `while_starting` runs once, while the workers start (the caller loads its CNN then)."""
    if sources and while_starting is not None and jobs <= 1:
        while_starting()
    if jobs <= 1 or not sources:
        for source in sources:
            yield describe_source(source, settings)
        return
    results = supervised_map(
        _describe_in_worker,
        sources,
        workers=min(jobs, len(sources)),
        budget_s=budget_s,
        initializer=_start_worker,
        init_args=(settings,),
        tick_s=TICK_S,
        while_starting=while_starting,
    )
    for outcome in results:
        if outcome is None:
            yield None
            continue
        source, result = outcome
        yield DecodeError(source, result.reason) if isinstance(result, Failure) else result


BATCH_SIZE = 32  # images per CNN forward pass
COMMIT_AFTER_S = 2.0  # no described image waits longer than this to be committed


class CommitBatch:
    """Described images waiting for the batch stage (the CNN) and their commit.

    Due when full, or when its oldest image has waited COMMIT_AFTER_S: batching keeps the CNN
    efficient, the age limit keeps a killed run from losing more than a few seconds of work."""

    def __init__(self, size: int = BATCH_SIZE, max_wait_s: float = COMMIT_AFTER_S):
        self.items: list[Extracted] = []
        self.size = size
        self.max_wait_s = max_wait_s
        self._oldest = 0.0

    def add(self, item: Extracted) -> None:
        if not self.items:
            self._oldest = time.monotonic()
        self.items.append(item)

    def due(self) -> bool:
        if not self.items:
            return False
        waited = time.monotonic() - self._oldest
        needs_batch = any(item.prepared is not None for item in self.items)
        return not needs_batch or len(self.items) >= self.size or waited >= self.max_wait_s

    def take(self) -> list[Extracted]:
        items, self.items = self.items, []
        return items


TAG_FLOOR = 0.1  # a model tag is kept when the classifier gives it at least this probability


def finish_batch(
    items: list[Extracted],
    extractors: Mapping[str, Extractor],
    *,
    tags: bool = True,
    tag_floor: float = TAG_FLOOR,
) -> None:
    """Run batch extractors (the CNN) on items that still carry their prepared image; where
    the model has a classifier, the same forward pass gives the images' automatic tags."""
    pending = [item for item in items if item.prepared is not None]
    if not pending:
        return
    images = [PreparedImage(item.prepared) for item in pending]  # type: ignore[arg-type]
    for name, extractor in extractors.items():
        if not hasattr(extractor, "extract_batch"):
            continue
        if tags and getattr(extractor, "has_classifier", False):
            from lookalike.query.zeroshot import CLASSES_SIGNATURE, classes_version
            from lookalike.tags import keywords_from_predictions

            vectors, labels, classes = extractor.extract_classify_rank(  # type: ignore[attr-defined]
                images, top_k=10, min_prob=0.01
            )
            for item, predictions, ranked in zip(pending, labels, classes, strict=True):
                keywords = keywords_from_predictions(predictions, floor=tag_floor)
                item.auto_keywords = [(k.text, k.score) for k in keywords]
                item.signatures[CLASSES_SIGNATURE] = (classes_version(extractor.version), ranked)
        else:
            vectors = extractor.extract_batch(images)  # type: ignore[attr-defined]
        for item, vector in zip(pending, vectors, strict=True):
            item.signatures[name] = (extractor.version, np.asarray(vector, np.float32))
    for item in pending:
        item.prepared = None


STAGE_DEPTH = 2  # batches waiting for the CNN thread before the caller waits (bounded memory)


class BatchStage:
    """The batch extractors (the CNN) in a thread of this process, beside the worker pool.

    `submit` hands a batch over and returns at once (it waits only when STAGE_DEPTH batches
    are already waiting: back-pressure, so memory stays bounded); `finished` returns the items
    whose batch is done, in order, for the caller to commit on its own thread (SQLite
    connections stay where they were made). Meanwhile the caller keeps feeding the workers:
    ONNX Runtime, Pillow's resize and numpy's reductions release the GIL, so the CNN's batch
    overlaps the workers' decoding and classic extraction instead of stopping them.
    An error in the CNN (DeepModelError) is raised by the next `finished` or `close`."""

    def __init__(
        self,
        extractors: Mapping[str, Extractor],
        *,
        tags: bool = True,
        tag_floor: float = TAG_FLOOR,
        depth: int = STAGE_DEPTH,
    ):
        self._extractors = extractors
        self._tags = tags
        self._tag_floor = tag_floor
        self._todo: queue.Queue[list[Extracted] | None] = queue.Queue(maxsize=max(1, depth))
        self._done: queue.Queue[tuple[list[Extracted], BaseException | None]] = queue.Queue()
        self._waiting = 0  # batches submitted and not yet returned by `finished`
        self._thread: threading.Thread | None = None

    def submit(self, items: list[Extracted]) -> None:
        if not items:
            return
        self._waiting += 1
        if all(item.prepared is None for item in items):  # nothing for the CNN: straight out
            self._done.put((items, None))
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="lookalike-cnn", daemon=True)
            self._thread.start()
        self._todo.put(items)

    def _work(self) -> None:
        while (items := self._todo.get()) is not None:
            try:
                finish_batch(items, self._extractors, tags=self._tags, tag_floor=self._tag_floor)
                self._done.put((items, None))
            except BaseException as exc:  # handed to the caller's thread, raised there
                self._done.put((items, exc))

    def finished(self, *, wait: bool = False) -> list[Extracted]:
        """Items of every batch the CNN has finished (with `wait`: of every batch submitted)."""
        out: list[Extracted] = []
        while self._waiting:
            try:
                items, error = self._done.get(block=wait)
            except queue.Empty:
                break
            self._waiting -= 1
            if error is not None:
                raise error
            out.extend(items)
        return out

    def close(self) -> list[Extracted]:
        """Wait for every submitted batch, stop the thread; returns the last finished items."""
        try:
            return self.finished(wait=True)
        finally:
            self._stop()

    def _stop(self, *, drop_waiting: bool = False) -> None:
        if self._thread is not None:
            while drop_waiting:  # an interrupted run: batches not yet started are not run
                try:
                    self._todo.get_nowait()
                except queue.Empty:
                    break
            self._todo.put(None)  # after any batch still queued: the thread drains, then ends
            self._thread = None

    def __enter__(self) -> BatchStage:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # interrupted: the thread ends after the batch it runs; nothing more is stored
        self._stop(drop_waiting=kind is not None)
