"""Low-rank decompositions timed here: ``python benchmarks/low_rank.py [--threads N] [--repeats R]``.

For each decomposition (Kim et al. 2016's Tucker-2, Tai et al. 2016's vertical/horizontal split,
Denton et al. 2014's monochromatic and biclustered approximations, Zhang et al.'s channel
decomposition and its 2016 3D form) it builds the base network and the network rewritten at stated
ranks (random weights: the time does not depend on their values), and times, in eval mode without
gradients, interleaved, the median of ``--repeats`` calls:

- each decomposed layer alone (the original convolution against its chain), at batch 1 and 32;
- the whole network, base against decomposed, at batch 1 and 32.

Each row prints both medians, the measured speed-up (original / decomposed) and the theoretical one
(multiply-adds original / decomposed), beside the paper's figure where the registry has confirmed one
(none yet: see each spec's opening comment). The ranks are the registry's choices, stated in each row,
not the papers'. It reports and never fails.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

import papers
from papers.build import build
from papers.measure import measure_graph
from papers.registry import get_registry
from papers_plugins.compression import (
    channel_decomposition,
    channel_decomposition_3d,
    linear_structure,
    tucker,
    vh_decomposition,
)


@dataclass(frozen=True)
class Case:
    """A base network decomposed at stated ranks by one method."""

    label: str
    base: str
    settings: Any
    rewrite: Callable[[Any, Any], Any]
    chains: Callable[[Any], dict[str, tuple[str, ...]]]
    whole_batches: tuple[int, ...] = (1, 32)
    paper: str = "—"


def _cases(quick: bool) -> list[Case]:
    quarter = tucker.TuckerSettings(
        ranks={"conv2": [24, 64], "conv3": [64, 128], "conv4": [128, 128], "conv5": [128, 128]}
    )
    (lenet_step,) = papers.methods.variant_steps("kim2016-lenet5_caffe")
    (nin_step,) = papers.methods.variant_steps("tai2016-nin_cifar10-bn")
    (tai_lenet_step,) = papers.methods.variant_steps("tai2016-lenet5_caffe")
    (mono_step,) = papers.methods.variant_steps("denton2014-alexnet")
    (bicluster_step,) = papers.methods.variant_steps("denton2014-lenet5_caffe")
    (channel_step,) = papers.methods.variant_steps("zhang2015-lenet5_caffe")
    return [
        Case("Tucker-2, ranks 1/4 of the channels (conv2 24,64; conv3-5 64-128,128)", "vgg_s", quarter,
             tucker.tucker_rewrite, tucker.chains, (1,) if quick else (1, 32)),
        Case("Tucker-2 at VBMF's ranks (kim2016-lenet5_caffe)", "lenet5_caffe", lenet_step.settings,
             tucker.tucker_rewrite, tucker.chains),
        Case("vertical/horizontal with batch norm, K halving each layer's MACs (tai2016-nin_cifar10-bn)",
             "nin_cifar10", nin_step.settings, vh_decomposition.vh_rewrite, vh_decomposition.chains),
        Case("vertical/horizontal (tai2016-lenet5_caffe)", "lenet5_caffe", tai_lenet_step.settings,
             vh_decomposition.vh_rewrite, vh_decomposition.chains),
        Case("monochromatic first layer, 16 colours (denton2014-alexnet)",
             "alexnet", mono_step.settings, linear_structure.monochromatic_rewrite, _mono_chains,
             (1,) if quick else (1, 32)),
        Case("biclustered SVD, G 2, H 5, K 4 (denton2014-lenet5_caffe)", "lenet5_caffe",
             bicluster_step.settings, linear_structure.bicluster_rewrite, _bicluster_chains),
        Case("channel decomposition at the energy criterion's d′ (zhang2015-lenet5_caffe)", "lenet5_caffe",
             channel_step.settings, channel_decomposition.channel_rewrite, channel_decomposition.chains),
        Case("3D: d″ vertical, d′ horizontal, 1×1 for 4× fewer conv MACs (zhang2016-lenet5_caffe)",
             "lenet5_caffe", papers.methods.variant_steps("zhang2016-lenet5_caffe")[0].settings,
             channel_decomposition_3d.channel_3d_rewrite, channel_decomposition_3d.chains),
    ]  # fmt: skip


def _mono_chains(settings: Any) -> dict[str, tuple[str, ...]]:
    return {settings.layer: tuple(f"{settings.layer}.{part}" for part in ("colour", "mono", "order"))}


def _bicluster_chains(settings: Any) -> dict[str, tuple[str, ...]]:
    parts = linear_structure.BICLUSTER_PARTS
    return {name: tuple(f"{name}.{part}" for part in parts) for name in settings.layers}


def _median_ms(calls: list[Callable[[], Any]], repeats: int) -> list[float]:
    """Each call's median time in milliseconds; calls alternate, after two untimed runs each."""
    times: list[list[float]] = [[] for _ in calls]
    with torch.inference_mode():
        for call in calls:
            call()
            call()
        for _ in range(repeats):
            for call, timed in zip(calls, times, strict=True):
                start = time.perf_counter()
                call()
                timed.append(time.perf_counter() - start)
    return [statistics.median(t) * 1000 for t in times]


