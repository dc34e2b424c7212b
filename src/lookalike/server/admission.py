"""Who and how much the server lets in: Host names, concurrent work, threads per request.

- `allowed_host`: a browser page from another site can make the victim's browser talk to
  127.0.0.1 through a DNS name it controls (DNS rebinding); such a request carries the
  attacker's name in its Host header, so only configured names (and IP literals, which no
  rebinding can produce) are served.
- `WorkGate`: at most N expensive jobs (decoding and describing images, ranking) run at once;
  a request that cannot get a slot within a short wait is answered 503 with Retry-After instead
  of queueing without bound. Waiters are served first come, first served (a freed slot is
  handed to the oldest waiter, so none starves while newer requests overtake it). The slot is
  given back when the worker thread really finishes, not when the client gives up, so
  abandoned work still counts.
- `freeze_heap`: the objects a server makes while starting (modules, models, the text model
  loaded in the background) live as long as it does; CPython's full garbage collections
  scanned all of them again and again, holding the GIL, so every thread stopped for 0.3-0.8 s
  several times a minute under load (measured: a search by id arriving then waited that long
  before the event loop even read it; by-id p99 ~1 s against ~0.2 s inside the app). Frozen
  once started, they are skipped; what requests make is still collected.
- `server_timing`: every answer says where its time went (`Server-Timing`: waiting for a slot,
  the work itself, the whole request in the app), so a slow answer can be told apart from a
  slow network or client.
- `budget_threads`: one BLAS / OpenMP / torch thread per request, since requests are already
  the parallelism (on 2 cores, default thread pools in each request oversubscribe the machine);
  and a short GIL switch interval (`GIL_SWITCH_S`): a search by id is many short steps, each
  of which must take the GIL back from a thread describing an upload. At CPython's default
  of 5 ms it waits up to 5 ms per step (the convoy effect); measured in one process, 2 threads
  describing and 4 searching by id at 100k images: by-id p50 490-870 ms at 5 ms, 250-300 ms
  at 0.2-0.5 ms, uploads no slower (bench/README.md).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import gc
import ipaddress
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import anyio

T = TypeVar("T")

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARDS = ("0.0.0.0", "::", "")
GIL_SWITCH_S = 0.0005  # sys.setswitchinterval in a server process (CPython's default: 0.005)
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def allowed_host_names(configured: str, bind_host: str) -> frozenset[str]:
    """Host names served: the configured ones (comma-separated; `*` = any), else the loopback
    names and the bind address."""
    names = {n.strip().lower().strip("[]") for n in configured.split(",") if n.strip()}
    if not names:
        names = {*LOOPBACK_NAMES, bind_host.lower().strip("[]")}
    return frozenset(names)


def host_of(header: str) -> str:
    """The name in a Host header, without port and IPv6 brackets, lower case."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header[1:]
    if header.count(":") == 1:
        return header.split(":", 1)[0]
    return header


def allowed_host(header: str | None, names: frozenset[str]) -> bool:
    """Whether a request's Host header names this server (any IP literal does: DNS
    rebinding needs a name)."""
    if "*" in names:
        return True
    if not header:
        return False
    host = host_of(header)
    if host in names:
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class Saturated(Exception):
    """Every slot of a gate stayed busy for the whole wait."""

    def __init__(self, gate: str, retry_after_s: int):
        super().__init__(gate)
        self.gate = gate
        self.retry_after_s = retry_after_s


