"""Deep extraction throughput: DeepExtractor.extract_batch against the bare model forward pass.

Both run on the same batch of 32 scikit-image photos in the collection's common frame (longest
side 256). The baseline is the network trunk alone (EfficientNet-Lite0 `extract_features`) on
an already preprocessed 32x3x224x224 tensor; extract_batch adds cropping, resizing,
normalisation, pooling, L2 normalisation and the copy to numpy. A ratio near 1 means the
wrapper costs nothing worth optimising. The network runs in the extractor's runtime (ONNX
Runtime by default, `LOOKALIKE_CNN_RUNTIME=torch` for torch); `--threads` sets torch's.

    .venv/bin/python bench/bench_deep.py [--repeats 7] [--threads N] [--pooling gap|gem]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from PIL import Image
from skimage import data as skdata

from lookalike.features.base import PreparedImage
from lookalike.features.deep import DeepExtractor, configure_torch_threads

PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "colorwheel", "hubble_deep_field",
          "immunohistochemistry", "retina", "camera", "coins", "moon", "text"]  # fmt: skip


def prepared_batch(n: int) -> list[PreparedImage]:
    out = []
    for i in range(n):
        a = getattr(skdata, PHOTOS[i % len(PHOTOS)])()
        im = Image.fromarray(a).convert("RGB")
        im.thumbnail((256, 256), Image.Resampling.LANCZOS)
        if i >= len(PHOTOS):  # not the very same pixels again
            im = im.rotate(3 * (i // len(PHOTOS)), resample=Image.Resampling.BILINEAR)
        out.append(PreparedImage(np.asarray(im, dtype=np.float32) / 255.0))
    return out


def interleaved(fns: dict[str, object], repeats: int) -> dict[str, list[float]]:
    """Time each function `repeats` times, taking turns, so that load from other processes on
    a shared machine hits all of them alike."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--pooling", default="gap", choices=["gap", "gem"])
    args = parser.parse_args()

    threads = configure_torch_threads(args.threads)
    extractor = DeepExtractor(pooling=args.pooling, batch_size=args.batch)
    images = prepared_batch(args.batch)
    loaded = extractor._loaded()  # the cached network, as extract_batch uses it
    tensor = extractor.preprocess(images)

    def bare() -> None:
        loaded.run(tensor, False)

    times = interleaved(
        {
            "bare": bare,
            "full": lambda: extractor.extract_batch(images),
            "pre": lambda: extractor.preprocess(images),
        },
        args.repeats,
    )
    n = len(images)
    print(
        f"model {extractor.version}, batch {n} at 224x224, runtime {loaded.runtime}, "
        f"torch threads {threads}"
    )
    print(f"{'images/s':<40} {'median':>17} {'best':>8}")
    rows = [
        ("bare forward pass (extract_features)", "bare"),
        ("DeepExtractor.extract_batch", "full"),
        ("  of which preprocessing", "pre"),
    ]
    for label, key in rows:
        med, best = statistics.median(times[key]), min(times[key])
        print(f"{label:<40} {n / med:17.1f} {n / best:8.1f}")
    ratio_med = statistics.median(times["bare"]) / statistics.median(times["full"])
    ratio_best = min(times["bare"]) / min(times["full"])
    print(f"{'ratio extract_batch / bare forward':<40} {ratio_med:17.3f} {ratio_best:8.3f}")


if __name__ == "__main__":
    main()
