"""Q-CNN's lookup-table inference, measured here: ``python benchmarks/qcnn_lookup.py``.

Q-CNN layers (:mod:`papers_plugins.compression.qcnn_layers`) against the dense layers their weights
stand for, on AlexNet's shapes at batch 1 (the authors time one image at a time): fc6 (9,216 → 4,096),
fc7 (4,096 → 4,096) and conv3 (256 → 384 channels, 3×3, 13×13 maps), random sub-codebooks and
assignments, eval mode without gradients, one thread unless ``--threads``, the two timed in turn and
the fastest of the repeats counted. Each row prints the theoretical ratio of multiply-adds (dense:
in × out per position; tables: in × codewords per input position, plus one addition per output,
subspace and kernel position, counted as one operation) and the measured ratio. For reference, the
authors' code (CAS-CLab/quantized-cnn, its README, not the paper) reports a theoretical 4.15× for its
whole quantized AlexNet and 3.03× measured against Caffe with ATLAS on one thread of an i7-4790K.
It reports and never fails.
"""

from __future__ import annotations

import argparse
import platform
import time
from functools import partial

import torch
import torch.nn.functional as F

from papers_plugins.compression.qcnn_layers import QConv2d, QLinear


def fastest(runs: list, repeats: int) -> list[float]:
    for run in runs:
        run()
    best = [float("inf")] * len(runs)
    for _ in range(repeats):
        for index, run in enumerate(runs):
            start = time.perf_counter()
            run()
            best[index] = min(best[index], time.perf_counter() - start)
    return best


def filled(layer: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        layer.codebooks.normal_()
    layer.set_indices(torch.randint(0, layer.codewords, layer.index_shape))
    return layer.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=4, help="inputs per subspace (C's)")
    parser.add_argument("--codewords", type=int, default=128, help="sub-codewords per subspace (K)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    d, k = args.dim, args.codewords
    print(
        f"Q-CNN lookup tables vs dense, subspaces of {d}, {k} codewords; {platform.machine()}, torch "
        f"{torch.__version__}, {torch.get_num_threads()} thread(s), batch 1, fastest of {args.repeats}"
    )
    with torch.inference_mode():
        for name, inputs, outputs in (("fc6", 9216, 4096), ("fc7", 4096, 4096)):
            layer = filled(QLinear(inputs, outputs, dim=d, codewords=k))
            weight, x = layer.dense_weight(), torch.randn(1, inputs)
            dense, tables = fastest(
                [partial(F.linear, x, weight, layer.bias), partial(layer, x)], args.repeats
            )
            theory = inputs * outputs / (inputs * k + outputs * inputs // d)
            print(
                f"{name} {inputs}->{outputs}: dense {dense * 1e3:.3f} ms, tables {tables * 1e3:.3f} ms, "
                f"measured {dense / tables:.2f}x, theoretical {theory:.2f}x"
            )
        conv = filled(QConv2d(256, 384, 3, 1, 1, dim=d, codewords=k))
        weight, x = conv.dense_weight(), torch.randn(1, 256, 13, 13)
        runs = [partial(F.conv2d, x, weight, conv.bias, 1, 1), partial(conv, x)]
        dense, tables = fastest(runs, args.repeats)
        theory = (9 * 256 * 384) / (256 * k + 9 * (256 // d) * 384)
        print(
            f"conv3 256->384 3x3 13x13: dense {dense * 1e3:.3f} ms, tables {tables * 1e3:.3f} ms, "
            f"measured {dense / tables:.2f}x, theoretical {theory:.2f}x"
        )
    print(
        "authors' README (not the paper): AlexNet theoretical 4.15x, measured 3.03x vs Caffe+ATLAS, 1 thread"
    )


if __name__ == "__main__":
    main()
