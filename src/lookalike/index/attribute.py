"""One attribute's searchable state: a main part on disk plus a small live delta.

Main: the exact vectors (`vectors.f32`, memory-mapped, append-only) with their image ids
(`ids.i64`), an optional ANN structure over the same positions, and tombstones (`dead`) for rows
whose image was changed or removed after they were written. Delta: vectors written since, held
in memory and searched exactly. A change is visible to the very next query: the row is
tombstoned in main and (if the image still has a current vector) put in the delta. `merge`
appends the delta to main; past a share of tombstones the main part is rebuilt from the catalog.

`state.json` (written last, by rename) names the files of the current generation and how many
rows of the append-only vector and id files belong to it; rows past that count (a merge that
crashed half-way) are ignored and overwritten. A crash therefore leaves the previous generation
whole. Writers hold `.lock` (flock) and give up a merge when another process moved on.
"""

from __future__ import annotations

import fcntl
import json
import mmap
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.errors import CollectionBusy
from lookalike.features.base import IndexSpace
from lookalike.index.ann import DEFAULT_EFFORT, AnnIndex, build_ann, read_ann

FORMAT = 1
CHUNK = 4096  # rows per block of exact distances: bounded temporaries
DistanceFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
# a distance in float32 and a bound on its difference from DistanceFn's (features/base.py)
RoughDistanceFn = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, float]]


@dataclass(frozen=True)
class RoughNearest:
    """Candidates (distinct ids, in no particular order) with rough distances, their bound on
    the difference from the exact distance, and a reader of candidates' exact rows by index."""

    ids: np.ndarray
    distances: np.ndarray
    bound: float
    rows_of: Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class RowBlocks:
    """Every searchable row of an attribute in two blocks as stored (`main`: the map, dead
    rows too; `delta`: a delta snapshot's rows, dead slots too), the ids ascending, and for
    each id the row in the blocks one after the other (`order`)."""

    ids: np.ndarray
    main: np.ndarray
    delta: np.ndarray
    order: np.ndarray
    main_map: object  # the map `main` views: the same object until main changes (a merge)


class IndexFileError(Exception):
    """An index folder that cannot be used as is (missing, stale, corrupt): rebuild it."""


class IndexChanged(CollectionBusy):
    """Images a search had chosen left the index before their rows were read: a write in
    another thread caught the shared index up mid-search. The search is run again; a read
    that is not (or not any more) is told busy (HTTP 503), never an internal error."""


@dataclass(frozen=True)
class AttributeSpec:
    """What an attribute index needs to know about its attribute (from the extractor)."""

    name: str
    dim: int
    fingerprint: str  # extractor version, width, whitening: a change makes files stale
    distance: DistanceFn  # exact 0..100 distance on stored (prepared) vectors
    space: IndexSpace  # how the ANN structure searches those vectors
    kind: str  # flat | hnsw | ivfpq
    options: dict[str, Any]
    rough: RoughDistanceFn | None = None  # None: `distance` is as cheap as it gets

    @property
    def key(self) -> tuple[str, str, str]:
        """What decides whether files built for one spec serve another."""
        return self.fingerprint, self.kind, json.dumps(self.options, sort_keys=True)


def _write_atomic(path: Path, data: bytes) -> None:
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)


def _append(path: Path, offset: int, data: bytes) -> None:
    """Write `data` at byte `offset` (dropping anything past it: rows of a crashed merge)."""
    with open(path, "r+b" if path.exists() else "wb") as f:
        f.truncate(offset)
        f.seek(offset)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


class _SharedHold:
    """`SharedLock.shared()`: one reusable holder per lock (it keeps no state per use)."""

    __slots__ = ("lock",)

    def __init__(self, lock: SharedLock):
        self.lock = lock

    def __enter__(self) -> None:
        lock = self.lock
        with lock._change:
            while lock._writing or lock._writers_waiting:
                lock._change.wait()
            lock._readers += 1

    def __exit__(self, *exc: object) -> None:
        lock = self.lock
        with lock._change:
            lock._readers -= 1
            if not lock._readers and lock._writers_waiting:  # only writers wait for readers
                lock._change.notify_all()


class SharedLock:
    """Held by many at once (searches of the ANN structure) or by one alone (a merge adding
    to it in place): faiss allows no `add` while a search runs (an inverted list grown
    under a search is read after it was freed), and searches release the GIL. A waiting
    writer goes first: new searches wait behind it rather than starve it."""

    def __init__(self) -> None:
        self._change = threading.Condition()
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0
        self._hold = _SharedHold(self)

    def shared(self) -> _SharedHold:
        """Held by this caller among other readers (every search enters one: a class, not a
        generator)."""
        return self._hold

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._change:
            self._writers_waiting += 1
            while self._writing or self._readers:
                self._change.wait()
            self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._change:
                self._writing = False
                self._change.notify_all()


