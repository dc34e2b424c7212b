"""Where images are described: local worker processes, or a Dask cluster.

`describe(sources, settings, jobs, cluster)` is the one entry point `add` uses. Without a
cluster it is `ingest.describe_many` (local processes). With one (`tcp://host:8786`, the
address of a running `dask scheduler`, or `local:N` for a throw-away cluster of N worker
processes on this machine) every source becomes a task running the same worker function,
`ingest.describe_source`; results come back in order, through a bounded window of tasks in
flight, and the caller stores them exactly as it stores local results.

Why Dask and not Ray: both ran the same pipeline here (bench/bench_scaleout.py --engines); Dask
started faster, used less memory for a 2-worker cluster, installs as two small pure-Python
wheels, and its scheduler already does what a killed worker needs: the tasks of a dead worker
are run again on another one, and a task whose workers die repeatedly (an image that crashes
the process) fails alone as `KilledWorker`, reported here as a skipped image.

No image is missing or doubled after a worker dies: a lost task is re-run (the same image
described twice gives the same signature) and the store writes by path (the catalog) or by an
id derived from the path (Milvus), so a second write of an image replaces the first; and a
re-run after an interrupted one skips every image already stored.
"""

from __future__ import annotations

import hashlib
import socket
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError
from contextlib import contextmanager
from typing import Any

from lookalike import ingest
from lookalike.errors import DecodeError, LookalikeError

WINDOW = 256  # tasks in flight: results stream back while memory stays bounded
CONNECT_TIMEOUT_S = 20
RETRIES = 1  # a task that raised (not a dead worker: that is always retried) runs once more


class ClusterError(LookalikeError):
    """The compute cluster could not be reached or went away; the message names it."""


def describe(
    sources: list[str],
    settings: ingest.Settings,
    jobs: int,
    cluster: str | None = None,
    *,
    budget_s: float = ingest.FILE_BUDGET_S,
    while_starting: Callable[[], None] | None = None,
) -> Iterator[ingest.Extracted | DecodeError | None]:
    """Describe `sources`: in local supervised workers (`cluster` None; any order, None
    while they are busy, each file within `budget_s`) or on a Dask cluster (in order)."""
    if not cluster:
        return ingest.describe_many(
            sources, settings, jobs, budget_s=budget_s, while_starting=while_starting
        )
    if while_starting is not None:
        while_starting()  # e.g. load the CNN before the first results come back
    return describe_on_dask(sources, settings, cluster)


@contextmanager
def dask_client(address: str) -> Iterator[Any]:
    """A Dask client for `address` (`local:N` starts and later stops N local workers)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ClusterError(
            "running on a cluster needs Dask: pip install 'lookalike[scaleout]'"
        ) from None
    cluster = None
    try:
        if address.startswith("local:"):
            workers = address.removeprefix("local:")
            if not workers.isdigit() or not 0 < int(workers) <= 256:
                raise ClusterError(f"{address!r}: local:N needs a worker count from 1 to 256")
            cluster = LocalCluster(
                n_workers=int(workers),
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=50,
            )
            client = Client(cluster, timeout=CONNECT_TIMEOUT_S)
        else:
            _check_listening(address)
            client = Client(address, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError) as exc:
        if cluster is not None:
            cluster.close()
        raise ClusterError(f"Dask scheduler {address} cannot be reached: {exc}") from None
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _check_listening(address: str) -> None:
    """Refuse at once a TCP address where nothing listens (Dask's client would retry for
    CONNECT_TIMEOUT_S first); other transports are left to Dask."""
    scheme, _, rest = address.rpartition("://")
    host, _, port = rest.rpartition(":")
    if scheme not in ("", "tcp") or not host or not port.isdigit():
        return
    with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
        pass


def describe_on_dask(
    sources: list[str], settings: ingest.Settings, address: str
) -> Iterator[ingest.Extracted | DecodeError]:
    from distributed import KilledWorker

    run = uuid.uuid4().hex[:12]
    with dask_client(address) as client:
        pending: deque[tuple[str, Any]] = deque()

        def submit(source: str) -> None:
            key = f"lookalike-describe-{run}-{hashlib.sha256(source.encode()).hexdigest()[:16]}"
            future = client.submit(
                ingest.describe_source, source, settings, key=key, retries=RETRIES, pure=False
            )
            pending.append((source, future))

        def collect() -> ingest.Extracted | DecodeError:
            source, future = pending.popleft()
            try:
                return future.result()
            except KilledWorker:
                return DecodeError(source, "the worker describing it died every time it tried")
            except (OSError, TimeoutError, CancelledError) as exc:
                raise ClusterError(f"Dask scheduler {address} went away: {exc!r}") from None
            finally:
                future.release()

        for source in sources:
            submit(source)
            if len(pending) >= WINDOW:
                yield collect()
        while pending:
            yield collect()
