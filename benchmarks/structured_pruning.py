"""Structured channel removal timed here: ``python benchmarks/structured_pruning.py [--threads N]
[--repeats R] [--image-size S]``.

1. Ours against Torch-Pruning on the same channels. ResNet-50 (the registry's ``resnet50``, random
   weights from a fixed seed) loses 30% of the filters of each bottleneck's first two convolutions,
   those of the smallest ℓ1 norms. Ours: :func:`papers_plugins.compression.channels.remove_channels`
   (the dependency walk on the graph, the narrowed graph built, the kept weights copied), from a cold
   start each time (its per-graph caches emptied). Torch-Pruning: ``DependencyGraph`` built on a copy
   of the same model with an example input, then each convolution's group pruned at the same
   indices (the copy is made before the clock starts). Both medians of ``--repeats`` runs,
   interleaved, and the ratio ours / Torch-Pruning (and ours warm: a second removal on the same
   graph, whose dependency walk and shape pass are kept per graph); then the check that both give
   the same tensor shapes and the same outputs (the largest absolute difference on a random batch).
2. The latency of the CIFAR-10 VGG-16 (``vgg16_cifar``) against Li et al.'s pruned-A
   (``li2017-vgg16_cifar-a``), random weights, eval, no gradients, at batch 1 and 32 on ``--threads``
   threads (default 1): the medians, the measured speed-up and the one the multiply-adds predict.

It reports and never fails; a missing Torch-Pruning (``pip install 'papers[bench]'``) skips part 1.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import math
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

import papers
from papers.build import _SHAPE_PASSES
from papers.measure import measure_graph
from papers.registry import get_registry
from papers_plugins.compression import channels

RATE = 0.3


def _median_ms(calls: list[Callable[[], Any]], repeats: int, warm: int = 2) -> list[float]:
    """Each call's median time in milliseconds; calls alternate, after ``warm`` untimed runs each."""
    times: list[list[float]] = [[] for _ in calls]
    for call in calls:
        for _ in range(warm):
            call()
    for _ in range(repeats):
        for call, timed in zip(calls, times, strict=True):
            start = time.perf_counter()
            call()
            timed.append(time.perf_counter() - start)
    return [statistics.median(t) * 1000 for t in times]


def _plan(model: torch.nn.Module, flat: Any) -> dict[str, list[int]]:
    """The kept filters: 70% of each bottleneck's conv1 and conv2, the largest ℓ1 norms."""
    kept = {}
    for name, layer in channels.channel_layers(flat).items():
        if layer.removable and name.endswith(("conv1", "conv2")) and name.startswith("layer"):
            scores = model.get_submodule(name).weight.detach().abs().sum((1, 2, 3))
            kept[name] = channels.top_channels(scores, layer.width - math.ceil(RATE * layer.width))
    return kept


