"""The server's work gates: a bounded number of jobs at once, freed slots handed to waiters in
arrival order, a clear 503 (Saturated) when none frees up in time, and no slot lost when a
waiter gives up. Through HTTP: tests/test_server_hardening.py (503 + Retry-After)."""

from __future__ import annotations

import threading
import time

import anyio
import pytest

from lookalike.server.admission import Saturated, WorkGate


def test_freed_slots_go_to_waiters_in_arrival_order():
    gate = WorkGate("search", slots=1, wait_s=10)
    release_first = threading.Event()
    order: list[int] = []

    async def job(n: int) -> None:
        def work() -> None:
            if n == 0:
                release_first.wait(10)
            order.append(n)

        await gate.run(work)

    async def main() -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(job, 0)
            while gate.busy == 0:
                await anyio.sleep(0.001)
            for n in range(1, 6):  # they queue in this order while job 0 holds the slot
                tasks.start_soon(job, n)
                await anyio.sleep(0.02)
            release_first.set()

    anyio.run(main)
    assert order == [0, 1, 2, 3, 4, 5]
    assert gate.busy == 0


def test_a_job_arriving_as_a_slot_frees_does_not_overtake_the_waiter():
    gate = WorkGate("search", slots=1, wait_s=10)
    hold = threading.Event()
    done = threading.Event()
    order: list[str] = []

    def first() -> None:
        hold.wait(10)
        order.append("first")
        done.set()

    async def main() -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(gate.run, first)
            while gate.busy == 0:
                await anyio.sleep(0.001)
            tasks.start_soon(gate.run, lambda: order.append("waiter"))
            await anyio.sleep(0.05)  # the waiter is queued
            hold.set()
            await anyio.to_thread.run_sync(done.wait)  # the slot is being given back now
            await gate.run(lambda: order.append("newcomer"))

    for _ in range(5):
        order.clear()
        hold.clear()
        done.clear()
        anyio.run(main)
        assert order == ["first", "waiter", "newcomer"]
    assert gate.busy == 0


def test_a_full_gate_says_saturated_and_loses_no_slot():
    gate = WorkGate("describe", slots=2, wait_s=0.1)
    hold = threading.Event()
    outcomes: list[str] = []

    async def job() -> None:
        try:
            await gate.run(lambda: hold.wait(10))
            outcomes.append("ran")
        except Saturated as exc:
            assert exc.gate == "describe" and exc.retry_after_s >= 1
            outcomes.append("saturated")

    async def main() -> None:
        async with anyio.create_task_group() as tasks:
            for _ in range(2):
                tasks.start_soon(job)
            while gate.busy < 2:
                await anyio.sleep(0.001)
            started = time.monotonic()
            await job()  # waits 0.1 s behind the two, then gives up
            assert 0.09 <= time.monotonic() - started < 5
            hold.set()
        await job()  # both slots came back: the next job runs at once

    anyio.run(main)
    assert outcomes.count("saturated") == 1 and outcomes.count("ran") == 3
    assert gate.busy == 0


def test_a_waiter_cancelled_while_waiting_passes_its_turn_on():
    gate = WorkGate("search", slots=1, wait_s=10)
    hold = threading.Event()
    ran: list[str] = []

    async def main() -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(lambda: gate.run(lambda: (hold.wait(10), ran.append("first"))))
            while gate.busy == 0:
                await anyio.sleep(0.001)
            with anyio.move_on_after(0.05):  # a client that hangs up while queued
                await gate.run(lambda: ran.append("gone"))
            tasks.start_soon(lambda: gate.run(lambda: ran.append("next")))
            await anyio.sleep(0.02)
            hold.set()

    anyio.run(main)
    assert ran == ["first", "next"]
    assert gate.busy == 0


@pytest.mark.parametrize("slots", [1, 3])
def test_many_jobs_through_a_small_gate_never_exceed_its_slots(slots):
    gate = WorkGate("search", slots=slots, wait_s=30)
    running = 0
    most = 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.002)
        with lock:
            running -= 1

    async def main() -> None:
        async with anyio.create_task_group() as tasks:
            for _ in range(60):
                tasks.start_soon(gate.run, work)

    anyio.run(main)
    assert most == slots and gate.busy == 0
