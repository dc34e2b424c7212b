"""The index's SharedLock: searches hold it together, a merge alone; a waiting merge goes first
and gets it as soon as the last search lets go (searches release the GIL inside faiss, so
this is the lock between a merge's `add` and a search's scan)."""

from __future__ import annotations

import threading
import time

from lookalike.index.attribute import SharedLock

WAIT_S = 5.0


def test_a_waiting_merge_gets_the_lock_when_the_last_search_leaves_and_goes_first():
    lock = SharedLock()
    events: list[str] = []
    first_in, second_in, release_first, release_second = (threading.Event() for _ in range(4))

    def search(entered: threading.Event, release: threading.Event, name: str) -> None:
        with lock.shared():
            events.append(f"{name} in")
            entered.set()
            assert release.wait(WAIT_S)
            events.append(f"{name} out")

    def merge() -> None:
        with lock.exclusive():
            events.append("merge")

    searches = [
        threading.Thread(target=search, args=(first_in, release_first, "first")),
        threading.Thread(target=search, args=(second_in, release_second, "second")),
    ]
    for thread in searches:
        thread.start()
    assert first_in.wait(WAIT_S) and second_in.wait(WAIT_S)  # two searches at once
    writer = threading.Thread(target=merge)
    writer.start()
    time.sleep(0.1)
    late_in, release_late = threading.Event(), threading.Event()
    late = threading.Thread(target=search, args=(late_in, release_late, "late"), daemon=True)
    late.start()
    time.sleep(0.1)
    assert "merge" not in events and not late_in.is_set()  # searches held; the late one queues
    release_first.set()
    time.sleep(0.1)
    assert "merge" not in events  # one search still holds it
    release_second.set()
    writer.join(WAIT_S)
    assert not writer.is_alive(), "the merge was never woken when the last search left"
    assert late_in.wait(WAIT_S)  # after the merge
    release_late.set()
    late.join(WAIT_S)
    assert events.index("merge") > events.index("second out")
    assert events.index("late in") > events.index("merge")
