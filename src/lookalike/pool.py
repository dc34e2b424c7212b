"""A supervised pool of spawn worker processes: a time budget per task, crash detection,
replacement.

`concurrent.futures` treats one dead worker as a broken pool: every pending task fails with
BrokenProcessPool. Here a task that kills its worker (os._exit, a segfault in a codec, the
out-of-memory killer) or runs past its budget costs that task alone: it comes back as a
`Failure` with the reason, the worker is replaced, and the run goes on. Each worker holds one
task at a time, so memory stays bounded by the number of workers whatever the number of tasks,
and results stream back as they finish (not in submission order).
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import ctypes.util
import itertools
import multiprocessing
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from lookalike.errors import LookalikeError

START_BUDGET_S = 180.0  # a fresh worker imports numpy, scikit-image...: slow on a busy machine
MAX_LOST_TASKS = 3  # calls handed to workers that died before taking them, in a row
MAX_START_FAILURES = 3  # workers that die before they are ready this many times in a row: give up


MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed: arrays of a frame stay on the heap
TRIM_THRESHOLD = 128 << 20  # freed heap kept for the next image, up to this much per worker
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)


def tune_allocator() -> bool:
    """Keep freed memory for reuse in this process instead of returning it to the system.

    Extraction makes dozens of temporary arrays of a few hundred KB to a few MB per image.
    glibc serves large ones with fresh mmaps and trims freed heap above a threshold it adapts
    to the largest block freed so far; when a process's largest arrays are the extraction
    temporaries themselves (small images, a fresh worker), every image page-faults its working
    memory in again: a colour histogram alone ran 30-40 ms so on this project's 2-core VM
    against 9-12 ms with memory kept. Fixed thresholds make that independent of what the
    worker happened to see first. It changes where memory comes from, never a computed value;
    at most TRIM_THRESHOLD of freed heap is kept per worker. Returns whether the thresholds
    were set (False off glibc, e.g. macOS or musl, where this is a no-op)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc without mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )


@dataclass(frozen=True)
class Failure:
    """A task the pool could not complete, and why (crash, time budget, exception)."""

    item: Any
    reason: str


def _worker_main(
    conn: Connection,
    function: Callable[[Any], Any],
    initializer: Callable[..., None] | None,
    init_args: tuple,
) -> None:
    """Run tasks from the parent until it sends None or goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    tune_allocator()
    try:
        if initializer is not None:
            initializer(*init_args)
    except BaseException as exc:
        conn.send(("init-failed", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        number, item = task
        try:  # the task is taken: a death from now on is this task's (see `lost`)
            conn.send(("took", number))
        except OSError:
            return
        try:
            reply = (number, "ok", function(item))
        except BaseException as exc:  # noqa: BLE001 - any error is this task's, not the pool's
            reply = (number, "error", f"{type(exc).__name__}: {exc}")
        try:
            conn.send(reply)
        except OSError:  # the parent is gone (killed): nothing left to do
            return
        except Exception as exc:  # a result that cannot be pickled
            conn.send((number, "error", f"result could not be sent back: {exc}"))


def _taken_meanwhile(worker: _Worker) -> bool:
    """Whether a dead worker's pipe still holds its "took" (sent, then the worker died)."""
    try:
        while worker.conn.poll():
            message = worker.conn.recv()
            if message and message[0] == "took":
                return True
    except Exception:  # noqa: BLE001 - closed or cut short: nothing more was sent
        return False
    return False


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class _Worker:
    """One worker process, its end of the pipe and the task it holds."""

    def __init__(self, context: Any, target_args: tuple):
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child, *target_args))
        self.process.daemon = True
        self.process.start()
        child.close()
        self.ready = False
        self.task: tuple[int, Any] | None = None
        self.taken = False  # the worker said it took `task` (before running it)
        self.since = time.monotonic()

    def give(self, number: int, item: Any) -> None:
        self.task = (number, item)
        self.taken = False
        self.since = time.monotonic()
        self.conn.send((number, item))

    def stop(self, *, force: bool) -> None:
        if not force:
            with contextlib.suppress(OSError):
                self.conn.send(None)
            self.process.join(timeout=2.0)
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.conn.close()