def in_sorted(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Which of `ids` are in `sorted_ids` (ascending): a binary search per id. A filter's
    allowed ids are sorted and may be 100k+; `np.isin` sorts them again on every call (per
    attribute of every filtered search: ~20 ms each at 1M images with a 10% filter)."""
    at = np.searchsorted(sorted_ids, ids)
    found = at < len(sorted_ids)
    found[found] = sorted_ids[at[found]] == ids[found]
    return found


class AttributeIndex:
    def __init__(self, spec: AttributeSpec, folder: Path):
        self.spec = spec
        self.folder = folder
        self.generation = 0
        self.mark = 0  # change-log sequence number the main part reflects
        self.count = 0
        self.main_ids = np.zeros(0, np.int64)  # position -> image id
        self.vectors = np.zeros((0, spec.dim), np.float32)  # position -> exact vector (mmap)
        self.dead = np.zeros(0, bool)
        self.ann: AnnIndex | None = None
        self.ann_use = SharedLock()  # searches of `ann` share it; a merge's add takes it alone
        self.position = np.zeros(0, np.int64)  # image id -> position in main, -1 if none
        self.delta: dict[int, np.ndarray] = {}
        self.effort = DEFAULT_EFFORT.get(spec.kind, 0)
        self.files: dict[str, str] = {}
        self._cache: dict[str, Any] = {}
        self._changes = 0  # counts writes and reloads: what a kept mask or blocks were made at

    # -- building, loading, saving ----------------------------------------------------------

    @classmethod
    def build(
        cls, spec: AttributeSpec, folder: Path, rows: Iterable[tuple[np.ndarray, np.ndarray]], mark
    ) -> AttributeIndex:
        """Write a new main part from (ids, vectors) chunks, in id order, at change `mark`."""
        index = cls(spec, folder)
        with index._writing():
            index._build_locked(rows, mark)
        return index

    def _build_locked(self, rows: Iterable[tuple[np.ndarray, np.ndarray]], mark: int) -> None:
        index, spec, folder = self, self.spec, self.folder
        index.generation = self._next_generation(folder)
        gen = index.generation
        index.files = {"vectors": f"vectors.{gen}.f32", "ids": f"ids.{gen}.i64"}
        count = 0
        with (
            open(folder / index.files["vectors"], "wb") as vf,
            open(folder / index.files["ids"], "wb") as idf,
        ):
            for ids, matrix in rows:
                vf.write(np.ascontiguousarray(matrix, "<f4").tobytes())
                idf.write(np.ascontiguousarray(ids, "<i8").tobytes())
                count += len(ids)
            vf.flush()
            os.fsync(vf.fileno())
        index.count, index.mark = count, int(mark)
        index._map_files()
        index.dead = np.zeros(count, bool)
        if spec.kind != "flat" and count:
            index.ann = build_ann(
                spec.kind, index._space_rows(0, count), spec.space.metric, dict(spec.options)
            )
        index._write_state()

    def _space_rows(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, self.spec.space.dim), np.float32)
        for s in range(start, stop, CHUNK):
            e = min(stop, s + CHUNK)
            out[s - start : e - start] = self.spec.space(np.asarray(self.vectors[s:e]))
        return out

    @staticmethod
    def _next_generation(folder: Path) -> int:
        try:
            state = json.loads((folder / "state.json").read_text())
            return int(state["generation"]) + 1
        except (OSError, ValueError, KeyError, TypeError):
            return 1

    @classmethod
    def load(cls, spec: AttributeSpec, folder: Path) -> AttributeIndex:
        """Open the current generation; IndexFileError when missing, stale or corrupt."""
        try:
            state = json.loads((folder / "state.json").read_text())
        except (OSError, ValueError) as exc:
            raise IndexFileError(f"{folder.name}: no readable state ({exc})") from None
        if state.get("format") != FORMAT or state.get("fingerprint") != spec.fingerprint:
            raise IndexFileError(f"{folder.name}: built for another version or settings")
        if state.get("kind") != spec.kind or state.get("options") != spec.options:
            raise IndexFileError(f"{folder.name}: built as another kind of index")
        index = cls(spec, folder)
        try:
            index.generation, index.count, index.mark = (
                int(state["generation"]),
                int(state["count"]),
                int(state["mark"]),
            )
            index.files = {k: str(v) for k, v in state["files"].items()}
            index._map_files()
            dead = np.load(folder / index.files["dead"], allow_pickle=False)
            if dead.shape != (index.count,) or dead.dtype != bool:
                raise IndexFileError(f"{folder.name}: tombstones do not match the vectors")
            index.dead = dead.copy()
            if spec.kind != "flat" and index.count:
                index.ann = read_ann(spec.kind, folder / index.files["ann"], spec.space.metric)
                if len(index.ann) != index.count:
                    raise IndexFileError(f"{folder.name}: ANN structure does not match vectors")
        except IndexFileError:
            raise
        except Exception as exc:  # faiss raises RuntimeError on a corrupt file, numpy ValueError
            raise IndexFileError(f"{folder.name}: unreadable index files ({exc})") from None
        if int(state.get("checksum", -1)) != index._checksum():
            raise IndexFileError(f"{folder.name}: ids do not match the recorded checksum")
        return index

    def _map_files(self) -> None:
        vector_file = self.folder / self.files["vectors"]
        id_file = self.folder / self.files["ids"]
        need_v, need_i = self.count * self.spec.dim * 4, self.count * 8
        if not vector_file.exists() or not id_file.exists():
            raise IndexFileError(f"{self.folder.name}: vector files missing")
        if vector_file.stat().st_size < need_v or id_file.stat().st_size < need_i:
            raise IndexFileError(f"{self.folder.name}: vector files are truncated")
        if self.count:
            self.vectors = np.memmap(vector_file, "<f4", "r", shape=(self.count, self.spec.dim))
            advise = getattr(getattr(self.vectors, "_mmap", None), "madvise", None)
            if advise is not None and hasattr(mmap, "MADV_RANDOM"):
                # rescoring reads scattered rows: no read-ahead of the pages around each one
                advise(mmap.MADV_RANDOM)
            self.main_ids = np.fromfile(id_file, "<i8", count=self.count)
        self._index_positions()

    def _index_positions(self) -> None:
        alive = ~self.dead if len(self.dead) == self.count else np.ones(self.count, bool)
        top = int(self.main_ids.max()) + 1 if self.count else 0
        self.position = np.full(max(top, 1), -1, np.int64)
        positions = np.flatnonzero(alive)
        self.position[self.main_ids[positions]] = positions
        self._cache.clear()
        self._changes += 1

    def _checksum(self) -> int:
        """Cheap fingerprint of the id file (count, sum, ends): catches a swapped or torn file."""
        if not self.count:
            return 0
        ids = self.main_ids
        return int((int(ids.sum()) * 1_000_003 + int(ids[0]) * 7919 + int(ids[-1])) % (1 << 61))

    def _write_state(self) -> None:
        gen = self.generation
        buffer = _NpyBuffer()
        np.save(buffer, self.dead)
        self.files["dead"] = f"dead.{gen}.npy"
        _write_atomic(self.folder / self.files["dead"], buffer.data)
        if self.ann is not None:
            self.files["ann"] = f"ann.{gen}.faiss"
            self.ann.write(self.folder / self.files["ann"])
        state = {
            "format": FORMAT,
            "attribute": self.spec.name,
            "fingerprint": self.spec.fingerprint,
            "kind": self.spec.kind,
            "options": self.spec.options,
            "generation": gen,
            "count": self.count,
            "mark": self.mark,
            "checksum": self._checksum(),
            "files": self.files,
        }
        _write_atomic(self.folder / "state.json", json.dumps(state, indent=1).encode())
        keep = {*self.files.values(), "state.json", ".lock"}
        for old in self.folder.iterdir():  # files of older generations
            if old.name not in keep:
                old.unlink(missing_ok=True)

    @contextmanager
    def _writing(self):
        """Exclusive among processes; yields False when another writer moved the state on."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield self._next_generation(self.folder) == self.generation + 1
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # -- changes ---------------------------------------------------------------------------

    def apply(self, changes: dict[int, np.ndarray | None], mark: int) -> None:
        """Images changed since `self.mark`: id -> its current vector, or None (removed or no
        current signature). Visible to the next search; main rows become tombstones."""
        delta = dict(self.delta)  # copy on write: searches in other threads iterate the old one
        rows = self._delta_rows()  # of the delta before this change
        for image_id, vector in changes.items():
            pos = self.position[image_id] if image_id < len(self.position) else -1
            if pos >= 0:
                if vector is not None and np.array_equal(self.vectors[pos], vector):
                    delta.pop(image_id, None)
                    continue  # e.g. a metadata edit: the vector did not change
                self.dead[pos] = True
                self.position[image_id] = -1
                if "dead" in self._cache:  # counted on, not again over every row
                    self._cache["dead"] += 1
            if vector is None:
                delta.pop(image_id, None)
            else:
                delta[image_id] = np.asarray(vector, np.float32)
        self._cache["delta"] = rows.changed(delta, changes, self.spec.space)
        self.delta = delta
        self.mark = max(self.mark, int(mark))
        for key in ("ids", "alive", "matrix", "allowed", "blocks"):
            self._cache.pop(key, None)
        self._changes += 1  # after the change: a mask made during it is not kept

    @property
    def tombstones(self) -> int:
        if "dead" not in self._cache:
            self._cache["dead"] = int(self.dead.sum())
        return self._cache["dead"]

    def merge(self) -> None:
        """Append the delta to main (vectors, ids, ANN) and write a new generation."""
        with self._writing() as current, self.ann_use.exclusive():
            if current:
                self._merge_locked()

    def _merge_locked(self) -> None:
        ids = np.array(sorted(self.delta), np.int64)
        rows = (
            np.stack([self.delta[i] for i in ids]).astype("<f4")
            if len(ids)
            else np.zeros((0, self.spec.dim), "<f4")
        )
        _append(self.folder / self.files["vectors"], self.count * self.spec.dim * 4, rows.tobytes())
        _append(self.folder / self.files["ids"], self.count * 8, ids.tobytes())
        start = self.count
        self.generation, self.count = self.generation + 1, self.count + len(ids)
        self.dead = np.concatenate([self.dead, np.zeros(len(ids), bool)])
        self._map_files()
        if self.spec.kind != "flat":
            if self.ann is None:
                self.ann = build_ann(
                    self.spec.kind,
                    self._space_rows(0, self.count),
                    self.spec.space.metric,
                    dict(self.spec.options),
                )
            else:
                self.ann.add(self._space_rows(start, self.count))
        self.delta = {}
        self._write_state()

    # -- reading ---------------------------------------------------------------------------

    @property
    def ids(self) -> np.ndarray:
        """Sorted ids of every image searchable in this attribute (main alive + delta),
        without sorting the main part again after each write."""
        if "ids" not in self._cache:
            alive = self.main_ids[self._live_positions()]
            delta = np.sort(np.fromiter(self.delta, np.int64, count=len(self.delta)))
            self._cache["ids"] = np.insert(alive, np.searchsorted(alive, delta), delta)
        return self._cache["ids"]

    def _live_positions(self) -> np.ndarray:
        """Positions of the live main rows, in id order (the id order of main is kept)."""
        if "main_order" not in self._cache:  # positions of main rows in id order
            self._cache["main_order"] = np.argsort(self.main_ids, kind="stable")
        order = self._cache["main_order"]
        return order[~self.dead[order]] if self.count else order

    def row_blocks(self) -> RowBlocks:
        """Every searchable row where it lies, for a scan of the whole collection (sketch,
        layout and colour parts): the main map and the delta snapshot's rows, and where
        each id's row is. Ids and positions only (O(collection) in ints after a write), no
        row copied: a gather of every row in id order cost seconds at 1M after each write."""
        with self.ann_use.shared():  # the delta and main of one generation (not mid-merge)
            delta = self._delta_rows()  # first: a row in this snapshot has its main row dead
            changes = self._changes
            kept = self._cache.get("blocks")
            if kept is not None and kept[0] == changes and kept[1] is delta:
                return kept[2]
            live, mapped, count = self._live_positions(), self.vectors, self.count
            main_ids = self.main_ids[live]
        at = np.searchsorted(main_ids, delta.ids)
        blocks = RowBlocks(
            np.insert(main_ids, at, delta.ids),
            mapped.view(np.ndarray)[:count],
            delta.rows,
            np.insert(live, at, count + delta.slots),
            mapped,
        )
        self._cache["blocks"] = (changes, delta, blocks)
        return blocks

    def __len__(self) -> int:
        """Images searchable here (a changed image's old row is a tombstone, so no overlap)."""
        return self.count - self.tombstones + len(self.delta)

    def contains(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, np.int64)
        in_main = np.zeros(len(ids), bool)
        small = ids < len(self.position)
        in_main[small] = self.position[ids[small]] >= 0
        if self.delta:
            in_main |= self._delta_slots(ids)[0]
        return in_main

    def _delta_slots(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Which of `ids` are in the delta, their rows' slots, and the rows by slot: one
        snapshot of the delta (another thread's write may replace it meanwhile). The delta's
        ids are sorted: a binary search, cheaper than isin."""
        delta = self._delta_rows()
        at = np.searchsorted(delta.ids, ids)
        found = at < len(delta.ids)
        found[found] = delta.ids[at[found]] == ids[found]
        slots = np.zeros(len(ids), np.int64)
        slots[found] = delta.slots[at[found]]
        return found, slots, delta.rows

    def _delta_rows(self) -> DeltaRows:
        """The delta as rows, index-space rows and sorted ids. `apply` brings it up to date
        with each change's own rows (O(change), not O(delta)); made whole only when the
        delta was replaced another way (load, merge)."""
        delta = self.delta
        cached = self._cache.get("delta")
        if cached is None or cached.delta is not delta:
            cached = self._cache["delta"] = DeltaRows.of(delta, self.spec.dim, self.spec.space)
        return cached

    def _delta_candidates(
        self, q: np.ndarray, k: int, allowed_ids: np.ndarray | None
    ) -> np.ndarray:
        """The k delta images nearest to `q` (the query in the index space), ranked there
        (monotone in the exact distance; the planner rescores them exactly)."""
        delta = self._delta_rows()
        ids, space = delta.slot_ids, delta.space
        if not len(delta.ids):
            return delta.ids
        inner = self.spec.space.metric == "ip"  # else l1
        key = -(space @ q) if inner else np.abs(space - q).sum(axis=1)
        keep = ids >= 0  # a changed or removed image's old slot is -1
        if allowed_ids is not None:
            keep &= in_sorted(allowed_ids, ids)
        slots = np.flatnonzero(keep)
        if not len(slots):
            return np.zeros(0, np.int64)
        take = min(k, len(slots))
        return ids[slots[np.argpartition(key[slots], take - 1)[:take]]]

    def _delta_nearest(
        self, query: np.ndarray, k: int, allowed_ids: np.ndarray | None
    ) -> np.ndarray:
        """The delta images that can be among the k nearest to `query` by the exact distance
        (ties and the rough distance's error band included), for a search whose ranking is
        this attribute alone: ~k rows to rescore instead of as many as main gives."""
        delta = self._delta_rows()
        slots = delta.slots  # of the live rows
        if allowed_ids is not None:
            slots = slots[in_sorted(allowed_ids, delta.ids)]
        if len(slots) <= k:
            return delta.slot_ids[slots]
        return delta.slot_ids[self._delta_best(delta, slots, query, k)[0]]

    def _delta_best(
        self, delta: DeltaRows, slots: np.ndarray, query: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """Of the delta's `slots`, those whose rows can be among the k nearest to `query`
        (ties and the rough distance's error band included), their rough distances, and its
        bound. Every used row is scored (one pass; dead ones are few: the buffers compact)."""
        if self.spec.rough is not None:
            values, bound = self.spec.rough(query, delta.rows)
        else:
            values, bound = self.spec.distance(query, delta.rows), 0.0
        values = values[slots]
        if len(slots) > k:
            kth = np.partition(values, k - 1)[k - 1]
            # 1e-9: the same row's float64 distance may round differently in another batch
            near = np.flatnonzero(values <= kth + 2.0 * bound + 1e-9)
            slots, values = slots[near], values[near]
        return slots, values, bound

    def rough_nearest(self, query: np.ndarray, wanted: int, effort: int) -> RoughNearest:
        """Candidates for a search ranked by this attribute alone, unfiltered, with a rough
        distance (`spec.rough`): `wanted` from the ANN structure and every live delta row,
        each scored roughly once from the rows it was read from (no id look-ups, no second
        gather of the delta's rows). The planner's `settle` picks the k best of both in one
        selection (the delta's own selection first cost ~20 us a search at 1M: two more
        passes right after the ANN scan, when the caches are cold). The delta snapshot is
        taken first and main rows tombstoned since the ANN's mask are dropped, so no image
        comes twice and none deleted comes back."""
        assert self.ann is not None and self.spec.rough is not None
        q = np.asarray(query, np.float32)
        delta = self._delta_rows()
        with self.ann_use.shared():  # the maps, the mask and the ANN of one generation
            main_ids, position = self.main_ids, self.position
            mapped = self.vectors.view(np.ndarray)
            mask = self.allowed_positions(None)
            positions = self.ann.search(self.spec.space(q), wanted, effort, mask)[0]
        if len(positions) and positions[-1] < 0:  # fewer found: -1s fill the end
            positions = positions[positions >= 0]
        ids = main_ids[positions]
        current = position[ids] == positions  # main ids are all within `position`
        if np.count_nonzero(current) < len(current):  # tombstoned after the mask was read
            positions, ids = positions[current], ids[current]  # (a write in another thread)
        main_rows = mapped.take(positions, axis=0)
        values, bound = self.spec.rough(q, main_rows)
        if not len(delta.slots):
            return RoughNearest(ids, values, bound, lambda at: main_rows.take(at, axis=0))
        delta_values, delta_bound = self.spec.rough(q, delta.rows)  # used rows: few dead
        slots, split, delta_rows = delta.slots, len(ids), delta.rows

        def rows_of(at: np.ndarray) -> np.ndarray:  # `at` ascending, as settle picks them
            if not len(at) or at[-1] < split:
                return main_rows.take(at, axis=0)
            in_main = at < split
            out = np.empty((len(at), main_rows.shape[1]), np.float32)
            out[in_main] = main_rows.take(at[in_main], axis=0)
            out[~in_main] = delta_rows.take(slots[at[~in_main] - split], axis=0)
            return out

        return RoughNearest(
            np.concatenate([ids, delta.ids]),
            np.concatenate([values, delta_values[slots]]),
            max(bound, delta_bound),
            rows_of,
        )

    def _main_positions(self, ids: np.ndarray) -> np.ndarray:
        """Each id's row in main, -1 where it has none (in the delta, or not here)."""
        positions = np.full(len(ids), -1, np.int64)
        small = ids < len(self.position)
        positions[small] = self.position[ids[small]]
        return positions

    def row(self, image_id: int) -> np.ndarray | None:
        """The exact vector of one image (a view of the map's row), None where it has none."""
        if 0 <= image_id < len(self.position):
            position = self.position[image_id]
            if position >= 0:
                return self.vectors.view(np.ndarray)[position]
        return self.delta.get(image_id)

    def rows_later(self, ids: np.ndarray) -> tuple[np.ndarray, Callable[[], np.ndarray]]:
        """Which of `ids` are here (a bool each), and a reader of those ids' rows as they are
        now, for a caller that may never read them: the map, the positions and the delta
        snapshot are taken now (a main row is never rewritten, an older generation's map
        stays valid after a merge or rebuild, a delta snapshot's rows never change), so a read
        after later writes still gives the rows of this moment."""
        ids = np.asarray(ids, np.int64)
        positions = self._main_positions(ids)
        in_main = positions >= 0
        mapped = self.vectors.view(np.ndarray)
        if in_main.all():
            return in_main, lambda: mapped.take(positions, axis=0)
        found, slots, delta_rows = self._delta_slots(ids[~in_main])
        present = in_main.copy()
        present[~in_main] = found
        main_rows = positions[present] >= 0  # of the present ids, which are main rows
        main_positions, delta_slots = positions[in_main], slots[found]

        def read() -> np.ndarray:
            out = np.empty((len(main_rows), self.spec.dim), np.float32)
            out[main_rows] = mapped.take(main_positions, axis=0)
            out[~main_rows] = delta_rows.take(delta_slots, axis=0)
            return out

        return present, read

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Exact vectors of `ids` (all searchable here), from the memory map or the delta."""
        ids = np.asarray(ids, np.int64)
        positions = self._main_positions(ids)
        in_main = positions >= 0
        mapped = self.vectors.view(np.ndarray)  # gathers without numpy.memmap's wrapping
        if in_main.all():  # the usual case: one gather
            return mapped.take(positions, axis=0)
        out = np.empty((len(ids), self.spec.dim), np.float32)
        if in_main.any():
            order = np.argsort(positions[in_main])  # ascending positions read the map in order
            picked = positions[in_main][order]
            target = np.flatnonzero(in_main)[order]
            out[target] = mapped.take(picked, axis=0)
        if not in_main.all():
            found, at, delta_rows = self._delta_slots(ids[~in_main])
            if not found.all():  # removed since the search chose them (another thread's write)
                raise IndexChanged(f"{self.spec.name}: {int((~found).sum())} rows left")
            out[~in_main] = delta_rows[at]
        return out

    def distances(self, query: np.ndarray, ids: np.ndarray | None = None) -> np.ndarray:
        """Exact 0..100 distances to `ids` (default: every image here, in id order)."""
        query = np.asarray(query, np.float32)
        # `self._cache.get`, not `self.ids`: after a write the sorted ids are rebuilt lazily
        # (O(n)), and a search of a few candidates must not pay for that
        if ids is None:
            return self._distances_to_all(query)
        if ids is self._cache.get("ids"):  # chosen here: a write may still land before the read
            return self._distances_to_all(query, expected=ids)
        ids = np.asarray(ids, np.int64)
        if len(ids) == len(self):  # every image: one pass over the map instead of a gather
            return self._distances_to_all(query, expected=ids)
        out = np.empty(len(ids), np.float64)
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            out[start : start + len(chunk)] = self.spec.distance(query, self.rows(chunk))
        return out

    def rough_distances(self, query: np.ndarray, ids: np.ndarray) -> RoughNearest | None:
        """`ids` with float32 distances, their error bound and a reader of their exact rows,
        or None where the attribute has no cheaper rough distance or the ids are many (a
        whole-map pass then)."""
        if self.spec.rough is None or len(ids) > CHUNK or len(ids) == len(self):
            return None
        rows, where = self._gathered(np.asarray(ids, np.int64))
        values, bound = self.spec.rough(np.asarray(query, np.float32), rows)
        return RoughNearest(ids, values[where], bound, lambda at: rows.take(where[at], axis=0))

    def _gathered(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The exact rows of `ids`, main rows first then delta rows, and each id's row there:
        two plain gathers into one buffer (`rows` scatters them into id order, which on a
        search's candidates cost twice the gathers)."""
        positions = self._main_positions(ids)
        in_main = positions >= 0
        mapped = self.vectors.view(np.ndarray)
        if in_main.all():
            return mapped.take(positions, axis=0), np.arange(len(ids))
        main_at, delta_at = np.flatnonzero(in_main), np.flatnonzero(~in_main)
        found, slots, delta_rows = self._delta_slots(ids[delta_at])
        if not found.all():  # removed since the search chose them (another thread's write)
            raise IndexChanged(f"{self.spec.name}: {int((~found).sum())} rows left")
        rows = np.empty((len(ids), self.spec.dim), np.float32)
        split = len(main_at)  # mode="clip": no buffered copy (the indices are valid)
        np.take(mapped, positions[main_at], axis=0, out=rows[:split], mode="clip")
        np.take(delta_rows, slots, axis=0, out=rows[split:], mode="clip")
        where = np.empty(len(ids), np.intp)
        where[main_at] = np.arange(split)
        where[delta_at] = np.arange(split, len(ids))
        return rows, where

    def _distances_to_all(
        self, query: np.ndarray, expected: np.ndarray | None = None
    ) -> np.ndarray:
        """Distances to every image in id order, reading the map front to back (no gather).
        `expected`: the (sorted) ids the caller chose; another set means a write came between."""
        main = np.empty(self.count, np.float64)
        for start in range(0, self.count, CHUNK):
            rows = np.asarray(self.vectors[start : start + CHUNK])
            main[start : start + len(rows)] = self.spec.distance(query, rows)
        alive = np.flatnonzero(~self.dead)
        ids = np.concatenate([self.main_ids[alive], np.fromiter(self.delta, np.int64)])
        values = np.concatenate([main[alive], np.zeros(len(self.delta))])
        if self.delta:
            rows = np.stack(list(self.delta.values()))
            values[len(alive) :] = self.spec.distance(query, rows)
        order = np.argsort(ids, kind="stable")
        if expected is not None and not np.array_equal(ids[order], expected):
            raise IndexChanged(f"{self.spec.name}: the images changed during the search")
        return values[order]

    @property
    def matrix(self) -> np.ndarray:
        """Every searchable vector in id order (for whole-collection scans such as sketches)."""
        if "matrix" not in self._cache:
            self._cache["matrix"] = self.rows(self.ids)
        return self._cache["matrix"]

    def allowed_positions(self, allowed_ids: np.ndarray | None) -> np.ndarray | None:
        """Bool per main position that may be returned: alive, and allowed by a filter."""
        if allowed_ids is None:  # kept until the next change: O(collection) to make
            if "alive" not in self._cache:
                self._cache["alive"] = ~self.dead if self.tombstones else None
            return self._cache["alive"]
        # kept while the same filter comes back (the collection keeps a filter's ids until
        # the catalog changes): O(collection) to make, per attribute of every search
        kept, changes = self._cache.get("allowed"), self._changes
        if kept is not None and kept[0] is allowed_ids and kept[1] == changes:
            return kept[2]
        given = allowed_ids
        mask = np.zeros(self.count, bool)
        allowed_ids = np.asarray(allowed_ids, np.int64)
        allowed_ids = allowed_ids[allowed_ids < len(self.position)]
        positions = self.position[allowed_ids]
        mask[positions[positions >= 0]] = True
        self._cache["allowed"] = (given, changes, mask)
        return mask

    def search(
        self,
        query: np.ndarray,
        k: int,
        *,
        allowed_ids: np.ndarray | None = None,
        effort: int | None = None,
        alone: int | None = None,
    ) -> np.ndarray:
        """Candidate ids near `query` (at most k from main and k from the delta). `alone`:
        the search ranks by this attribute alone and wants that many hits, so the delta
        (ranked exactly anyway) gives only those that can be among them (`_delta_nearest`)."""
        effort = effort or self.effort
        found: list[np.ndarray] = []
        if self.ann is None:
            pool = self.ids if allowed_ids is None else np.intersect1d(self.ids, allowed_ids)
            d = self.distances(query, pool)
            found.append(pool[np.argsort(d, kind="stable")[:k]])
        else:
            in_space = self.spec.space(query)
            with self.ann_use.shared():  # the mask, the ANN and the ids of one generation
                mask = self.allowed_positions(allowed_ids)
                positions = self.ann.search(in_space, k, effort, mask)[0]
                positions = positions[positions >= 0]
                found.append(self.main_ids[positions])
            if self.delta and alone is not None:
                found.append(self._delta_nearest(np.asarray(query, np.float32), alone, allowed_ids))
            elif self.delta:
                found.append(self._delta_candidates(in_space[0], k, allowed_ids))
        return np.concatenate(found) if found else np.zeros(0, np.int64)


class DeltaRows:
    """One snapshot of a delta for searches: exact and index-space rows in append-only
    buffers, the image id of each slot (-1: an image changed or removed since), and the live
    ids sorted with their slots. A change appends its rows to the same buffers (a snapshot
    that searches hold sees only its own `used` rows, and no written row is ever changed),
    so a write costs its own rows, not a restack of the whole delta (up to MERGE_AT rows in
    every attribute, ~12 ms per write at 230 rows before)."""

    def __init__(
        self,
        delta: dict[int, np.ndarray],
        buffers: np.ndarray,
        space_buffer: np.ndarray,
        slot_ids: np.ndarray,
        used: int,
    ):
        self.delta = delta  # the dict this snapshot is of
        self._buffers = buffers, space_buffer
        self.used = used
        self.slot_ids = slot_ids[:used]  # this snapshot's own copy
        self.rows = buffers[:used]
        self.space = space_buffer[:used]
        live = np.flatnonzero(self.slot_ids >= 0)
        order = np.argsort(self.slot_ids[live], kind="stable")
        self.slots = live[order]
        self.ids = self.slot_ids[self.slots]

    @classmethod
    def of(cls, delta: dict[int, np.ndarray], dim: int, space: IndexSpace) -> DeltaRows:
        ids = np.array(sorted(delta), np.int64)
        rows = np.zeros((max(2 * len(ids), 64), dim), np.float32)  # room to append
        if len(ids):
            rows[: len(ids)] = np.stack([delta[int(i)] for i in ids])
        space_rows = np.zeros((len(rows), space.dim), np.float32)
        if len(ids):
            space_rows[: len(ids)] = space(rows[: len(ids)])
        slot_ids = np.full(len(rows), -1, np.int64)
        slot_ids[: len(ids)] = ids
        return cls(delta, rows, space_rows, slot_ids, len(ids))

    def changed(
        self, delta: dict[int, np.ndarray], changed: Iterable[int], space: IndexSpace
    ) -> DeltaRows:
        """The snapshot of `delta`, this one's dict after a change to the `changed` ids: those
        whose row is not the one they had here lose their slot; new rows are appended."""
        old = self.delta
        gone = [i for i in changed if i in old and delta.get(i) is not old[i]]
        new = [i for i in changed if i in delta and old.get(i) is not delta[i]]
        live = len(self.ids) - len(gone) + len(new)
        rows, space_rows = self._buffers
        if self.used + len(new) > len(rows) or self.used > 2 * live + 64:
            return DeltaRows.of(delta, rows.shape[1], space)  # full, or mostly dead: compact
        slot_ids = np.full(len(rows), -1, np.int64)
        slot_ids[: self.used] = self.slot_ids
        if gone:
            at = np.searchsorted(self.ids, np.array(gone, np.int64))
            slot_ids[self.slots[at]] = -1
        if new:
            end = self.used + len(new)
            rows[self.used : end] = np.stack([delta[i] for i in new])
            space_rows[self.used : end] = space(rows[self.used : end])
            slot_ids[self.used : end] = new
            return DeltaRows(delta, rows, space_rows, slot_ids, end)
        return DeltaRows(delta, rows, space_rows, slot_ids, self.used)


class _NpyBuffer:
    """A file-like sink for np.save, so the bytes can be written atomically."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    @property
    def data(self) -> bytes:
        return b"".join(self.parts)