def compare_with_torch_pruning(image_size: int, repeats: int) -> None:
    if importlib.util.find_spec("torch_pruning") is None:
        print("Torch-Pruning is not installed (pip install 'papers[bench]'): part 1 skipped")
        return
    import torch_pruning as tp

    torch.manual_seed(0)
    model = papers.build_model("resnet50", image_size=image_size).eval()
    flat = papers.expand_variant("resnet50", image_size=image_size)
    kept = _plan(model, flat)
    example = torch.randn(1, 3, image_size, image_size)
    removed = {
        name: sorted(set(range(model.get_submodule(name).out_channels)) - set(indices))
        for name, indices in kept.items()
    }

    def ours() -> torch.nn.Module:
        channels._ANALYSED.clear()  # cold: the dependency walk and the shape pass run each time
        _SHAPE_PASSES.clear()
        narrowed, _ = channels.remove_channels(model, flat, kept)
        return narrowed

    def theirs(target: torch.nn.Module) -> torch.nn.Module:
        graph = tp.DependencyGraph().build_dependency(target, example_inputs=example)
        for name, indices in removed.items():
            group = graph.get_pruning_group(
                target.get_submodule(name), tp.prune_conv_out_channels, idxs=indices
            )
            group.prune()
        return target

    times: dict[str, list[float]] = {"ours": [], "warm": [], "theirs": []}
    for run in range(repeats + 1):  # the first run of each is untimed (imports, allocator)
        target = copy.deepcopy(model)  # Torch-Pruning prunes in place: a fresh copy, off the clock
        start = time.perf_counter()
        ours_model = ours()
        middle = time.perf_counter()
        theirs_model = theirs(target)
        end = time.perf_counter()
        channels.remove_channels(model, flat, kept)  # warm: the graph's walk and shape pass kept
        warm = time.perf_counter() - end
        if run:
            times["ours"].append(middle - start)
            times["theirs"].append(end - middle)
            times["warm"].append(warm)
    ours_ms, warm_ms, theirs_ms = (statistics.median(times[key]) * 1000 for key in ("ours", "warm", "theirs"))
    ours_model, theirs_model = ours_model.eval(), theirs_model.eval()
    ours_shapes = {k: tuple(v.shape) for k, v in ours_model.state_dict().items()}
    theirs_shapes = {k: tuple(v.shape) for k, v in theirs_model.state_dict().items()}
    images = torch.randn(4, 3, image_size, image_size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected, got = theirs_model(images), ours_model(images)
    difference = float((got - expected).abs().max())
    print(
        f"ResNet-50 at {image_size}×{image_size}, {RATE:.0%} of the filters of {len(kept)} convolutions "
        f"(each bottleneck's conv1 and conv2) removed by ℓ1 norm, median of {repeats}:"
    )
    print(f"  ours (channels.remove_channels, cold)      {ours_ms:9.1f} ms")
    print(f"  Torch-Pruning {tp.__version__} (DependencyGraph + prune) {theirs_ms:9.1f} ms")
    print(f"  ratio ours / Torch-Pruning                 {ours_ms / theirs_ms:9.2f}")
    print(f"  ours again on the same graph (warm)        {warm_ms:9.1f} ms, ratio {warm_ms / theirs_ms:.2f}")
    count = sum(math.prod(shape) for shape in ours_shapes.values())
    print(f"  identical tensor names and shapes: {ours_shapes == theirs_shapes} ({count:,} values)")
    print(
        f"  outputs: largest absolute difference {difference:.3g} "
        f"(outputs up to {float(expected.abs().max()):.3g})"
    )


def vgg_latency(repeats: int) -> None:
    catalogue = get_registry().catalogue
    torch.manual_seed(0)
    base = papers.build_model("vgg16_cifar").eval()
    pruned = papers.build_model("li2017-vgg16_cifar-a").eval()
    macs = [
        measure_graph(v, papers.expand_variant(v), catalogue).macs
        for v in ("vgg16_cifar", "li2017-vgg16_cifar-a")
    ]
    print(
        f"VGG-16 on CIFAR-10 against Li et al.'s pruned-A (random weights), eval, no gradients, "
        f"{torch.get_num_threads()} thread(s), {platform.machine()}, median of {repeats}:"
    )
    for batch in (1, 32):
        images = torch.randn(batch, 3, 32, 32)
        with torch.inference_mode():
            base_ms, pruned_ms = _median_ms([lambda x=images: base(x), lambda x=images: pruned(x)], repeats)
        print(
            f"  batch {batch:2d}: vgg16_cifar {base_ms:8.2f} ms, pruned-A {pruned_ms:8.2f} ms, speed-up "
            f"{base_ms / pruned_ms:.2f}× measured, {macs[0] / macs[1]:.2f}× by multiply-adds (paper: 34.2% "
            "fewer FLOP, Table 1)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=224)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    compare_with_torch_pruning(args.image_size, args.repeats)
    vgg_latency(max(args.repeats, 10))


if __name__ == "__main__":
    main()
