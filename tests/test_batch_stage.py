"""ingest.BatchStage: the CNN's batches run in a thread while the caller goes on feeding the
workers (tests/test_cnn_runtime.py and the index tests run it through the CLI)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from lookalike.errors import LookalikeError
from lookalike.ingest import BatchStage, Extracted


class SlowCNN:
    """A batch extractor that takes `seconds` per batch (a CNN on a busy machine)."""

    name = "deep"
    version = "slow;1"

    def __init__(self, seconds: float, fail: bool = False):
        self.seconds = seconds
        self.fail = fail
        self.threads: set[str] = set()
        self.batches = 0

    def extract_batch(self, images: list) -> np.ndarray:
        self.threads.add(threading.current_thread().name)
        self.batches += 1
        time.sleep(self.seconds)
        if self.fail:
            raise LookalikeError("model produced NaN or infinite values")
        return np.stack([np.full(4, image.rgb.mean(), np.float32) for image in images])


def described(n: int, start: int = 0) -> list[Extracted]:
    return [
        Extracted(f"/photos/{i}.jpg", 1, 0.0, "0" * 64, 8, 8, "JPEG", {},
                  prepared=np.full((8, 8, 3), i / 10, np.float32))
        for i in range(start, start + n)
    ]  # fmt: skip


def test_a_batch_runs_beside_the_caller_and_comes_back_in_order():
    cnn = SlowCNN(0.5)
    with BatchStage({"deep": cnn}) as stage:
        began = time.monotonic()
        stage.submit(described(3))
        stage.submit(described(2, start=3))
        assert time.monotonic() - began < 0.3  # the caller goes back to its workers at once
        assert stage.finished() == []  # nothing done yet, and nothing waited for
        items = stage.close()
    assert [item.source for item in items] == [f"/photos/{i}.jpg" for i in range(5)]
    assert all(item.prepared is None for item in items)  # frames dropped once described
    np.testing.assert_allclose(items[4].signatures["deep"][1], np.full(4, 0.4), rtol=1e-6)
    assert threading.current_thread().name not in cnn.threads


def test_the_queue_is_bounded():
    with BatchStage({"deep": SlowCNN(0.4)}, depth=1) as stage:
        began = time.monotonic()
        for start in range(0, 4):  # one running, one waiting, then the caller waits
            stage.submit(described(1, start=start))
        assert time.monotonic() - began >= 0.35
        assert len(stage.close()) == 4


def test_a_cnn_error_reaches_the_caller():
    with BatchStage({"deep": SlowCNN(0.0, fail=True)}) as stage:
        stage.submit(described(2))
        with pytest.raises(LookalikeError, match="NaN"):
            stage.close()


def test_an_interrupted_run_does_not_wait_for_queued_batches():
    cnn = SlowCNN(0.5)
    with pytest.raises(KeyboardInterrupt), BatchStage({"deep": cnn}, depth=2) as stage:
        for start in range(3):  # one running, up to two waiting
            stage.submit(described(1, start=start))
        began = time.monotonic()
        raise KeyboardInterrupt
    assert time.monotonic() - began < 0.3  # Ctrl-C is not held up by the CNN's queue
    time.sleep(1.2)
    assert cnn.batches <= 2  # what had not started was dropped
