"""A collection's images and signatures on a Milvus server (pymilvus `MilvusClient`).

Milvus 2.3 allows one vector field per collection, so a lookalike collection `name` is one
Milvus collection per attribute, `lookalike__<name>__<attribute>`, all sharing the primary key
(the image id). Each row carries the image's catalog columns as scalar fields, its metadata as
a JSON field, its keywords (a JSON field, plus an ASCII-lower-cased array for filtering), the
attribute's raw signature (float32, base64 text: the exact vector the extractor's distance
needs) and the vector Milvus searches (the extractor's index space; L1 spaces of histograms
are square-rooted so Milvus's L2 finds the same neighbours Hellinger would). Filtered search
then runs inside each attribute's collection; the settings of the lookalike collection are in
every Milvus collection's description.

Ids come from the path (the first 63 bits of its SHA-256): the same image gets the same id on
every worker and every re-run, so a retried write is an upsert of the same rows, never a
second copy. Every write is an upsert by id, so it can be repeated after a failure.
Every call names the server in its errors (`StoreUnavailable` when it cannot be reached).

Reads see every acknowledged write. The collections are Strong, and a Strong read waits for
Milvus's next time tick (~200 ms) before it answers; a search makes several reads. So a search
(and a scan) takes one timestamp from the server's clock (`snapshot`) and makes all its reads
with that timestamp as their guarantee: the first read waits for the tick once, the others
answer at once, and each sees every write acknowledged before the snapshot began, from any
process (the server's clock stamped those writes earlier). Where the server cannot hand out a
timestamp, every read stays Strong.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lookalike.errors import CollectionError, LookalikeError
from lookalike.features.base import IndexSpace
from lookalike.store.backend import StoreAddress

PREFIX = "lookalike__"
FORMAT_VERSION = 1
TIMEOUT_S = 30.0
MAX_PATH = 4096  # bytes of a path or URL (VARCHAR limit chosen for the schema)
MAX_KEYWORDS = 512
MAX_KEYWORD = 256
MAX_LIMIT = 16_384  # Milvus's largest top-k
HNSW = {"M": 16, "efConstruction": 200}
RECORD_FIELDS = [
    "id",
    "path",
    "size",
    "mtime",
    "sha256",
    "width",
    "height",
    "format",
    "added_at",
    "updated_at",
    "metadata",
    "keywords",
]


class StoreUnavailable(LookalikeError):
    """The Milvus server could not be reached or stopped answering; the message names it."""


def image_id_for(path: str) -> int:
    """A stable positive 63-bit id from the path (see the module doc)."""
    value = int.from_bytes(hashlib.sha256(path.encode("utf-8")).digest()[:8], "big") >> 1
    return value or 1


def encode_vector(vector: np.ndarray) -> str:
    return base64.b64encode(np.asarray(vector, "<f4").tobytes()).decode("ascii")


def decode_vectors(texts: Sequence[str], dim: int) -> np.ndarray:
    data = b"".join(base64.b64decode(t) for t in texts)
    return np.frombuffer(data, "<f4").reshape(len(texts), dim).copy()


def lower_keywords(keywords: Sequence[str], metadata: Mapping[str, Any]) -> list[str]:
    """Every keyword an image answers `keywords CONTAINS` with: its own and the text items of
    its metadata's "keywords" list, ASCII-lower-cased as the filter language compares them."""
    listed = metadata.get("keywords")
    texts = (
        [*keywords, *(k for k in listed if isinstance(k, str))]
        if isinstance(listed, list)
        else list(keywords)
    )
    lowered = dict.fromkeys(
        "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in text) for text in texts
    )
    out = [k for k in lowered if len(k.encode("utf-8")) <= MAX_KEYWORD]
    if len(out) != len(lowered) or len(out) > MAX_KEYWORDS:
        raise LookalikeError(
            f"an image may have at most {MAX_KEYWORDS} keywords of at most {MAX_KEYWORD} bytes "
            "on the Milvus backend"
        )
    return out


@dataclass(frozen=True)
class AttributeLayout:
    """How one attribute is kept: raw width, searched space, Milvus metric."""

    name: str
    version: str
    dim: int
    space: IndexSpace

    @property
    def metric(self) -> str:
        return "IP" if self.space.metric == "ip" else "L2"

    def searched(self, vectors: np.ndarray) -> np.ndarray:
        """Raw signatures -> the vectors Milvus indexes (and the query, alike)."""
        mapped = self.space(vectors)
        if self.space.metric == "l1":
            mapped = np.sqrt(np.maximum(mapped, 0.0))  # Hellinger: L2 of roots ~ L1 of mass
        return np.ascontiguousarray(mapped, np.float32)


