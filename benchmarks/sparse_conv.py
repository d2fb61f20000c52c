"""Park et al. 2017's chart, measured here: ``python benchmarks/sparse_conv.py``.

The direct sparse convolution (:mod:`papers_plugins.compression.sparse_conv`) against
``torch.nn.functional.conv2d`` by sparsity, on the registry's AlexNet's conv2-5 shapes at the sizes of
their inputs on a 224×224 image (27×27 and 13×13) and, with ``--small``, at half that; random
weights with the sparsity's fraction of zeros at random places, both kernels in eval mode without
gradients, interleaved, the fastest of the repeats, on this machine's CPU threads. Prints one row per
layer and sparsity (sparsity, dense s, sparse s, speed-up), each layer's break-even sparsity (from
which the sparse kernel is faster) and, with ``--plan``, what guided pruning decides for
``park2017-alexnet``'s targets. It reports and never fails.
"""

from __future__ import annotations

import argparse
import platform
from dataclasses import replace

import torch

import papers
from papers_plugins.compression.guided_pruning import layer_inputs, plan
from papers_plugins.compression.sparse_conv import Geometry, break_even, time_geometry

CONVS = {"conv2": "features.4", "conv3": "features.8", "conv4": "features.10", "conv5": "features.12"}
"""AlexNet's conv2-5 as the registry's ``alexnet``; the paper's 256, 384, 384, 256 maps names them."""
SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch's CPU threads (default: as set)")
    parser.add_argument("--small", action="store_true", help="half the spatial sizes (a quicker run)")
    parser.add_argument("--plan", action="store_true", help="also print park2017-alexnet's decisions")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, cpu ({platform.machine()}), {torch.get_num_threads()} threads, "
        f"batch {args.batch}, fastest of {args.repeats} interleaved runs"
    )
    print(f"{'layer':<34} {'sparsity':>8} {'dense s':>10} {'sparse s':>10} {'speed-up':>8}")
    flat = papers.expand_variant("alexnet")
    model = papers.build_model("alexnet", device="meta")
    shapes = layer_inputs(flat, list(CONVS.values()), args.batch)
    for name, node in CONVS.items():
        geometry = Geometry.of(model.get_submodule(node), shapes[node])
        if args.small:
            geometry = replace(geometry, height=(geometry.height + 1) // 2, width=(geometry.width + 1) // 2)
        rows = time_geometry(geometry, SPARSITIES, repeats=args.repeats)
        label = f"{name} {geometry.label()}"
        for row in rows:
            times = f"{row.dense_s:>10.6f} {row.sparse_s:>10.6f}"
            print(f"{label:<34} {row.sparsity:>8.2f} {times} {row.speedup:>7.2f}×")
        even = break_even(rows)
        print(f"{name}: break-even sparsity {'none (never faster)' if even is None else f'{even:.3f}'}")
    if args.plan:
        from papers.methods import variant_steps

        (step,) = variant_steps("park2017-alexnet")
        settings = step.settings.model_copy(update={"batch": args.batch, "repeats": args.repeats})
        for decision in plan(papers.expand_variant("park2017-alexnet"), settings).values():
            print(decision.describe())


if __name__ == "__main__":
    main()
