"""The LC algorithm's error against compression ratio on LeNet-300-100, measured here:
``python benchmarks/lc_tradeoff.py [--svg FILE]``.

Trains one reference LeNet-300-100 on builtin:mnist5k (30 epochs, one thread), then compresses it
directly (the first C step alone) and by the LC algorithm (Carreira-Perpiñán 2017) with each C step
of the registry's variants and a few more sizes: an adaptive codebook of K = 2, 4, 8 and 16 values per
layer (Part II), pruning to 2, 5 and 10% of each layer, and ranks 3, 5 and 10 (fc3 has 10 outputs).
Prints the compression ratio and the test error (percent) of the reference, the direct compression
and LC for each, and writes the chart as SVG. It reports and never fails; ``papers check
carreira2017 --run`` and ``papers check carreira2017_quantization --run`` are the checks.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from papers_plugins.compression.lc import tradeoff

QUANTIZE = "carreira2017_quantization-lenet300_100-k{}"
PRUNE = "carreira2017-lenet300_100-prune"
RANK = "carreira2017-lenet300_100-rank10"
SETTINGS = [
    *[(QUANTIZE.format(k), {}) for k in (2, 4, 8, 16)],
    *[(PRUNE, {"kept": kept}) for kept in (0.02, 0.05, 0.1)],
    *[(RANK, {"rank": rank}) for rank in (3, 5, 10)],
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--svg", type=Path, default=None, help="write the chart here")
    args = parser.parse_args()
    started = time.perf_counter()
    made = tradeoff(SETTINGS)
    print("\n".join(made.lines()))
    print(f"LC trade-off: {time.perf_counter() - started:.1f} s")
    if args.svg is not None:
        args.svg.write_text(made.svg(), encoding="utf-8")
        print(f"wrote {args.svg}")


if __name__ == "__main__":
    main()
