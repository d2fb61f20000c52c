"""Learning to Prune's speed/accuracy frontier, measured here: ``python benchmarks/learning_to_prune.py``.

Trains the LOLS pruning policy at each λ of the proxy's settings and the gold-span baseline at each
threshold on a treebank sampled from the registry's PCFG, prints every policy's labelled recall and
runtime (rule applications, as a fraction of the unpruned parser's) on held-out sentences, and writes
the frontier as SVG (``--svg``). It reports and never fails; ``papers check learning_to_prune --run``
is the check.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from papers_plugins.compression.parsing import frontier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--svg", type=Path, default=None, help="write the frontier chart here")
    args = parser.parse_args()
    started = time.perf_counter()
    made = frontier()
    print("\n".join(made.rows()))
    print(f"Learning to Prune frontier: {time.perf_counter() - started:.1f} s")
    if args.svg is not None:
        args.svg.write_text(made.svg(), encoding="utf-8")
        print(f"wrote {args.svg}")


if __name__ == "__main__":
    main()
