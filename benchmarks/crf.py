"""DeepLab's fully connected CRF, timed here: ``python benchmarks/crf.py [--threads N] [--repeats R]``.

Ten mean-field iterations (DeepLab's count) with 21 classes (PASCAL VOC's) and DeepLab v1's settings
from its spec, on two 500×500 images: random colours (every pixel a lattice simplex of its own, the
lattice's largest case) and a photograph (scikit-learn's ``china.jpg``, cropped and resized), both
with random Dirichlet scores. For each: ``papers.crf.dense_crf`` (our lattice on ``--threads``
threads) against the issue's target of 3 s per image, and ``papers.crf.pydensecrf_mean_field``
(pydensecrf2, the authors' single-threaded code) in the same run, with the ratio and the largest
difference of the two outputs. Medians of ``--repeats`` runs, after one run that compiles the
lattice (not timed). It reports and never fails.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

TARGET_S = 3.0


def _median_time(run, repeats: int) -> tuple[float, np.ndarray]:
    times, out = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - started)
    return statistics.median(times), out


def _images() -> dict[str, np.ndarray]:
    from PIL import Image
    from sklearn.datasets import load_sample_image

    photo = load_sample_image("china.jpg")[:, 70:497]  # 427 × 427 of the 427 × 640 picture
    return {
        "random colours": np.random.default_rng(0).integers(0, 256, (500, 500, 3), dtype=np.uint8),
        "photograph": np.asarray(Image.fromarray(photo).resize((500, 500), Image.BILINEAR)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    import torch

    import papers
    from papers.crf import dense_crf, pydensecrf_mean_field
    from papers.errors import PapersError

    torch.set_num_threads(args.threads)
    settings = papers.expand_variant("deeplab_v1_largefov").task.crf
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(21), size=(500, 500)).transpose(2, 0, 1).astype(np.float32)
    dense_crf(np.zeros((8, 8, 3), np.uint8), probabilities[:, :8, :8], settings)  # compiles the lattice
    print(
        f"dense CRF, {settings.iterations} iterations, 500×500, 21 classes, DeepLab v1's settings; "
        f"ours on {args.threads} threads, pydensecrf2 on one (it has no threads); medians of {args.repeats}"
    )
    for name, image in _images().items():
        ours, refined = _median_time(
            lambda image=image: dense_crf(image, probabilities, settings), args.repeats
        )
        line = (
            f"  {name}: ours {ours:.2f} s, target {TARGET_S:.0f} s, ratio {ours / TARGET_S:.2f} (target ≤ 1)"
        )
        try:
            theirs, reference = _median_time(
                lambda image=image: pydensecrf_mean_field(image, probabilities, settings), args.repeats
            )
        except PapersError as error:
            print(f"{line}; pydensecrf2 not run ({error})")
            continue
        differ = int((refined.argmax(0) != reference.argmax(0)).sum())
        print(
            f"{line}; pydensecrf2 {theirs:.2f} s, ours/pydensecrf2 {ours / theirs:.2f}; "
            f"labels differ on {differ} of {refined[0].size} pixels, "
            f"probabilities by at most {np.abs(refined - reference).max():.1e}"
        )


if __name__ == "__main__":
    main()