class MilvusStore:
    """Rows of one lookalike collection on one Milvus server."""

    def __init__(self, address: StoreAddress, *, timeout: float = TIMEOUT_S):
        self.address = address
        self.timeout = timeout
        self._client: Any = None
        self._pinned = threading.local()  # .timestamp: the guarantee of this thread's snapshot
        self.snapshots = True  # False: every read Strong (the benchmark's baseline)

    # -- connection and errors ----------------------------------------------------------------

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                from pymilvus import MilvusClient
            except ImportError:
                raise CollectionError(
                    "the Milvus backend needs pymilvus: pip install 'lookalike[scaleout]'"
                ) from None
            import logging

            logging.getLogger("pymilvus").setLevel(logging.CRITICAL)  # errors are raised here
            self._client = self._call(
                lambda: MilvusClient(
                    uri=f"http://{self.address.server}", timeout=min(self.timeout, 10.0)
                )
            )
        return self._client

    def _call(self, action: Any) -> Any:
        """Run one pymilvus call; its failure becomes an error that names the server."""
        try:
            return action()
        except LookalikeError:
            raise
        except Exception as exc:  # pymilvus and grpc raise many types; all are turned here
            reason = " ".join(str(getattr(exc, "message", None) or exc).split())[:300]
            text = reason.lower()
            unreachable = any(
                word in text
                for word in (
                    "unavailable",
                    "connect",
                    "deadline",
                    "timeout",
                    "timed out",
                    "closed channel",
                    "socket",
                    "not ready",
                )
            )
            kind = StoreUnavailable if unreachable else LookalikeError
            verb = "cannot be reached" if unreachable else "refused the request"
            raise kind(f"Milvus server {self.address.server} {verb}: {reason}") from None

    # -- read consistency (see the module doc) --------------------------------------------------

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads inside wait for one server timestamp, taken now (nested: the outer one's)."""
        if getattr(self._pinned, "timestamp", None) is not None or not self.snapshots:
            yield
            return
        self._pinned.timestamp = self._server_timestamp()
        try:
            yield
        finally:
            self._pinned.timestamp = None

    def _server_timestamp(self) -> int | None:
        """A fresh timestamp from the server's clock (AllocTimestamp), None where unsupported."""
        try:
            from pymilvus.grpc_gen import milvus_pb2

            stub = self.client._get_connection()._stub
            request = milvus_pb2.AllocTimestampRequest()
        except (ImportError, AttributeError):  # a pymilvus without it: reads stay Strong
            return None

        def allocate() -> int | None:
            import grpc

            try:
                response = stub.AllocTimestamp(request, timeout=self.timeout)
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.UNIMPLEMENTED:  # an older server
                    return None
                raise
            return int(response.timestamp) if response.status.code == 0 else None

        return self._call(allocate) or None

    def _consistency(self, timestamp: int | None = None) -> dict[str, Any]:
        """The read arguments: the snapshot's guarantee, or the collection's Strong level."""
        timestamp = timestamp or getattr(self._pinned, "timestamp", None)
        if timestamp is None:
            return {}
        return {"consistency_level": "Customized", "guarantee_timestamp": timestamp}

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):  # closing a dead connection: nothing to do
                self._client.close()
            self._client = None

    # -- collections --------------------------------------------------------------------------

    def collection_name(self, attribute: str) -> str:
        return f"{PREFIX}{self.address.name}__{attribute}"

    def settings(self) -> dict[str, Any] | None:
        """The lookalike collection's settings, or None when it does not exist."""
        prefix = f"{PREFIX}{self.address.name}__"
        names = [n for n in self._call(self.client.list_collections) if n.startswith(prefix)]
        if not names:
            return None
        described = self._call(lambda: self.client.describe_collection(sorted(names)[0]))
        try:
            settings = json.loads(described.get("description") or "")
        except ValueError:
            settings = None
        if not isinstance(settings, dict) or settings.get("lookalike") != FORMAT_VERSION:
            raise CollectionError(
                f"{self.address}: Milvus collection {sorted(names)[0]} was not made by this "
                "version of lookalike"
            )
        return settings

    def create(self, settings: Mapping[str, Any], layouts: Sequence[AttributeLayout]) -> None:
        from pymilvus import DataType

        description = json.dumps({"lookalike": FORMAT_VERSION, **settings})
        for layout in layouts:
            schema = self.client.create_schema(
                auto_id=False, enable_dynamic_field=False, description=description
            )
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("path", DataType.VARCHAR, max_length=MAX_PATH)
            schema.add_field("size", DataType.INT64)
            schema.add_field("mtime", DataType.DOUBLE)
            schema.add_field("sha256", DataType.VARCHAR, max_length=64)
            schema.add_field("width", DataType.INT64)
            schema.add_field("height", DataType.INT64)
            schema.add_field("format", DataType.VARCHAR, max_length=64)
            schema.add_field("added_at", DataType.DOUBLE)
            schema.add_field("updated_at", DataType.DOUBLE)
            schema.add_field("metadata", DataType.JSON)
            schema.add_field("keywords", DataType.JSON)
            schema.add_field(
                "keywords_lc",
                DataType.ARRAY,
                element_type=DataType.VARCHAR,
                max_capacity=MAX_KEYWORDS,
                max_length=MAX_KEYWORD,
            )
            schema.add_field("version", DataType.VARCHAR, max_length=64)
            schema.add_field("exact", DataType.VARCHAR, max_length=65_535)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=layout.space.dim)
            index = self.client.prepare_index_params()
            index.add_index(
                field_name="vector", index_type="HNSW", metric_type=layout.metric, params=HNSW
            )
            self._call(
                lambda schema=schema, index=index, layout=layout: self.client.create_collection(
                    self.collection_name(layout.name),
                    schema=schema,
                    index_params=index,
                    consistency_level="Strong",
                )
            )

    def drop(self, attributes: Sequence[str]) -> None:
        for name in attributes:
            self._call(lambda name=name: self.client.drop_collection(self.collection_name(name)))

    # -- writing --------------------------------------------------------------------------------

    def upsert(self, layouts: Sequence[AttributeLayout], rows: Sequence[Mapping[str, Any]]) -> None:
        """Write whole images: `rows` hold the record fields and "signatures" (attribute ->
        raw vector). Every attribute's collection gets its row; repeating it is harmless.
        Side signatures ("deep:classes", the classifier's top classes) go into their
        attribute's row (see `side_matrix`); a row read back whole carries them as "side"."""
        if not rows:
            return
        for layout in layouts:
            raw = np.stack([np.asarray(r["signatures"][layout.name], np.float32) for r in rows])
            searched = layout.searched(raw)
            data = [
                {
                    **{k: row[k] for k in RECORD_FIELDS},
                    "keywords": {  # a JSON field holds an object
                        "list": list(row["keywords"]),
                        **_side_signatures(layout.name, row),
                    },
                    "keywords_lc": lower_keywords([k[0] for k in row["keywords"]], row["metadata"]),
                    "version": layout.version,
                    "exact": encode_vector(raw[i]),
                    "vector": searched[i].tolist(),
                }
                for i, row in enumerate(rows)
            ]
            self._call(
                lambda layout=layout, data=data: self.client.upsert(
                    self.collection_name(layout.name), data=data, timeout=self.timeout
                )
            )

    def delete(self, attributes: Sequence[str], ids: Sequence[int]) -> None:
        if not ids:
            return
        for name in attributes:
            self._call(
                lambda name=name: self.client.delete(
                    self.collection_name(name), ids=[int(i) for i in ids], timeout=self.timeout
                )
            )

    # -- reading --------------------------------------------------------------------------------

    def records(self, attribute: str, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """id -> record fields, for those of `ids` that exist."""
        found: dict[int, dict[str, Any]] = {}
        for start in range(0, len(ids), 1000):
            chunk = [int(i) for i in ids[start : start + 1000]]
            rows = self._call(
                lambda chunk=chunk: self.client.get(
                    self.collection_name(attribute),
                    ids=chunk,
                    output_fields=RECORD_FIELDS,
                    timeout=self.timeout,
                    **self._consistency(),
                )
            )
            for row in rows:
                found[int(row["id"])] = unwrapped(row)
        return found

    def vectors(self, layout: AttributeLayout, ids: Sequence[int]) -> dict[int, np.ndarray]:
        """id -> raw signature of a current version, for those of `ids` that have one."""
        found: dict[int, np.ndarray] = {}
        for start in range(0, len(ids), 1000):
            chunk = [int(i) for i in ids[start : start + 1000]]
            rows = self._call(
                lambda chunk=chunk: self.client.get(
                    self.collection_name(layout.name),
                    ids=chunk,
                    output_fields=["id", "version", "exact"],
                    timeout=self.timeout,
                    **self._consistency(),
                )
            )
            rows = [r for r in rows if r["version"] == layout.version]
            if rows:
                matrix = decode_vectors([r["exact"] for r in rows], layout.dim)
                found.update({int(r["id"]): matrix[i] for i, r in enumerate(rows)})
        return found

    def full_rows(self, layout: AttributeLayout, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """id -> every stored field but the searched vector (for rewrites and exports)."""
        rows = self._call(
            lambda: self.client.get(
                self.collection_name(layout.name),
                ids=[int(i) for i in ids],
                output_fields=[*RECORD_FIELDS, "version", "exact"],
                timeout=self.timeout,
                **self._consistency(),
            )
        )
        return {int(r["id"]): unwrapped(r, side=True) for r in rows}

    def scan(
        self, attribute: str, fields: Sequence[str], expression: str = "", batch: int = 1000
    ) -> Iterator[list[dict[str, Any]]]:
        """Every row matching `expression` ("" = all), in batches, in id order, all read at one
        timestamp (held by this generator alone: the caller's reads between batches are its own)."""
        timestamp = getattr(self._pinned, "timestamp", None)
        if timestamp is None and self.snapshots:
            timestamp = self._server_timestamp()
        last = -1
        while True:
            condition = f"id > {last}" + (f" and ({expression})" if expression else "")
            rows = self._call(
                lambda condition=condition: self.client.query(
                    self.collection_name(attribute),
                    filter=condition,
                    output_fields=list(dict.fromkeys(["id", *fields])),
                    limit=batch,
                    timeout=self.timeout,
                    **self._consistency(timestamp),
                )
            )
            if not rows:
                return
            rows.sort(key=lambda r: r["id"])
            yield [unwrapped(r, side=True) for r in rows]
            if len(rows) < batch:
                return
            last = int(rows[-1]["id"])

    def side_matrix(self, layout: AttributeLayout, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(ids, rows) of a side signature kept in an attribute's rows: those of every image
        whose attribute signature is current (the side one was made with it), in id order.
        They live in the keywords JSON object, so collections made before need no new field."""
        ids: list[int] = []
        vectors: list[list[float]] = []
        from lookalike.query.milvus_filter import quote

        current = f"version == {quote(layout.version)}"
        for rows in self.scan(layout.name, ["keywords"], current):
            for row in rows:
                if name in row["side"]:
                    ids.append(int(row["id"]))
                    vectors.append(row["side"][name])
        matrix = np.array(vectors, np.float32) if vectors else np.zeros((0, 0), np.float32)
        return np.array(ids, np.int64), matrix

    def count(self, attribute: str) -> int:
        rows = self._call(
            lambda: self.client.query(
                self.collection_name(attribute),
                filter="",
                output_fields=["count(*)"],
                timeout=self.timeout,
                **self._consistency(),
            )
        )
        return int(rows[0]["count(*)"])

    def search(
        self,
        layout: AttributeLayout,
        query: np.ndarray,
        limit: int,
        expression: str = "",
        effort: int | None = None,
    ) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """Ids of up to `limit` images near `query` (raw signature) that match `expression`,
        nearest first, and their raw signatures (fetched by the search itself)."""
        limit = max(1, min(limit, MAX_LIMIT))
        vector = layout.searched(np.asarray(query, np.float32)[None, :])[0]
        params = {"metric_type": layout.metric, "params": {"ef": max(limit, effort or 64)}}
        hits = self._call(
            lambda: self.client.search(
                self.collection_name(layout.name),
                data=[vector.tolist()],
                anns_field="vector",
                limit=limit,
                filter=expression,
                output_fields=["version", "exact"],
                search_params=params,
                timeout=self.timeout,
                **self._consistency(),
            )
        )
        ids = np.array([int(h["id"]) for h in hits[0]], dtype=np.int64)
        rows = [h["entity"] for h in hits[0]]
        current = [i for i, r in enumerate(rows) if r["version"] == layout.version]
        matrix = decode_vectors([rows[i]["exact"] for i in current], layout.dim)
        return ids, {int(ids[i]): matrix[k] for k, i in enumerate(current)}


def unwrapped(row: Mapping[str, Any], *, side: bool = False) -> dict[str, Any]:
    """A row as the collection reads it: keywords as (keyword, source, score) tuples; with
    `side`, the side signatures kept beside them as "side" (name -> list of floats)."""
    out = dict(row)
    if "keywords" in out:
        stored = out["keywords"] or {}
        out["keywords"] = [tuple(k) for k in stored.get("list", [])]
        if side:
            out["side"] = dict(stored.get("side", {}))
    return out


def _side_signatures(attribute: str, row: Mapping[str, Any]) -> dict[str, Any]:
    """{"side": {name: floats}} of the row's side signatures of `attribute` ("deep:classes"
    for "deep"): new ones from "signatures", else those it was read back with ("side")."""
    kept = dict(row.get("side") or {})
    kept.update(
        (name, np.asarray(vector, np.float32).tolist())
        for name, vector in row["signatures"].items()
        if name.startswith(attribute + ":")
    )
    return {"side": kept} if kept else {}
