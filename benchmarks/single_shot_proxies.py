"""RetinaNet's, SSD's and YOLOv3's proxy checks, timed: ``python benchmarks/single_shot_proxies.py
[--threads N] [--only retinanet|ssd|yolov3]``.

Runs ``papers check retinanet --run``, ``papers check ssd --run`` and ``papers check yolov3 --run``,
each in a fresh process (a narrow detector trained on a set of ``builtin:shapes``' generator, its
plugin's ``PROXY_DATA``, and scored with VOC 2007's mAP at IoU 0.5 on its val split; see
``papers_plugins.detection.retinanet``, ``.ssd`` and ``.yolov3``) with N intra-op threads (default 2,
the issue's two CPU cores), the data sets generated beforehand, and prints each wall time against the
issue's budget of five minutes beside the measured mAP. It reports and never fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BUDGET_S = 300.0
"""The issue's budget: minutes on two CPU cores."""
PROXIES = {"retinanet": "RetinaNet", "ssd": "SSD300", "yolov3": "YOLOv3"}
PAPERS = str(Path(sys.executable).with_name("papers"))


def _data(paper: str) -> str:
    import importlib

    return importlib.import_module(f"papers_plugins.detection.{paper}").PROXY_DATA


def _timed(paper: str, threads: int) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    done = subprocess.run(
        [PAPERS, "check", paper, "--run", "--json"], env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    try:  # `papers check` exits 1 when a check fails, the JSON printed all the same
        proxies = [c for c in json.loads(done.stdout) if c.get("proxy")]
        detail = "; ".join(
            f"VOC07 mAP {c['measured']:.2f}% (passes at ≥ 60%): {c['status']}" for c in proxies
        )
    except json.JSONDecodeError:
        detail = f"exit status {done.returncode}: {' '.join(done.stderr.strip().splitlines()[-1:])}"
    return (
        f"papers check {paper} --run ({PROXIES[paper]} proxy on {_data(paper)}, {threads} threads): "
        f"{seconds:.1f} s, budget ≤ {BUDGET_S:g} s, {'ok' if seconds <= BUDGET_S else 'MISSED'}; {detail}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=list(PROXIES), default=None)
    args = parser.parse_args()
    chosen = [args.only] if args.only else list(PROXIES)

    from papers.shapes import source_root

    for paper in chosen:
        source_root(_data(paper))  # generated once, outside the timed runs
    for paper in chosen:
        print(_timed(paper, args.threads), flush=True)


if __name__ == "__main__":
    main()
