"""pool.WorkerPool, the long-lived workers behind the server's describe workers (the HTTP
behaviour is tested through `lookalike serve` in test_server_serve.py): a call that crashes its
worker or runs past its budget costs that call alone, the worker is replaced, the next call
is answered; a call that raises keeps its worker."""

from __future__ import annotations

import os
import time

import pytest

from lookalike.pool import TaskFailed, WorkerPool


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
