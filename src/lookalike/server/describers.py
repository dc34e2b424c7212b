"""Uploads described in worker processes at a lower CPU priority, not in the server's threads.

Describing an upload (decode, CNN, classic signature) costs ~90 ms of CPU; done in the server's
threads it competes with searches by id for the GIL and for the cores: at 100k images with 8
clients, by-id p99 ~1 s against ~15 ms for a search alone (bench/README.md). Here each upload's
bytes go to one of `describe_workers` spawned processes (as many as describe slots), each
`os.nice`d by `describe_nice`, which sends back only what the request needs: the signatures of
the attributes asked for (the query's weighted ones), the query windows when asked, size and
format. The ranking stays in the server. The kernel gives the searches the cores first, and a
search never waits for the GIL behind an extraction.

A decoder that crashes or runs away takes down a worker, not the server: that request is
answered 400 (crash) or 408 (past `request_timeout_s`), the worker is replaced
(`pool.WorkerPool`), and memory of one hostile input is bounded per worker.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lookalike import ingest
from lookalike.api import Collection
from lookalike.errors import DecodeError, LookalikeError
from lookalike.pool import TaskFailed, WorkerPool


@dataclass(frozen=True)
class DescribeTask:
    """One upload to describe, as it crosses to a worker."""

    data: bytes
    label: str
    tags: bool
    attributes: tuple[str, ...] | None
    windows: bool


class WorkerTimeout(LookalikeError):
    """A describe worker ran past the request's time budget (it was stopped and replaced)."""


class NoWorker(LookalikeError):
    """No describe worker was free in time (they are busy or being replaced)."""


_WORKER_COLLECTION: list[Collection] = []


def _start_describer(directory: str, niceness: int) -> None:
    """Worker initializer: lower the priority, one native thread, open the collection for its
    extraction settings and load and warm every extractor (the CNN too) before any request."""
    if niceness > 0:
        os.nice(niceness)
    from lookalike.server.admission import budget_threads, budget_threads_env

    budget_threads_env()
    coll = Collection.open(directory)
    budget_threads(torch_needed="deep" in coll.attributes)
    from lookalike.features.base import warm_up

    warm_up(coll.extractors.values())
    coll._warm_up()
    _WORKER_COLLECTION[:] = [coll]


def _describe_in_worker(task: DescribeTask) -> tuple[Any, dict[str, np.ndarray]] | DecodeError:
    ingest._test_fault(task.label)  # tests only: crash or hang on a named upload
    try:
        return _WORKER_COLLECTION[0]._describe_new(
            task.data,
            task.label,
            tags=task.tags,
            attributes=task.attributes,
            windows=task.windows,
        )
    except DecodeError as exc:  # the client's image: sent back as a value, raised there
        return exc


class Describers:
    """The server's describe workers, installed as the collection's `describe_elsewhere`."""

    def __init__(self, coll: Collection, *, workers: int, niceness: int, budget_s: float):
        self.niceness = niceness
        self.budget_s = budget_s
        self.wait_s = budget_s
        self.pool = WorkerPool(
            _describe_in_worker,
            workers=workers,
            initializer=_start_describer,
            init_args=(str(coll.directory), niceness),
        )

    def __call__(
        self,
        data: bytes,
        label: str,
        *,
        tags: bool = True,
        attributes: Sequence[str] | None = None,
        windows: bool = False,
    ) -> tuple[ingest.Extracted, dict[str, np.ndarray]]:
        task = DescribeTask(
            data, label, tags, None if attributes is None else tuple(attributes), windows
        )
        try:
            answer = self.pool.call(task, budget_s=self.budget_s, wait_s=self.wait_s)
        except TaskFailed as exc:
            if exc.timed_out:
                raise WorkerTimeout(
                    f"{label}: describing took longer than {self.budget_s:g} s"
                ) from None
            if exc.no_worker:
                raise NoWorker(exc.reason) from None
            raise DecodeError(label, f"could not be described ({exc.reason})") from None
        if isinstance(answer, DecodeError):
            raise answer
        return answer

    def report(self) -> dict[str, Any]:
        """For /api/info: workers wanted and ready, their measured niceness, replacements."""
        nice = sorted({_niceness(pid) for pid in self.pool.pids} - {None})
        return {
            "workers": self.pool.size,
            "ready": self.pool.ready,
            "nice": self.niceness,
            "measured_nice": nice,
            "replaced": self.pool.replaced,
        }

    def close(self) -> None:
        self.pool.close()


def _niceness(pid: int) -> int | None:
    try:
        return os.getpriority(os.PRIO_PROCESS, pid)
    except OSError:
        return None
