"""pool.WorkerPool, the long-lived workers behind the server's describe workers (the HTTP
behaviour is tested through `lookalike serve` in test_server_serve.py): a call that crashes its
worker or runs past its budget costs that call alone, the worker is replaced, the next call
is answered; a call that raises keeps its worker."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from lookalike.pool import Failure, TaskFailed, WorkerPool, supervised_map


def test_overrun_crash_and_error_cost_one_call_each_and_the_pool_goes_on():
    pool = WorkerPool(time.sleep, workers=1)  # builtins: nothing to import in the worker
    try:
        pool.wait_ready(60)
        assert pool.call(0, budget_s=10, wait_s=10) is None
        started = time.monotonic()
        with pytest.raises(TaskFailed) as overrun:
            pool.call(30, budget_s=0.5, wait_s=10)
        assert overrun.value.timed_out and time.monotonic() - started < 10
        assert pool.call(0, budget_s=10, wait_s=60) is None  # a replacement answered
        assert pool.replaced == 1
        with pytest.raises(TaskFailed) as raised:
            pool.call(-1, budget_s=10, wait_s=10)  # ValueError in the worker
        assert "ValueError" in raised.value.reason and not raised.value.timed_out
        assert pool.replaced == 1  # an exception does not cost the worker
    finally:
        pool.close()


def test_a_worker_that_dies_while_idle_is_replaced_not_handed_a_call():
    pool = WorkerPool(os._exit, workers=1)
    try:
        pool.wait_ready(60)
        with pytest.raises(TaskFailed) as crashed:
            pool.call(3, budget_s=10, wait_s=10)
        assert "exited with code 3" in crashed.value.reason
        pool.wait_ready(60)
        (pid,) = pool.pids
        os.kill(pid, 9)
        time.sleep(0.5)
        with pytest.raises(TaskFailed) as again:
            pool.call(4, budget_s=10, wait_s=60)  # ran on a fresh worker, not the dead one
        assert "exited with code 4" in again.value.reason
        assert pool.replaced == 3
    finally:
        pool.close()


def test_a_call_handed_to_a_worker_that_dies_before_taking_it_runs_on_another():
    """A worker killed while idle (an operator, the OOM killer) can be handed a call in the
    moment before it has exited: that death is not the call's, which runs on a fresh worker."""
    pool = WorkerPool(abs, workers=1)
    try:
        pool.wait_ready(60)
        (pid,) = pool.pids
        os.kill(pid, signal.SIGSTOP)  # alive, but reads nothing: a worker killed, not yet gone
        threading.Timer(0.5, os.kill, (pid, signal.SIGKILL)).start()
        assert pool.call(-5, budget_s=30, wait_s=120) == 5  # answered by its replacement
        assert pool.replaced == 1
    finally:
        pool.close()


def pid_and_item(item: int) -> tuple[int, int]:
    return os.getpid(), item


def test_an_ingest_item_handed_to_a_worker_that_dies_before_taking_it_is_not_failed():
    """The same for supervised_map (ingest): the item goes to the replacement worker instead
    of being reported (and remembered) as a failed file."""
    results: list[tuple[int, object]] = []

    def items():
        yield 1
        ((pid, _),) = [result for item, result in results if item == 1]
        os.kill(pid, signal.SIGSTOP)  # idle and about to be handed item 2
        threading.Timer(0.5, os.kill, (pid, signal.SIGKILL)).start()
        yield 2

    for done in supervised_map(pid_and_item, items(), workers=1, budget_s=60):
        results.append(done)
    assert [item for item, _ in results] == [1, 2]
    second = results[1][1]
    assert not isinstance(second, Failure), second
    assert second[1] == 2 and second[0] != results[0][1][0]  # a fresh worker's answer
