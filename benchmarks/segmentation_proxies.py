"""The segmentation proxies, timed, and the CRF's effect: ``python benchmarks/segmentation_proxies.py
[--threads N] [--only fcn|deeplabv3] [--band PIXELS] [--crf-of RUN]``.

Trains each proxy check's network as ``papers check fcn --run`` and ``papers check deeplabv3 --run``
do (``papers_plugins.segmentation.fcn`` and ``.deeplabv3``: a narrow FCN-8s and DeepLabv3 on
``builtin:shapes``' generator, each on its check's set: trained on its train split, scored by mIoU on
its val split) with N intra-op threads (default 2,
the issue's two CPU cores), the data set generated beforehand, and prints each wall time against the
issue's budget of five minutes beside the mIoU and the check's bar. Then DeepLab's fully connected
CRF (:func:`papers.crf.dense_crf`, with DeepLab v2's settings, the registry's only CRF settings: the
DeepLabv3 paper runs none) refines the trained DeepLabv3 proxy's val scores, and both mIoU and the
trimap accuracy (pixel accuracy within ``--band`` pixels of the labels' boundaries,
:func:`papers.segmentation_metrics.trimap_accuracy`) are printed without and with it. No setting is
tuned to the result. It reports and never fails. ``--crf-of RUN`` measures only the CRF's effect, on
a finished run's folder (``papers train``'s or a proxy's: its ``recipe.json`` names the variant, the
build options and the data; ``model.safetensors`` the weights).

First it prints what an output stride alone allows on the val split: the mIoU of an oracle that
scores each cell of the stride's grid with the log of its labels' pixel shares (the labels
average-pooled) and upsamples those scores bilinearly to the image, as the networks do theirs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

BUDGET_S = 300.0
"""The issue's budget: minutes on two CPU cores."""
CRF_SETTINGS_FROM = "deeplab_v2_resnet101"


def _proxy(paper: str) -> tuple[str, dict[str, Any], dict[str, Any], float, str]:
    from papers.registry import get_registry

    (check,) = get_registry().training_checks(paper)
    from papers_plugins.segmentation import deeplabv3, fcn

    options = {"fcn": fcn.PROXY_OPTIONS, "deeplabv3": deeplabv3.PROXY_OPTIONS}[paper]
    return check.variant, dict(options), dict(check.overrides), check.min_accuracy, check.data


def _train(paper: str, folder: Path) -> tuple[float, float, str, dict[str, Any]]:
    from papers.train_segmentation import train_segmenter

    variant, options, overrides, _, data = _proxy(paper)
    started = time.perf_counter()
    run = train_segmenter(variant, data, overrides=overrides, options=options, out=folder)
    return time.perf_counter() - started, 100 * run.final["val_miou"], variant, run.recipe["options"]


def _crf_effect(variant: str, options: dict[str, Any], weights: Path, band: int, data: str) -> list[str]:
    import numpy as np
    import torch

    import papers
    from papers.crf import dense_crf
    from papers.evaluate import fit_weights, load_weights
    from papers.segmentation_data import read_pair, segmentation_pairs
    from papers.segmentation_metrics import confusion_matrix, scores, trimap_accuracy
    from papers.train_segmentation import _tensors

    settings = papers.expand_variant(CRF_SETTINGS_FROM).task.crf
    model = papers.build_model(variant, **options)
    fit_weights(model, load_weights(str(weights)), file=str(weights))
    model.eval()
    classes = options["num_classes"]
    pairs, _ = segmentation_pairs(data, "val")
    confusion = {k: torch.zeros(classes, classes, dtype=torch.long) for k in ("plain", "crf")}
    trimap = {k: [0, 0] for k in confusion}
    seconds = 0.0
    for pair in pairs:
        image, mask = read_pair(pair, classes)
        pixels, labels = _tensors(image, mask)
        with torch.no_grad():
            probabilities = model(pixels[None])["out"][0].softmax(0)
        started = time.perf_counter()
        refined = torch.from_numpy(dense_crf(np.asarray(image), probabilities.numpy(), settings))
        seconds += time.perf_counter() - started
        for key, scored in (("plain", probabilities), ("crf", refined)):
            predicted = scored.argmax(0)
            confusion[key] += confusion_matrix(predicted, labels, classes)
            right, total = trimap_accuracy(predicted, labels, band)
            trimap[key][0] += right
            trimap[key][1] += total
    rows = []
    for key, name in (("plain", "without CRF"), ("crf", "with CRF")):
        miou = 100 * scores(confusion[key])["miou"]
        right, total = trimap[key]
        rows.append(
            f"  {name:12s} mIoU {miou:6.2f}%  trimap accuracy ({band}-pixel band, {total} pixels) "
            f"{100 * right / max(total, 1):6.2f}%"
        )
    rows.append(
        f"  CRF: {CRF_SETTINGS_FROM}'s settings ({settings.model_dump()}), "
        f"{seconds / len(pairs) * 1000:.0f} ms per val image"
    )
    return rows