def supervised_map(
    function: Callable[[Any], Any],
    items: Iterable[Any],
    *,
    workers: int,
    budget_s: float,
    initializer: Callable[..., None] | None = None,
    init_args: tuple = (),
    tick_s: float | None = None,
    while_starting: Callable[[], None] | None = None,
) -> Iterator[tuple[Any, Any] | None]:
    """Yield (item, result) as tasks finish; result is a `Failure` when the task raised,
    crashed its worker or ran past `budget_s` seconds. With `tick_s`, yield None at least that
    often while waiting, so a caller can do timed work (commit what it holds) meanwhile.
    `while_starting` runs here while the workers start (e.g. load a model the caller needs).

    `function` and `initializer` must be importable module-level functions (workers are
    spawned, not forked: torch and threads do not survive fork). Raises LookalikeError when
    workers cannot even start."""
    context = multiprocessing.get_context("spawn")
    target_args = (function, initializer, init_args)
    source = iter(items)
    exhausted = False
    retry: collections.deque[Any] = collections.deque()  # items whose worker died untaken
    lost_in_a_row = 0
    start_failures = 0
    number = 0
    pool = [_Worker(context, target_args) for _ in range(max(1, workers))]
    try:
        if while_starting is not None:
            while_starting()
        while True:
            for worker in pool:  # one task to every idle, ready worker
                if worker.ready and worker.task is None and (retry or not exhausted):
                    if retry:
                        item = retry.popleft()
                    else:
                        try:
                            item = next(source)
                        except StopIteration:
                            exhausted = True
                            break
                    worker.give(number, item)
                    number += 1
            if exhausted and not retry and all(worker.task is None for worker in pool):
                return
            now = time.monotonic()
            deadlines = [
                worker.since + (budget_s if worker.ready else START_BUDGET_S) for worker in pool
            ]
            timeout = max(0.0, min(deadlines) - now)
            if tick_s is not None:
                timeout = min(timeout, tick_s)
            waitables: list[Any] = [w.conn for w in pool] + [w.process.sentinel for w in pool]
            signalled = set(wait(waitables, timeout))
            yielded = False
            for slot, worker in enumerate(pool):
                outcome = _outcome(worker, signalled, budget_s)
                if outcome is None:
                    continue
                kind, payload = outcome
                if kind == "ready":
                    worker.ready = True
                    start_failures = 0
                    continue
                if kind in ("done", "error"):
                    assert worker.task is not None
                    _, item = worker.task
                    worker.task = None
                    lost_in_a_row = 0
                    yield (item, payload if kind == "done" else Failure(item, payload))
                    yielded = True
                    continue
                # the worker is gone (crashed or killed for its budget): replace it
                worker.stop(force=True)
                if kind == "init-failed":
                    raise LookalikeError(f"worker processes cannot start: {payload}")
                pool[slot] = _Worker(context, target_args)
                if kind == "lost" and lost_in_a_row < MAX_LOST_TASKS:
                    assert worker.task is not None  # not the item's doing: another worker's
                    retry.append(worker.task[1])
                    lost_in_a_row += 1
                elif worker.task is not None:
                    yield (worker.task[1], Failure(worker.task[1], payload))
                    yielded = True
                else:
                    start_failures += 1
                    if start_failures >= MAX_START_FAILURES:
                        raise LookalikeError(f"worker processes cannot start: {payload}")
            if not yielded and tick_s is not None:
                yield None
    finally:
        graceful = exhausted
        for worker in pool:
            worker.stop(force=not graceful or worker.task is not None)


def _outcome(worker: _Worker, signalled: set, budget_s: float) -> tuple[str, Any] | None:
    """What happened to one worker since the last look, or None if it is still at work."""
    if worker.conn in signalled:
        try:
            message = worker.conn.recv()
        except Exception:  # closed, or a message cut short by a crash
            message = None
        if message is not None:
            if message[0] == "took":
                worker.taken = True
                return None  # at work now
            if message[0] == "ready":
                return ("ready", None)
            if message[0] == "init-failed":
                return ("init-failed", message[1])
            _, status, payload = message
            return ("done" if status == "ok" else "error", payload)
    if worker.conn in signalled or worker.process.sentinel in signalled:
        worker.process.join(timeout=1.0)
        if not worker.process.is_alive():
            reason = _exit_reason(worker.process.exitcode)
            if worker.task is not None and not worker.taken and _taken_meanwhile(worker):
                worker.taken = True
            if worker.task is not None and not worker.taken:  # died before it read the task
                return ("lost", f"the worker process {reason} before taking the task")
            if worker.task is not None:
                return ("crashed", f"crashed the worker process ({reason})")
            return ("start-failed", f"a worker process {reason} while starting")
    budget = budget_s if worker.ready else START_BUDGET_S
    if time.monotonic() - worker.since > budget:
        if worker.task is not None:
            return ("timeout", f"took longer than {budget_s:g} s (time budget per file)")
        return ("start-failed", f"a worker process took longer than {budget:g} s to start")
    return None


