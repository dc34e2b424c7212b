"""Who and how much the server lets in: Host names, concurrent work, threads per request.

- `allowed_host`: a browser page from another site can make the victim's browser talk to
  127.0.0.1 through a DNS name it controls (DNS rebinding); such a request carries the
  attacker's name in its Host header, so only configured names (and IP literals, which no
  rebinding can produce) are served.
- `WorkGate`: at most N expensive jobs (decoding and describing images, ranking) run at once;
  a request that cannot get a slot within a short wait is answered 503 with Retry-After instead
  of queueing without bound. The slot is given back when the worker thread really finishes,
  not when the client gives up, so abandoned work still counts.
- `budget_threads`: one BLAS / OpenMP / torch thread per request, since requests are already
  the parallelism (on 2 cores, default thread pools in each request oversubscribe the machine);
  and a short GIL switch interval (`GIL_SWITCH_S`): a search by id is many short steps, each
  of which must take the GIL back from a thread describing an upload. At CPython's default
  of 5 ms it waits up to 5 ms per step (the convoy effect); measured in one process, 2 threads
  describing and 4 searching by id at 100k images: by-id p50 490-870 ms at 5 ms, 250-300 ms
  at 0.2-0.5 ms, uploads no slower (bench/README.md).
"""

from __future__ import annotations

import ipaddress
import os
import sys
import threading
from collections.abc import Callable
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
    """A bounded number of concurrent jobs of one kind, run in worker threads."""

    POLL_S = 0.01

    def __init__(self, name: str, slots: int, wait_s: float):
        self.name = name
        self.slots = slots
        self.wait_s = wait_s
        self._semaphore = threading.BoundedSemaphore(slots)
        self._busy = 0
        self._count_lock = threading.Lock()

    @property
    def busy(self) -> int:
        return self._busy

    async def acquire(self) -> None:
        """Take a slot, waiting at most `wait_s`; Saturated when none frees up."""
        deadline = anyio.current_time() + self.wait_s
        while not self._semaphore.acquire(blocking=False):
            if anyio.current_time() >= deadline:
                raise Saturated(self.name, max(1, round(self.wait_s)))
            await anyio.sleep(self.POLL_S)
        with self._count_lock:
            self._busy += 1

    def release(self) -> None:
        with self._count_lock:
            self._busy -= 1
        self._semaphore.release()

    async def run(self, func: Callable[[], T], timeout_s: float | None = None) -> T:
        """`func()` in a worker thread holding a slot until it returns (even if abandoned after
        `timeout_s`, which raises TimeoutError here)."""
        await self.acquire()

        def held() -> T:
            try:
                return func()
            finally:
                self.release()

        if timeout_s is None:
            return await anyio.to_thread.run_sync(held, abandon_on_cancel=True)
        with anyio.fail_after(timeout_s):
            return await anyio.to_thread.run_sync(held, abandon_on_cancel=True)


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
