"""The detection and segmentation proxies under other recipes, side by side: ``python
benchmarks/proxy_sweep.py [NAME|GLOB ...] [--jobs N] [--limit SECONDS] [--list]``.

Each named setting is a proxy check's network and recipe (``papers_plugins.detection.retinanet``,
``.ssd``, ``.yolov3``, ``papers_plugins.segmentation.fcn``, ``.deeplabv3``: ``PROXY_OPTIONS`` and
``PROXY_RECIPE``) with a few fields changed: the epochs, the rate, the batch, the crop, SSD's sampling
(``augment``), DeepLab's random scaling, the width, the output stride; and its data, named by each
setting (``builtin:shapes``, or a larger set of its generator such as ``builtin:shapes?images=1500``,
900 training scenes; generated once, then cached). Settings run as separate processes, ``--jobs`` at a
time (default: the CPU count), each on one intra-op thread and on the GPU when there is one
(``PAPERS_DEVICE``, :func:`papers.task_runs.device`); a run still going after ``--limit`` seconds is
stopped, its finished epochs kept. For each setting it prints the validation curve (VOC07 mAP or mIoU,
percent) and seconds per epoch. It searches recipes; the proxy checks themselves are what ``papers
check PAPER --run`` runs. ``make bench`` leaves it out (hours on two cores).
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from papers_plugins.detection.yolov3 import anchors_at

PLUGINS = {
    "retina": "detection.retinanet",
    "ssd": "detection.ssd",
    "yolo": "detection.yolov3",
    "fcn": "segmentation.fcn",
    "dl3": "segmentation.deeplabv3",
}
DL3_OS8 = {"variant": "deeplabv3_resnet101_os8"}
DL3_OS16 = {"variant": "deeplabv3_resnet101_os16"}
SSD_SCALE20 = {"l2norm_scale": 20.0}  # conv4_3's scale before the proxy took 20·√(1/8)
RETINA_256 = {"min_size": 256}  # the shorter side before the proxy took 192
RETINA_OLD = {**RETINA_256, "subnet_init_std": 0.01}  # the paper's σ, before the proxy took 0.02
DL3_OLD_RECIPE = {"batch_size": 8}  # the registry's batch, before the proxy took 4
RETINA_OLD_RECIPE = {"lr": 0.015, "grad_clip": 0.0}  # the proxy's recipe before lr 0.03, clipping at 5
YOLO_192 = {"image_size": 192, "anchors": anchors_at(192)}  # the paper's anchors scaled to 192 pixels
SHAPES = "builtin:shapes"
BIG = "builtin:shapes?images=1500"
THREE_K = "builtin:shapes?images=3000"
FIVE_K = "builtin:shapes?images=5000"
SETTINGS: dict[str, tuple[str, dict, dict, str]] = {
    # name: (plugin, option changes (with "variant" to build another variant), recipe changes, data)
    # Every setting names its data: the proxies' own recipes are the base, not their data.
    "yolo_e80": ("yolo", {}, {"epochs": 80}, SHAPES),
    "yolo_e80_lr001": ("yolo", {}, {"epochs": 80, "lr": 0.001}, SHAPES),
    "yolo_big_e20": ("yolo", {}, {"epochs": 20}, BIG),
    "yolo_3k_e6": ("yolo", {}, {"epochs": 6}, THREE_K),
    "yolo_3k_e6_s192": ("yolo", YOLO_192, {"epochs": 6}, THREE_K),
    "retina_3k_e6": ("retina", RETINA_256, {"epochs": 6}, THREE_K),
    "retina_3k_e6_s192": ("retina", {}, {"epochs": 6}, THREE_K),
    "retina_sigma01_3k_e6": ("retina", RETINA_OLD, {"epochs": 6, "lr": 0.01, "grad_clip": 0.0}, THREE_K),
    "retina_bce_3k_e6": (
        "retina",
        {**RETINA_256, "focal_gamma": 0.0, "focal_alpha": 0.75},
        {"epochs": 6, "lr": 0.01},
        THREE_K,
    ),
    "retina_noclip_3k_e6": ("retina", RETINA_256, {"epochs": 6, "lr": 0.01, "grad_clip": 0.0}, THREE_K),
    "retina_gn_3k_e6": (
        "retina",
        {**RETINA_OLD, "subnet_groups": 32},
        {"epochs": 6, "lr": 0.01, "grad_clip": 0.0},
        THREE_K,
    ),
    "retina_std_e16_lr003": ("retina", RETINA_256, {"epochs": 16, "lr": 0.003, "grad_clip": 0.0}, SHAPES),
    "ssd_e24": ("ssd", {}, {"epochs": 24}, SHAPES),
    "ssd_3k_e6": ("ssd", {}, {"epochs": 6}, THREE_K),
    "ssd_scale20_e24": ("ssd", SSD_SCALE20, {"epochs": 24}, SHAPES),
    "ssd_scale20_3k_e6": ("ssd", SSD_SCALE20, {"epochs": 6}, THREE_K),
    "ssd_scale20_3k_e10": ("ssd", SSD_SCALE20, {"epochs": 10}, THREE_K),
    "dl3_5k_e20": ("dl3", DL3_OS16, {**DL3_OLD_RECIPE, "epochs": 20}, FIVE_K),
    "dl3_3k_e15": ("dl3", DL3_OS16, {**DL3_OLD_RECIPE, "epochs": 15}, THREE_K),
    "dl3_os8_5k_e20": ("dl3", DL3_OS8, {**DL3_OLD_RECIPE, "epochs": 20}, FIVE_K),
    "dl3_scale_e40": (
        "dl3",
        DL3_OS16,
        {**DL3_OLD_RECIPE, "epochs": 40, "scale_min": 0.5, "scale_max": 2.0},
        SHAPES,
    ),
    "dl3_scale_e100": (
        "dl3",
        DL3_OS16,
        {**DL3_OLD_RECIPE, "epochs": 100, "scale_min": 0.5, "scale_max": 2.0},
        SHAPES,
    ),
    "retina_sigma01_e60": ("retina", RETINA_OLD, {**RETINA_OLD_RECIPE, "epochs": 60}, SHAPES),
    "retina_sigma01_e60_lr01": ("retina", RETINA_OLD, {"epochs": 60, "lr": 0.01, "grad_clip": 0.0}, SHAPES),
    "retina_sigma01_big_e16": ("retina", RETINA_OLD, {**RETINA_OLD_RECIPE, "epochs": 16}, BIG),
    "ssd_scale20_e80": ("ssd", SSD_SCALE20, {"epochs": 80, "lr": 0.01}, SHAPES),
    "ssd_scale20_e80_lr003": ("ssd", SSD_SCALE20, {"epochs": 80, "lr": 0.003}, SHAPES),
    "ssd_scale20_big_e24": ("ssd", SSD_SCALE20, {"epochs": 24, "lr": 0.01}, BIG),
    "ssd_scale20_aug": ("ssd", SSD_SCALE20, {"augment": "ssd", "lr": 0.01}, SHAPES),
    "yolo_aug": ("yolo", {}, {"augment": "ssd"}, SHAPES),
    "retina_sigma01_aug": (
        "retina",
        RETINA_OLD,
        {**RETINA_OLD_RECIPE, "epochs": 16, "augment": "ssd"},
        SHAPES,
    ),
    "fcn_e20_b2": ("fcn", {}, {"epochs": 20, "batch_size": 2, "lr": 0.02}, SHAPES),
    "fcn_e40_b2": ("fcn", {}, {"epochs": 40, "batch_size": 2, "lr": 0.02}, SHAPES),
    "fcn_e40_b4": ("fcn", {}, {"epochs": 40, "batch_size": 4}, SHAPES),
    "fcn_e40_b4_c96": ("fcn", {}, {"epochs": 40, "batch_size": 4, "crop": 96}, SHAPES),
    "fcn_e40_lr1_b4": ("fcn", {}, {"epochs": 40, "batch_size": 4, "lr": 0.1}, SHAPES),
    "fcn_e60": ("fcn", {}, {"epochs": 60}, SHAPES),
    "fcn_e60_lr1": ("fcn", {}, {"epochs": 60, "lr": 0.1}, SHAPES),
    "fcn_e60_lr1_b4": ("fcn", {}, {"epochs": 60, "batch_size": 4, "lr": 0.1}, SHAPES),
    "fcn_e100": ("fcn", {}, {"epochs": 100}, SHAPES),
    "fcn_big_e20": ("fcn", {}, {"epochs": 20}, BIG),
    "fcn_big_e15_lr02": ("fcn", {}, {"epochs": 15, "lr": 0.02}, BIG),
    "dl3_e20_b2": ("dl3", DL3_OS16, {"epochs": 20, "batch_size": 2, "lr": 0.02}, SHAPES),
    "dl3_e40_b2": ("dl3", DL3_OS16, {"epochs": 40, "batch_size": 2, "lr": 0.02}, SHAPES),
    "dl3_e100": ("dl3", DL3_OS16, {**DL3_OLD_RECIPE, "epochs": 100}, SHAPES),
    "dl3_big_e20": ("dl3", DL3_OS16, {**DL3_OLD_RECIPE, "epochs": 20}, BIG),
    "dl3_w16_e60": ("dl3", {**DL3_OS16, "width": 16}, {**DL3_OLD_RECIPE, "epochs": 60}, SHAPES),
    "dl3_w16_big_e15": ("dl3", {**DL3_OS16, "width": 16}, {**DL3_OLD_RECIPE, "epochs": 15}, BIG),
    "dl3_os8_e60": ("dl3", DL3_OS8, {**DL3_OLD_RECIPE, "epochs": 60}, SHAPES),
    "dl3_os8_e60_lr02": ("dl3", DL3_OS8, {**DL3_OLD_RECIPE, "epochs": 60, "lr": 0.02}, SHAPES),
    "dl3_os8_e40_lr1_b4": ("dl3", DL3_OS8, {"epochs": 40, "batch_size": 4, "lr": 0.1}, SHAPES),
    "dl3_os8_w16_e60": ("dl3", {**DL3_OS8, "width": 16}, {**DL3_OLD_RECIPE, "epochs": 60}, SHAPES),
    "dl3_os8_w16_e40_lr1_b4": (
        "dl3",
        {**DL3_OS8, "width": 16},
        {"epochs": 40, "batch_size": 4, "lr": 0.1},
        SHAPES,
    ),
    "dl3_os8_w16_l2_e60": (
        "dl3",
        {**DL3_OS8, "width": 16, "layers": [2, 2, 2, 2]},
        {**DL3_OLD_RECIPE, "epochs": 60},
        SHAPES,
    ),
    "dl3_os8_big_e15": ("dl3", DL3_OS8, {**DL3_OLD_RECIPE, "epochs": 15}, BIG),
    "dl3_os8_5k_e8": ("dl3", DL3_OS8, {**DL3_OLD_RECIPE, "epochs": 8}, FIVE_K),
    "dl3_os8_5k_e8_lr1": (
        "dl3",
        DL3_OS8,
        {**DL3_OLD_RECIPE, "epochs": 8, "lr": 0.1},
        FIVE_K,
    ),
    "dl3_os8_5k_e8_b4": ("dl3", DL3_OS8, {"epochs": 8, "batch_size": 4}, FIVE_K),
    "dl3_os8_5k_e5_b4": ("dl3", DL3_OS8, {"epochs": 5, "batch_size": 4}, FIVE_K),
    "dl3_os8_5k_e5_b2": ("dl3", DL3_OS8, {"epochs": 5, "batch_size": 2}, FIVE_K),
    "fcn_bn_e20": ("fcn", {"batch_norm": True}, {"epochs": 20}, SHAPES),
    "fcn_e50_b4": ("fcn", {}, {"epochs": 50, "batch_size": 4}, SHAPES),
}


def run_one(name: str, folder: Path) -> None:
    """Train setting ``name`` into ``folder`` (its metrics.json grows by one row per epoch)."""
    import torch

    torch.set_num_threads(1)
    plugin, changes, recipe, data = SETTINGS[name]
    module = importlib.import_module(f"papers_plugins.{PLUGINS[plugin]}")
    options = {**module.PROXY_OPTIONS, **changes}
    variant = options.pop("variant", module.PROXY_VARIANT)
    overrides = {**module.PROXY_RECIPE, **recipe}
    if PLUGINS[plugin].startswith("detection"):
        from papers.train_detection import train_detector

        train_detector(variant, data, overrides=overrides, options=options, out=folder, paper_recipe=False)
    else:
        from papers.train_segmentation import train_segmenter

        train_segmenter(variant, data, overrides=overrides, options=options, out=folder)


def _curve(folder: Path) -> tuple[list[float], list[float]]:
    metrics = folder / "metrics.json"
    rows = json.loads(metrics.read_text()) if metrics.exists() else []
    scores = [r["val_voc07_map"] if "val_voc07_map" in r else 100 * r["val_miou"] for r in rows]
    return scores, [r["seconds"] for r in rows]


def child_command(name: str, folder: Path) -> list[str]:
    """The command line of the process that trains setting ``name`` into ``folder``."""
    return [sys.executable, __file__, "--one", name, str(folder)]


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="settings or glob patterns (default: all)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--limit", type=float, default=3600.0, help="seconds before runs are stopped")
    parser.add_argument("--list", action="store_true", help="print the settings and exit")
    parser.add_argument("--one", nargs=2, metavar=("NAME", "FOLDER"), help=argparse.SUPPRESS)
    return parser


def main() -> None:
    args = parser().parse_args()
    if args.one:
        run_one(args.one[0], Path(args.one[1]))
        return
    chosen = [s for s in SETTINGS if not args.names or any(fnmatch.fnmatch(s, p) for p in args.names)]
    if args.list or not chosen:
        for name in chosen or SETTINGS:
            print(name, *SETTINGS[name][1:])
        return
    from papers.shapes import source_root

    work = Path(tempfile.mkdtemp(prefix="proxy-sweep-"))
    for data in sorted({SETTINGS[name][3] for name in chosen}):
        source_root(data)  # generated once, before the runs
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    waiting, running, started = list(chosen), {}, time.time()
    while (waiting or running) and time.time() - started < args.limit:
        while waiting and len(running) < args.jobs:
            name = waiting.pop(0)
            command = child_command(name, work / name)
            with open(work / f"{name}.log", "w") as log:  # the child keeps its own descriptor
                running[name] = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        time.sleep(2)
        running = {n: p for n, p in running.items() if p.poll() is None}
    for process in running.values():
        process.kill()
    print(f"settings: {len(chosen)}, {args.jobs} at a time, logs and runs in {work}")
    for name in chosen:
        scores, seconds = _curve(work / name)
        if not scores:
            print(f"{name}: no epoch finished (see {work / name}.log)")
            continue
        per_epoch = sorted(seconds)[len(seconds) // 2]
        print(
            f"{name}: {len(scores)} epochs, {per_epoch:.1f} s each (median), last {scores[-1]:.1f}%, "
            f"best {max(scores):.1f}%; curve {' '.join(f'{s:.1f}' for s in scores)}"
        )


if __name__ == "__main__":
    main()