class TaskFailed(LookalikeError):
    """A `WorkerPool` call that crashed its worker, ran past its budget, raised, or found
    no worker to run on."""

    def __init__(self, reason: str, *, timed_out: bool = False, no_worker: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.timed_out = timed_out
        self.no_worker = no_worker


class WorkerPool:
    """Long-lived supervised workers answering calls from many threads (a server's requests).

    The same workers as `supervised_map` (spawned, one task at a time, ready only once their
    initializer ran), kept between calls: `call` runs `function(item)` on an idle worker and
    returns its result. A call that crashes its worker or runs past its budget costs that
    call alone (TaskFailed); the worker is replaced in the background."""

    def __init__(
        self,
        function: Callable[[Any], Any],
        *,
        workers: int,
        initializer: Callable[..., None] | None = None,
        init_args: tuple = (),
    ):
        self._context = multiprocessing.get_context("spawn")
        self._target_args = (function, initializer, init_args)
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._live: set[_Worker] = set()
        self._lock = threading.Lock()
        self._numbers = itertools.count()
        self._closed = False
        self.size = max(1, workers)
        self.replaced = 0  # workers lost to a crash or a time budget, and started again
        self.start_error: str | None = None
        for _ in range(self.size):
            self._start()

    def _start(self) -> None:
        threading.Thread(target=self._bring_up, name="lookalike-worker-start", daemon=True).start()

    def _bring_up(self) -> None:
        """Start one worker and hand it to the idle queue once ready; retry a few times."""
        for _ in range(MAX_START_FAILURES):
            if self._closed:
                return
            worker = _Worker(self._context, self._target_args)
            with self._lock:
                self._live.add(worker)
            outcome = None
            while outcome is None:
                signalled = set(wait([worker.conn, worker.process.sentinel], START_BUDGET_S))
                outcome = _outcome(worker, signalled, START_BUDGET_S)
            kind, payload = outcome
            if kind == "ready" and not self._closed:
                worker.ready = True
                self._idle.put(worker)
                return
            self._retire(worker)
            if kind == "init-failed":
                break
        else:
            payload = f"workers cannot start: {payload}"
        if not self._closed:
            self.start_error = str(payload)

    def _retire(self, worker: _Worker) -> None:
        worker.stop(force=True)
        with self._lock:
            self._live.discard(worker)

    @property
    def ready(self) -> int:
        """Workers ready now (idle or at work)."""
        with self._lock:
            return sum(1 for worker in self._live if worker.ready and worker.process.is_alive())

    @property
    def pids(self) -> list[int]:
        with self._lock:
            return [w.process.pid for w in self._live if w.ready and w.process.pid is not None]

    def wait_ready(self, timeout_s: float = START_BUDGET_S) -> None:
        """Block until every worker is ready; LookalikeError when they cannot start."""
        deadline = time.monotonic() + timeout_s
        while self.ready < self.size:
            if self.start_error is not None:
                raise LookalikeError(f"worker processes cannot start: {self.start_error}")
            if time.monotonic() > deadline:
                raise LookalikeError(f"worker processes not ready after {timeout_s:g} s")
            time.sleep(0.05)

    def call(self, item: Any, *, budget_s: float, wait_s: float) -> Any:
        """`function(item)` in a worker, waiting at most `wait_s` for one to be idle and
        `budget_s` for the answer; TaskFailed otherwise. A worker that dies before it took
        the item (killed while idle, before it could exit) is replaced and the item given to
        another: that death is not the item's."""
        deadline = time.monotonic() + wait_s
        for _ in range(MAX_LOST_TASKS):
            worker = self._idle_worker(max(0.0, deadline - time.monotonic()))
            with contextlib.suppress(OSError, ValueError):  # died while idle: the pipe is gone
                worker.give(next(self._numbers), item)
            outcome = None
            while outcome is None:
                left = worker.since + budget_s - time.monotonic()
                signalled = set(wait([worker.conn, worker.process.sentinel], max(0.0, left) + 0.01))
                outcome = _outcome(worker, signalled, budget_s)
            if outcome[0] != "lost":
                break
            self._replace(worker)
        kind, payload = outcome
        if kind == "lost":  # MAX_LOST_TASKS workers in a row died before taking it
            raise TaskFailed(str(payload))
        if kind in ("done", "error"):
            worker.task = None
            if self._closed:
                self._retire(worker)
            else:
                self._idle.put(worker)
            if kind == "error":
                raise TaskFailed(payload)
            return payload
        self._replace(worker)  # crashed, or past its budget: killed
        if kind == "timeout":
            raise TaskFailed(f"took longer than {budget_s:g} s", timed_out=True)
        raise TaskFailed(str(payload))

    def _idle_worker(self, wait_s: float) -> _Worker:
        """An idle, live worker (one that died while idle is replaced, not handed out)."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                worker = self._idle.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                reason = self.start_error or f"no worker process free within {wait_s:g} s"
                raise TaskFailed(reason, no_worker=True) from None
            if worker.process.is_alive():
                return worker
            self._replace(worker)

    def _replace(self, worker: _Worker) -> None:
        self._retire(worker)
        self.replaced += 1
        self._start()

    def close(self) -> None:
        """Stop every worker (idle ones politely; a call still running gets TaskFailed)."""
        self._closed = True
        while True:
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                break
            worker.stop(force=False)
            with self._lock:
                self._live.discard(worker)
        with self._lock:
            busy = list(self._live)
        for worker in busy:
            if worker.process.is_alive():
                worker.process.kill()
