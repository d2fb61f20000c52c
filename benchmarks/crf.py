"""DeepLab's fully connected CRF, timed here: ``python benchmarks/crf.py [--threads N] [--repeats R]``.

Ten mean-field iterations (DeepLab's count) on a 500×500 image with 21 classes (PASCAL VOC's), through
``papers.crf.dense_crf`` (pydensecrf2's permutohedral lattice) with DeepLab v1's settings from its spec.
Prints the median against the issue's target of 3 s per image; it reports and never fails.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    import papers
    from papers.crf import dense_crf

    settings = papers.expand_variant("deeplab_v1_largefov").task.crf
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (500, 500, 3), dtype=np.uint8)
    probabilities = rng.dirichlet(np.ones(21), size=(500, 500)).transpose(2, 0, 1).astype(np.float32)
    times = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        dense_crf(image, probabilities, settings)
        times.append(time.perf_counter() - started)
    median = statistics.median(times)
    print(
        f"dense CRF, {settings.iterations} iterations, 500×500, 21 classes ({args.threads} threads): "
        f"ours {median:.2f} s, target 3 s, ratio {median / 3:.2f} (target ≤ 1)"
    )


if __name__ == "__main__":
    main()
