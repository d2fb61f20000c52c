"""Fast R-CNN's truncated SVD (Section 3.1), timed here: ``python benchmarks/fast_rcnn_svd.py``.

Builds ``fast_rcnn_vgg16`` and ``fast_rcnn_vgg16_svd`` (fc6 at rank 1024, fc7 at rank 256) at random
initialisation (the time does not depend on the values; ``svd_state_dict`` gives a trained model's
factors) and times both in eval mode without gradients, interleaved, on this machine's CPU threads:
the fully connected part alone (fc6 to the two outputs, on pooled RoIs) and the whole network on one
image with its RoIs. Prints the medians and the ratio SVD / full; it reports and never fails.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import papers

HEAD = ("fc6", "relu6", "drop6", "fc7", "relu7", "drop7")


def _median_seconds(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _head(model: torch.nn.Module):
    # a factorised layer is a module holding its two factors, L then U
    parts = [model.get_submodule(name) for name in HEAD]
    layers = torch.nn.Sequential(*(torch.nn.Sequential(p.L, p.U) if hasattr(p, "L") else p for p in parts))

    def run(pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = layers(pooled)
        return model.cls_score(hidden), model.bbox_pred(hidden)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rois", type=int, default=2000, help="RoIs per image (default: 2000)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    full = papers.build_model("fast_rcnn_vgg16").eval()
    svd = papers.build_model("fast_rcnn_vgg16_svd").eval()
    size = args.image_size
    image = torch.rand(1, 3, size, size)
    corners = torch.rand(args.rois, 2, 2) * size
    rois = torch.cat([torch.zeros(args.rois, 1), corners.min(1).values, corners.max(1).values], 1)
    pooled = torch.randn(args.rois, 512 * 7 * 7)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rois} RoIs, image {size}×{size}"
    )
    with torch.no_grad():
        for label, ours, peer in (
            ("fc6 to the outputs", lambda: _head(svd)(pooled), lambda: _head(full)(pooled)),
            ("whole network", lambda: svd(image, rois), lambda: full(image, rois)),
        ):
            ours(), peer()  # warm up
            times = {"svd": [], "full": []}
            for _ in range(args.repeats):
                times["svd"].append(_median_seconds(ours, 1))
                times["full"].append(_median_seconds(peer, 1))
            a, b = statistics.median(times["svd"]), statistics.median(times["full"])
            print(f"{label:20s} full {b * 1000:9.1f} ms   svd {a * 1000:9.1f} ms   svd/full {a / b:.3f}")


if __name__ == "__main__":
    main()
