"""Vanhoucke et al. 2011's benchmark, measured here: ``python benchmarks/int8_linear.py``.

The paper's network (``speech_dnn``: 440 inputs, four sigmoid layers of 2,000 units, 7,969 outputs)
in float against ``vanhoucke2011-speech_dnn`` (its fully connected layers after the first run by
torch's int8 kernel, weights rounded to 8-bit codes with one scale per layer, activations quantized
to 8 bits on each call), the same weights (random, from a fixed seed), in eval mode without
gradients, by batch (frames at a time), on this machine's CPU threads (one unless ``--threads``).
The two are timed in turn, the fastest of the repeats counted. Each row prints the milliseconds of a
batch, the time of 100 frames (one second of speech, the paper's unit), and the speed-up, beside the
paper's Table 1: 1.36 s for its optimised float (SSE2) code and 0.47 s for its integer (SSE4) code
per second of speech, 2.9×, and 0.36 s once frames are batched (its abstract rounds this to 3×;
an Intel Xeon E5640, one core). Our float baseline is torch's (MKL or oneDNN) single-precision
product, not the paper's hand-written SSE2. With ``--layer``, also a single 2000×2000 layer, the
size of the paper's Table 2. With ``--lazy 0.3``, also the output layer computed only for 30% of its
outputs (the paper's lazy evaluation, Section 5.2, Table 4), in float and in int8 (which must pack the
chosen rows on each call: torch's packed int8 weights cannot be sliced). It reports and never fails.
"""

from __future__ import annotations

import argparse
import platform
import time
from functools import partial

import torch
import torch.nn.functional as F

from papers.api import build_model

PAPER_FLOAT_S = 1.36
PAPER_INT8_S = 0.47
PAPER_BATCHED_S = 0.36
"""Table 1, seconds per second of speech (100 frames): float SSE2, integer SSE4, integer batched."""


def fastest(runs: list, repeats: int) -> list[float]:
    """The fastest seconds of each of ``runs``, timed in turn ``repeats`` times after two untimed calls."""
    for run in runs:
        run()
        run()
    best = [float("inf")] * len(runs)
    for _ in range(repeats):
        for index, run in enumerate(runs):
            start = time.perf_counter()
            run()
            best[index] = min(best[index], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 32, 100])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch's CPU threads (default 1)")
    parser.add_argument("--layer", action="store_true", help="also one 2000×2000 layer (Table 2's size)")
    parser.add_argument(
        "--lazy",
        type=float,
        default=None,
        metavar="FRACTION",
        help="also the output layer computed for a random FRACTION of its 7969 outputs (Section 5.2)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    float_model = build_model("speech_dnn").eval()
    int8_model = build_model("vanhoucke2011-speech_dnn").eval()
    int8_model.load_state_dict(float_model.state_dict())
    print(
        f"speech_dnn (440-2000x4-7969) float vs int8 (fc2-fc5 int8, fc1 float); {platform.machine()} "
        f"{platform.processor() or ''}, torch {torch.__version__}, quantized engine "
        f"{torch.backends.quantized.engine}, {torch.get_num_threads()} thread(s), fastest of {args.repeats}"
    )
    header = ("batch", "float ms", "int8 ms", "float s/100 fr", "int8 s/100 fr", "speed-up")
    print(" ".join(f"{name:>{width}}" for name, width in zip(header, (6, 10, 10, 15, 14, 9), strict=True)))
    with torch.inference_mode():
        for batch in args.batches:
            frames = torch.rand(batch, 440)
            error = float((float_model(frames) - int8_model(frames)).abs().max())
            seconds = fastest([partial(float_model, frames), partial(int8_model, frames)], args.repeats)
            per_100 = [s * 100 / batch for s in seconds]
            print(
                f"{batch:>6} {seconds[0] * 1e3:>10.3f} {seconds[1] * 1e3:>10.3f} {per_100[0]:>15.4f} "
                f"{per_100[1]:>14.4f} {seconds[0] / seconds[1]:>8.2f}x   (largest difference {error:.3g})"
            )
        if args.layer:
            layer = float_model.get_submodule("fc2")
            int8_layer = int8_model.get_submodule("fc2")
            for batch in args.batches:
                frames = torch.rand(batch, 2000)
                seconds = fastest([partial(layer, frames), partial(int8_layer, frames)], args.repeats)
                print(
                    f"2000x2000 layer, batch {batch:>4}: float {seconds[0] * 1e3:.3f} ms, int8 "
                    f"{seconds[1] * 1e3:.3f} ms, {seconds[0] / seconds[1]:.2f}x"
                )
        if args.lazy is not None:
            lazy_rows(float_model, int8_model, args)
    print(
        f"paper (Table 1, Xeon E5640, one core, per 100 frames): float SSE2 {PAPER_FLOAT_S} s, integer "
        f"SSE4 {PAPER_INT8_S} s ({PAPER_FLOAT_S / PAPER_INT8_S:.1f}x; the abstract's 3x), batched "
        f"{PAPER_BATCHED_S} s ({PAPER_FLOAT_S / PAPER_BATCHED_S:.1f}x); its float baseline is its own SSE2 "
        "code, ours torch's"
    )


def lazy_rows(float_model: torch.nn.Module, int8_model: torch.nn.Module, args: argparse.Namespace) -> None:
    """The output layer (fc5) in full against lazily, only the rows of a random fraction of its outputs
    (drawn once per batch: the union the batch's frames need, the paper's batched lazy evaluation):
    float by ``index_select`` of the rows, int8 by packing the chosen rows for the kernel on each call
    (its packed weights cannot be sliced), the packing timed with it."""
    from papers_plugins.compression.int8_kernels import _pack

    weight, bias = float_model.fc5.weight, float_model.fc5.bias
    generator = torch.Generator().manual_seed(1)
    for batch in args.batches:
        hidden = torch.rand(batch, 2000)
        chosen = torch.randperm(7969, generator=generator)[: round(args.lazy * 7969)]

        def float_lazy(hidden: torch.Tensor = hidden, chosen: torch.Tensor = chosen) -> torch.Tensor:
            return F.linear(hidden, weight.index_select(0, chosen), bias.index_select(0, chosen))

        def int8_lazy(hidden: torch.Tensor = hidden, chosen: torch.Tensor = chosen) -> torch.Tensor:
            packed = _pack(weight.index_select(0, chosen), bias.index_select(0, chosen), "layer", 8)
            return torch.ops.quantized.linear_dynamic(hidden, packed, False)

        runs = [partial(float_model.fc5, hidden), float_lazy, partial(int8_model.fc5, hidden), int8_lazy]
        full, lazy, full8, lazy8 = fastest(runs, args.repeats)
        print(
            f"output layer, batch {batch:>4}, {args.lazy:.0%} of outputs: float {full * 1e3:.3f} -> lazy "
            f"{lazy * 1e3:.3f} ms ({full / lazy:.2f}x); int8 {full8 * 1e3:.3f} -> lazy with packing "
            f"{lazy8 * 1e3:.3f} ms ({full8 / lazy8:.2f}x)"
        )
    print(
        "paper (Table 4, whole network, integer SSE4, per 100 frames, 30% of outputs): eager 472/356 ms at "
        "batch 1/8, lazy 371/255 ms, batched lazy 380/212 ms"
    )


if __name__ == "__main__":
    main()