def _stride_ceiling(data: str, strides: tuple[int, ...] = (32, 16, 8, 4)) -> list[str]:
    import torch
    import torch.nn.functional as F

    from papers.segmentation_data import read_pair, segmentation_pairs
    from papers.segmentation_metrics import IGNORE_INDEX, confusion_matrix, scores
    from papers.train_segmentation import _tensors

    pairs, names = segmentation_pairs(data, "val")
    classes = len(names or [])
    labels = [_tensors(*read_pair(pair, classes))[1] for pair in pairs]
    rows = []
    for stride in strides:
        confusion = torch.zeros(classes, classes, dtype=torch.long)
        for label in labels:
            height, width = label.shape
            shares = F.one_hot(label.masked_fill(label == IGNORE_INDEX, 0), classes).permute(2, 0, 1)
            pooled = F.adaptive_avg_pool2d(shares[None].float(), (-(-height // stride), -(-width // stride)))
            scored = F.interpolate(pooled.add(1e-3).log(), size=(height, width), mode="bilinear")
            confusion += confusion_matrix(scored[0].argmax(0), label, classes)
        measured = scores(confusion)
        per_class = ", ".join(
            f"{name} {100 * value:.1f}"
            for name, value in zip(names or [], measured["per_class"], strict=True)
        )
        rows.append(f"  output stride {stride:2d}: oracle mIoU {100 * measured['miou']:5.1f}% ({per_class})")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=["fcn", "deeplabv3"], default=None)
    parser.add_argument("--band", type=int, default=3, help="trimap band half-width in pixels")
    parser.add_argument("--crf-of", type=Path, default=None, help="a finished run's folder: only the CRF")
    args = parser.parse_args()

    import torch

    from papers.shapes import source_root

    torch.set_num_threads(args.threads)
    if args.crf_of is not None:
        from papers.task_runs import task_record

        record = task_record(args.crf_of / "recipe.json")
        if record is None:
            raise SystemExit(f"{args.crf_of}: not a run folder (no readable recipe.json)")
        print(f"{args.crf_of} ({record.variant}, {record.data}):")
        weights = args.crf_of / "model.safetensors"
        print("\n".join(_crf_effect(record.variant, record.options, weights, args.band, record.data)))
        return
    papers_to_run = [args.only] if args.only else ["fcn", "deeplabv3"]
    for paper in papers_to_run:
        source_root(_proxy(paper)[4])  # generated once, outside the timed runs
    print("what the output stride allows on builtin:shapes' val split:")
    print("\n".join(_stride_ceiling("builtin:shapes")), flush=True)
    with tempfile.TemporaryDirectory() as temporary:
        for paper in papers_to_run:
            folder = Path(temporary) / paper
            seconds, miou, variant, options = _train(paper, folder)
            bar, data = _proxy(paper)[3:]
            print(
                f"{paper} proxy ({variant}, {data}, {args.threads} threads): {seconds:.1f} s, "
                f"budget ≤ {BUDGET_S:g} s, {'ok' if seconds <= BUDGET_S else 'MISSED'}; "
                f"val mIoU {miou:.2f}% (passes at ≥ {bar:g}%): {'pass' if miou >= bar else 'FAIL'}",
                flush=True,
            )
            if paper == "deeplabv3":
                print("\n".join(_crf_effect(variant, options, folder / "model.safetensors", args.band, data)))


if __name__ == "__main__":
    main()
