"""He et al.'s (2017) channel-pruned VGG-16 timed against VGG-16 here: ``python
benchmarks/channel_pruning.py [--variants he2017-vgg16-4x ...] [--threads N] [--repeats R]``.

Each method variant's narrowed graph (``papers.expand_variant``: the kept fractions of its settings,
every input width following) is built with random weights from a fixed seed, as is its base; both run
eval, without gradients, on the same random 224×224 images at batch 1 and 32 on ``--threads`` threads
(default 1), interleaved, the fastest of ``--repeats`` (each after one untimed run). Printed per batch:
both latencies, the measured speed-up (base / pruned) and, beside it, the one the multiply-adds give
(the paper's theoretical speed-up is a ratio of multiply-adds: its abstract's 5× for VGG-16) and the
setting's name. Latency does not depend on the weights, so the selection and reconstruction (``papers
compress --data``) are not run. It reports and never fails.
"""

from __future__ import annotations

import argparse
import platform

import torch

import papers
from papers.measure import measure_graph
from papers.registry import get_registry
from papers_plugins.compression.sparse_conv import interleaved

VARIANTS = ("he2017-vgg16-2x", "he2017-vgg16-4x", "he2017-vgg16-5x")
BATCHES = (1, 32)


def model_of(variant: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return papers.build_model(variant).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=["he2017-vgg16-4x"], choices=VARIANTS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    catalogue = get_registry().catalogue
    machine = platform.processor() or platform.machine()
    print(f"{machine}, torch {torch.__version__}, {args.threads} thread(s)")
    for variant in args.variants:
        base_id = get_registry().variant(variant)[1].base
        assert base_id is not None
        base, pruned = model_of(base_id), model_of(variant)
        macs = (
            measure_graph(base_id, papers.expand_variant(base_id), catalogue).macs,
            measure_graph(variant, papers.expand_variant(variant), catalogue).macs,
        )
        setting = variant.rsplit("-", 1)[-1]
        ratio = macs[0] / macs[1]
        print(f"\n{variant}: multiply-adds {macs[0] / 1e9:.2f} G → {macs[1] / 1e9:.2f} G ({ratio:.2f}×)")
        print("batch   base ms   pruned ms   measured   multiply-adds   paper's setting")
        for batch in BATCHES:
            images = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(1))
            runs = [lambda model=model, images=images: model(images) for model in (base, pruned)]
            with torch.inference_mode():
                slow, fast = interleaved(runs, args.repeats)
            print(
                f"{batch:>5}  {1e3 * slow:>8.1f}  {1e3 * fast:>10.1f}  {slow / fast:>8.2f}×  "
                f"{ratio:>13.2f}×  {setting:>15}"
            )


if __name__ == "__main__":
    main()
