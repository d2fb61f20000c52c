"""Detection and segmentation against their peers, in one run: ``python benchmarks/tasks.py [--quick]``.

Rows (ours / peer, interleaved, medians; CPU, eval, ``no_grad``, this machine's threads):

- ``fasterrcnn_resnet50_fpn`` eval latency on two 480×640 images against torchvision's model with the
  same (random) weights, loaded strictly; the detections are checked equal first (target ≤ 1.05);
- ``ssd300_vgg16`` and ``retinanet_resnet50_fpn`` eval latency on the same two images against
  torchvision's, detections checked equal first (target ≤ 1.05);
- ``deeplabv3_resnet50`` eval latency on one 3×320×320 image against torchvision's with the same
  weights, ``out`` checked equal first (target ≤ 1.05);
- mAP evaluation: ``papers.detection_metrics.coco_metrics`` on 200 images' detections and ground
  truth against pycocotools' COCOeval alone on the same records (the registry's call builds the COCO
  objects and runs COCOeval, so the ratio is its overhead);
- the confusion matrix and the four metrics (``papers.segmentation_metrics``) on 20 masks of 512×512
  with 21 classes against torchmetrics' ``MulticlassConfusionMatrix`` on the same masks, the
  matrices checked equal first.

It reports and never fails.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable

import torch


def _interleaved(ours: Callable[[], object], peer: Callable[[], object], repeats: int) -> tuple[float, float]:
    a, b = [], []
    for _ in range(repeats):
        for fn, times in ((ours, a), (peer, b)):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
    return statistics.median(a), statistics.median(b)


def _row(name: str, ours: float, peer: float, target: str) -> None:
    print(f"{name}: ours {ours:.4f} s, peer {peer:.4f} s, ratio {ours / peer:.3f} (target {target})")


def detection_latency(repeats: int) -> None:
    import torchvision

    import papers

    torch.manual_seed(0)
    peer = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None).eval()
    ours = papers.build_model("fasterrcnn_resnet50_fpn").eval()
    ours.load_state_dict(peer.state_dict(), strict=True)
    images = [torch.rand(3, 480, 640), torch.rand(3, 480, 640)]
    with torch.no_grad():
        mine, theirs = ours(images), peer(images)
        for a, b in zip(mine, theirs, strict=True):
            assert torch.equal(a["labels"], b["labels"]) and torch.allclose(a["boxes"], b["boxes"], rtol=1e-4)

        ours_s, peer_s = _interleaved(lambda: ours(images), lambda: peer(images), repeats)
    _row("fasterrcnn_resnet50_fpn eval, 2 images 480×640 / torchvision", ours_s, peer_s, "≤ 1.05")


def single_shot_latency(repeats: int) -> None:
    import torchvision

    import papers

    builders = {
        "ssd300_vgg16": torchvision.models.detection.ssd300_vgg16,
        "retinanet_resnet50_fpn": torchvision.models.detection.retinanet_resnet50_fpn,
    }
    images = [torch.rand(3, 480, 640), torch.rand(3, 480, 640)]
    for variant, build in builders.items():
        torch.manual_seed(0)
        peer = build(weights=None, weights_backbone=None).eval()
        ours = papers.build_model(variant).eval()
        ours.load_state_dict(peer.state_dict(), strict=True)
        with torch.no_grad():
            for a, b in zip(ours(images), peer(images), strict=True):
                assert torch.equal(a["labels"], b["labels"]) and torch.allclose(
                    a["boxes"], b["boxes"], rtol=1e-4
                )
            ours_s, peer_s = _interleaved(
                functools.partial(ours, images), functools.partial(peer, images), repeats
            )
        _row(f"{variant} eval, 2 images 480×640 / torchvision", ours_s, peer_s, "≤ 1.05")


def segmentation_latency(repeats: int) -> None:
    import torchvision

    import papers

    torch.manual_seed(0)
    peer = torchvision.models.segmentation.deeplabv3_resnet50(
        weights=None, weights_backbone=None, aux_loss=True
    ).eval()
    ours = papers.build_model("deeplabv3_resnet50").eval()
    ours.load_state_dict(peer.state_dict(), strict=True)
    image = torch.rand(1, 3, 320, 320)
    with torch.no_grad():
        assert torch.allclose(ours(image)["out"], peer(image)["out"], rtol=1e-4, atol=1e-4)
        ours_s, peer_s = _interleaved(lambda: ours(image), lambda: peer(image), repeats)
    _row("deeplabv3_resnet50 eval, 1×3×320×320 / torchvision", ours_s, peer_s, "≤ 1.05")


def map_evaluation(repeats: int) -> None:
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from papers.detection_metrics import coco_metrics

    rng = torch.Generator().manual_seed(0)
    targets, detections = [], []
    for _ in range(200):
        n = int(torch.randint(1, 5, (1,), generator=rng))
        xy = torch.rand(n, 2, generator=rng) * 150
        boxes = torch.cat([xy, xy + 10 + torch.rand(n, 2, generator=rng) * 40], 1)
        labels = torch.randint(1, 5, (n,), generator=rng)
        targets.append({"boxes": boxes, "labels": labels})
        noisy = boxes + torch.randn(n, 4, generator=rng) * 3
        detections.append({"boxes": noisy, "scores": torch.rand(n, generator=rng), "labels": labels})
    classes = ["__background__", "a", "b", "c", "d"]

    images = [{"id": i, "width": 200, "height": 200} for i in range(len(targets))]
    annotations, results = [], []
    for i, (t, d) in enumerate(zip(targets, detections, strict=True)):
        for box, label in zip(t["boxes"].tolist(), t["labels"].tolist(), strict=True):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i,
                    "category_id": label,
                    "bbox": [box[0], box[1], w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
        for box, score, label in zip(
            d["boxes"].tolist(), d["scores"].tolist(), d["labels"].tolist(), strict=True
        ):
            width, height = box[2] - box[0], box[3] - box[1]
            results.append(
                {"image_id": i, "category_id": label, "bbox": [box[0], box[1], width, height], "score": score}
            )
    categories = [{"id": c, "name": classes[c]} for c in range(1, 5)]

    def peer() -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO()
            coco.dataset = {"images": images, "annotations": annotations, "categories": categories}
            coco.createIndex()
            evaluation = COCOeval(coco, coco.loadRes(results), "bbox")
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()

    def ours() -> None:
        coco_metrics(detections, targets, classes=classes)

    ours_s, peer_s = _interleaved(ours, peer, repeats)
    _row("COCO AP of 200 images (papers.detection_metrics) / pycocotools alone", ours_s, peer_s, "reported")


def confusion(repeats: int) -> None:
    from torchmetrics.classification import MulticlassConfusionMatrix

    from papers.segmentation_metrics import confusion_matrix, scores

    rng = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 21, (20, 512, 512), generator=rng)
    labels[:, :8] = 255
    predicted = torch.where(
        torch.rand(labels.shape, generator=rng) < 0.7,
        labels.clamp(max=20),
        torch.randint(0, 21, labels.shape, generator=rng),
    )
    metric = MulticlassConfusionMatrix(num_classes=21, ignore_index=255)
    assert torch.equal(confusion_matrix(predicted, labels, 21), metric(predicted, labels).long())

    def ours() -> None:
        scores(confusion_matrix(predicted, labels, 21))

    def peer() -> None:
        metric.reset()
        metric(predicted, labels)

    ours_s, peer_s = _interleaved(ours, peer, repeats)
    _row(
        "confusion matrix + metrics, 20 masks 512×512, 21 classes / torchmetrics", ours_s, peer_s, "reported"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {repeats}, interleaved")
    detection_latency(repeats)
    single_shot_latency(repeats)
    segmentation_latency(repeats)
    map_evaluation(repeats)
    confusion(repeats)


if __name__ == "__main__":
    main()