class WorkGate:
    """A bounded number of concurrent jobs of one kind, run in worker threads; waiters get
    freed slots in arrival order."""

    def __init__(self, name: str, slots: int, wait_s: float):
        self.name = name
        self.slots = slots
        self.wait_s = wait_s
        self._free = slots
        self._waiters: collections.deque[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = (
            collections.deque()
        )
        self._lock = threading.Lock()  # released from worker threads, taken on the event loop

    @property
    def busy(self) -> int:
        return self.slots - self._free

    async def acquire(self) -> None:
        """Take a slot, waiting at most `wait_s` behind the earlier waiters; Saturated when
        none comes."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._free > 0 and not self._waiters:
                self._free -= 1
                return
            handed: asyncio.Future = loop.create_future()
            waiter = (loop, handed)
            self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(handed), self.wait_s)
        except (TimeoutError, asyncio.CancelledError) as exc:
            with self._lock:
                given = handed.done() or waiter not in self._waiters
                if not given:
                    self._waiters.remove(waiter)
            if given:  # the slot came just as the wait ended: ours to give back
                self.release()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise Saturated(self.name, max(1, round(self.wait_s))) from None

    def release(self) -> None:
        """Give a slot back (from any thread): to the oldest waiter, else to the pool."""
        with self._lock:
            if not self._waiters:
                self._free += 1
                return
            loop, handed = self._waiters.popleft()
        loop.call_soon_threadsafe(_hand_over, handed)

    async def run(self, func: Callable[[], T], timeout_s: float | None = None) -> T:
        """`func()` in a worker thread holding a slot until it returns (even if abandoned after
        `timeout_s`, which raises TimeoutError here)."""
        timings = TIMINGS.get({})  # outside a request (tests, tools): measured, not shown
        waited = time.perf_counter()
        await self.acquire()
        started = time.perf_counter()
        timings[f"{self.name}-wait"] = (started - waited) * 1000

        def held() -> T:
            try:
                return func()
            finally:
                timings[self.name] = (time.perf_counter() - started) * 1000
                self.release()

        if timeout_s is None:
            return await anyio.to_thread.run_sync(held, abandon_on_cancel=True)
        with anyio.fail_after(timeout_s):
            return await anyio.to_thread.run_sync(held, abandon_on_cancel=True)


def _hand_over(handed: asyncio.Future) -> None:
    """Give a slot to a waiter on its event loop (a waiter that gave up meanwhile finds it
    taken from the queue and gives it back itself)."""
    if not handed.cancelled():
        handed.set_result(None)


# where the time of the request being served went (ms by step); set per request by the
# middleware, filled in by the gates
TIMINGS: contextvars.ContextVar[dict[str, float]] = contextvars.ContextVar("timings")


def start_timing() -> dict[str, float]:
    """A fresh record of this request's steps, from now."""
    timings = {"started": time.perf_counter()}
    TIMINGS.set(timings)
    return timings


def server_timing(timings: dict[str, float]) -> str:
    """The `Server-Timing` header value: each step's milliseconds and the whole so far."""
    steps = {k: v for k, v in timings.items() if k != "started"}
    steps["app"] = (time.perf_counter() - timings["started"]) * 1000
    return ", ".join(f"{name};dur={ms:.1f}" for name, ms in steps.items())


def budget_threads_env() -> None:
    """Ask native thread pools for one thread each (read by libraries loaded after this)."""
    for name in THREAD_ENV:
        os.environ.setdefault(name, "1")


def budget_threads(*, torch_needed: bool = False) -> dict[str, Any]:
    """One thread per request in BLAS/OpenMP pools already loaded and in torch (imported here
    when the collection needs it, so a later lazy import cannot bring its default pool back);
    what was set, for the log."""
    budget_threads_env()
    sys.setswitchinterval(GIL_SWITCH_S)
    done: dict[str, Any] = {"gil_switch_ms": GIL_SWITCH_S * 1000}
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1)
        done["threadpoolctl"] = 1
    except ImportError:
        pass
    import importlib

    if torch_needed or "torch" in sys.modules:  # a classic-only server never loads torch
        torch = importlib.import_module("torch")
        torch.set_num_threads(1)
        done["torch"] = torch.get_num_threads()
    return done


def freeze_heap(*, collect: bool) -> int:
    """Move every object alive now out of the garbage collector's reach (`gc.freeze`): call
    once the long-lived ones are made. `collect` first frees what is already garbage (a full
    pass: at start-up, not while serving). How many objects are frozen in all."""
    if collect:
        gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No garbage collection while long-lived objects are being made in bulk (a model and
    the modules it imports: each full pass would scan them all again); they are frozen
    afterwards, and whatever cycles requests left meanwhile are collected later."""
    gc.disable()
    try:
        yield
    finally:
        freeze_heap(collect=False)
        gc.enable()


def thread_report() -> dict[str, float | None]:
    """Threads each native pool would use now and the GIL switch interval (for /api/info):
    the budget, as measured."""
    blas = None
    try:
        from threadpoolctl import threadpool_info

        pools = [pool["num_threads"] for pool in threadpool_info()]
        blas = max(pools) if pools else None
    except ImportError:
        pass
    # torch may be half-imported by another thread (the text model's warm-up): a module in
    # sys.modules is not yet a usable one, so ask only once its function exists
    torch_threads = getattr(sys.modules.get("torch"), "get_num_threads", None)
    return {
        "blas": blas,
        "torch": torch_threads() if torch_threads is not None else None,
        "gil_switch_ms": round(sys.getswitchinterval() * 1000, 3),
    }