def _calls(x: torch.Tensor, *modules: torch.nn.Module) -> list[Callable[[], Any]]:
    return [lambda module=module: module(x) for module in modules]


def _row(what: str, batch: int, base_ms: float, low_ms: float, theoretical: float, paper: str) -> None:
    print(
        f"{what:<34} {batch:>5} {base_ms:>10.3f} {low_ms:>10.3f} {base_ms / low_ms:>9.2f}× "
        f"{theoretical:>9.2f}× {paper:>7}"
    )


def run_case(case: Case, repeats: int) -> None:
    catalogue = get_registry().catalogue
    flat = papers.expand_variant(case.base)
    rewritten = case.rewrite(flat, case.settings)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        base = build(flat, catalogue).eval()
        low = build(rewritten, catalogue).eval()
    before, after = measure_graph(case.base, flat, catalogue), measure_graph("low", rewritten, catalogue)
    macs_before = {layer.name: layer.macs for layer in before.layers}
    macs_after = {layer.name: layer.macs for layer in after.layers}
    inputs_of = {node.name: node.inputs[0] for node in flat.nodes if node.inputs}
    print(f"\n{case.base}: {case.label}")
    header = ("layer / model", "batch", "orig ms", "decomp ms", "speed-up", "MACs", "paper")
    print(f"{header[0]:<34} {header[1]:>5} " + " ".join(f"{h:>10}" for h in header[2:6]) + f" {header[6]:>7}")
    for name, chain in case.chains(case.settings).items():
        original = base.get_submodule(name)
        layers = torch.nn.Sequential(*(low.get_submodule(n) for n in chain))
        shape = before.node_shapes[inputs_of[name]][1:]
        theoretical = macs_before[name] / sum(macs_after[n] for n in chain)
        for batch in (1, 32):
            x = torch.randn(batch, *shape)
            base_ms, low_ms = _median_ms(_calls(x, original, layers), repeats)
            _row(name, batch, base_ms, low_ms, theoretical, case.paper)
    shape = next(iter(flat.inputs.values()))
    for batch in case.whole_batches:
        x = torch.randn(batch, *shape)
        base_ms, low_ms = _median_ms(_calls(x, base, low), max(3, repeats // 2))
        _row("whole network", batch, base_ms, low_ms, before.macs / after.macs, case.paper)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="fewer repeats, whole VGG-S at batch 1 only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    repeats = 3 if args.quick else args.repeats
    print(
        f"torch {torch.__version__}, cpu ({platform.machine()}), {torch.get_num_threads()} thread(s), "
        f"median of {repeats} interleaved calls, eval, inference mode"
    )
    for case in _cases(args.quick):
        run_case(case, repeats)


if __name__ == "__main__":
    main()
