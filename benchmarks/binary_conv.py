"""The bit-packed binary convolution against float ``F.conv2d``: ``python benchmarks/binary_conv.py``.

The XNOR-popcount kernel (:func:`papers_plugins.compression.binary.binary_conv2d`, the signs of
input and weights packed along the channels, 64 to a word), in torch code and in its C++ extension
(``native``: the hardware popcount; compiled on first use, ``--no-native`` skips it), against
``torch.nn.functional.conv2d``
on the same ±1 tensors as float32, by layer size (AlexNet's conv2-5 shapes at their 224-input sizes,
and Caffe's LeNet conv2), batch and thread count: eval, no gradients, interleaved, the fastest of the
repeats. The packed time includes packing the input (each layer would pack its input at run time);
the weights are packed once. Each row checks the two outputs equal before timing them and prints the
ratio float / packed (a speed-up; below 1× the packed kernel is slower), and the weight memory of the
packed tensor against float32 (measured: the packed tensor's bytes; 32× where the input channels are
a multiple of 64).

Beside ours, the papers' claims, which this does not reproduce: BNN's 7× (Courbariaux, Hubara et al.
2016, Section 4) was their GPU XNOR kernel against their own unoptimised GPU baseline kernel, not
against cuDNN; XNOR-Net's 58× (Rastegari et al. 2016, Section 4) is a CPU estimate from operation
counts (64 binary operations per cycle against one multiply-add), not a timing. Here the packed
kernel is torch elementwise code (no popcount instruction) or the C++ loop, against MKL-DNN's
convolution. It reports
and never fails. ``--popcount`` also times the popcount variants on AlexNet conv3's XOR.
"""

from __future__ import annotations

import argparse
import platform

import torch
import torch.nn.functional as F

from papers_plugins.compression.binary import (
    POPCOUNT_TABLE,
    binarize,
    binary_conv2d,
    native_kernel,
    pack_signs,
    popcount,
    popcount_swar,
)
from papers_plugins.compression.sparse_conv import interleaved

LAYERS = {
    # name: (in channels, out channels, kernel, stride, padding, input height = width)
    "lenet5_caffe conv2": (20, 50, 5, 1, 0, 12),
    "alexnet conv2": (64, 192, 5, 1, 2, 27),
    "alexnet conv3": (192, 384, 3, 1, 1, 13),
    "alexnet conv4": (384, 256, 3, 1, 1, 13),
    "alexnet conv5": (256, 256, 3, 1, 1, 13),
}


def row(name: str, batch: int, repeats: int, backends: list[str]) -> str:
    cin, cout, k, s, p, size = LAYERS[name]
    generator = torch.Generator().manual_seed(0)
    x = binarize(torch.randn(batch, cin, size, size, generator=generator))
    w = binarize(torch.randn(cout, cin, k, k, generator=generator))
    packed_w = pack_signs(w)

    def packed(backend: str) -> torch.Tensor:
        return binary_conv2d(pack_signs(x), packed_w, (k, k), (s, s), (p, p), backend=backend)

    with torch.inference_mode():
        reference = F.conv2d(x, w, stride=s, padding=p)
        equal = all(torch.equal(packed(backend).float(), reference) for backend in backends)
        runs = [lambda: F.conv2d(x, w, stride=s, padding=p)]
        runs += [lambda backend=backend: packed(backend) for backend in backends]
        float_s, *packed_s = interleaved(runs, repeats)
    memory = w.numel() * 4 / packed_w.nbytes
    label = f"{name} ({cin}→{cout} {k}×{k}/{s} on {size}×{size})"
    timings = " ".join(f"{t * 1e3:>10.3f} {float_s / t:>8.3f}×" for t in packed_s)
    return (
        f"{label:<44} {batch:>5} {torch.get_num_threads():>7} {float_s * 1e3:>9.3f} {timings} "
        f"{memory:>6.1f}× {'yes' if equal else 'NO'}"
    )


def popcounts(repeats: int) -> None:
    generator = torch.Generator().manual_seed(0)
    words = torch.randint(-(2**62), 2**62, (169 * 384 * 4,), generator=generator)
    table = POPCOUNT_TABLE
    bytes_ = words.view(torch.uint8)
    runs = {
        "SWAR on int64 words": lambda: popcount_swar(words),
        "table, gathered on bytes": lambda: popcount(words),
        "table, indexed by bytes": lambda: table[bytes_.long()],
    }
    times = interleaved(list(runs.values()), repeats)
    print("popcount of AlexNet conv3's XOR (169 positions × 384 filters × 4 words):")
    for label, seconds in zip(runs, times, strict=True):
        print(f"  {label:<28} {seconds * 1e3:8.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--layers", nargs="+", choices=list(LAYERS), default=list(LAYERS))
    parser.add_argument("--popcount", action="store_true", help="also time the popcount variants")
    parser.add_argument(
        "--no-native", action="store_true", help="skip the C++ kernel (it compiles on first use)"
    )
    args = parser.parse_args()
    backends = ["torch"] if args.no_native else ["torch", "native"]
    if "native" in backends:
        native_kernel()  # compiled (or loaded from torch's cache) before anything is timed
    print(
        f"torch {torch.__version__}, cpu ({platform.machine()}), fastest of {args.repeats} interleaved runs"
    )
    print(
        "Papers' claims, not reproduced here: BNN 7× was a GPU XNOR kernel against an unoptimised GPU "
        "baseline;\nXNOR-Net 58× is a CPU estimate from operation counts. Ours: torch code (no popcount "
        "instruction) and a C++ loop (popcount builtin), against MKL-DNN."
    )
    columns = f"{'batch':>5} {'threads':>7} {'float ms':>9} " + " ".join(
        f"{backend + ' ms':>10} {'speed-up':>9}" for backend in backends
    )
    print(f"{'layer':<44} {columns} {'memory':>7} equal")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for batch in args.batch:
            for name in args.layers:
                print(row(name, batch, args.repeats, backends), flush=True)
    if args.popcount:
        torch.set_num_threads(args.threads[0])
        popcounts(args.repeats)


if __name__ == "__main__":
    main()
