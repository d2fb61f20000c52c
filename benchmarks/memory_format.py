"""A training step of each proxy network in NHWC against NCHW: ``python benchmarks/memory_format.py
[--threads N] [--steps S] [--only NAME]``.

Builds each detection and segmentation proxy check's network as its plugin describes it
(``PROXY_VARIANT``, ``PROXY_OPTIONS``) twice from one seed, one left in PyTorch's default layout,
one in ``channels_last`` as the task loops place it with ``-r channels_last=true``
(:func:`papers.task_runs.place`), and times S SGD steps of each, interleaved, on the same batches:
the segmenters on 128-pixel crops at their proxy's batch size (random pixels and labels), the
detectors on pairs of ``builtin:shapes`` scenes with their boxes. It prints the median step of each
and the ratio channels_last / contiguous (below 1: NHWC is faster), with N intra-op threads (default
2, the issues' two CPU cores). It reports and never fails.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import statistics
import time
from typing import Any

PROXIES = {
    "fcn": "segmentation.fcn",
    "deeplabv3": "segmentation.deeplabv3",
    "ssd": "detection.ssd",
    "retinanet": "detection.retinanet",
    "yolov3": "detection.yolov3",
    "faster_rcnn": "detection.faster_rcnn",
}
SEGMENTERS = ("fcn", "deeplabv3")
SHAPE_CLASSES = 5
"""builtin:shapes' four shape classes and the background."""


def _segmenter(plugin: Any) -> tuple[Any, Any]:
    import torch
    import torch.nn.functional as F

    import papers

    model = papers.build_model(plugin.PROXY_VARIANT, **plugin.PROXY_OPTIONS, num_classes=SHAPE_CLASSES)
    batch = plugin.PROXY_RECIPE.get("batch_size", 8)
    crop = plugin.PROXY_RECIPE.get("crop", 128)
    generator = torch.Generator().manual_seed(0)

    def loss(network: Any, step: int) -> Any:
        pixels = torch.randn(batch, 3, crop, crop, generator=generator.manual_seed(step))
        labels = torch.randint(0, SHAPE_CLASSES, (batch, crop, crop), generator=generator)
        return F.cross_entropy(network(pixels)["out"], labels)

    return model, loss


def _detector(plugin: Any) -> tuple[Any, Any]:
    import papers
    from papers.data import readable
    from papers.detect import class_detector, is_detector
    from papers.detection_data import detection_split

    with readable("builtin:shapes"):
        scenes = detection_split("builtin:shapes", "train")
        pairs = [[scenes.dataset[2 * i + j] for j in (0, 1)] for i in range(32)]
    options = dict(plugin.PROXY_OPTIONS)
    if is_detector(plugin.PROXY_VARIANT):
        model = papers.build_model(plugin.PROXY_VARIANT, **options, num_classes=scenes.num_classes)
    else:  # a plugin's own detector counts the object classes only
        options["num_classes"] = scenes.num_classes - 1
        model = class_detector(plugin.PROXY_VARIANT)(plugin.PROXY_VARIANT, weights=None, options=options)

    def loss(network: Any, step: int) -> Any:
        pair = pairs[step % len(pairs)]
        targets = [{"boxes": t["boxes"], "labels": t["labels"]} for _, t in pair]
        return sum(network([image for image, _ in pair], targets).values())

    return model, loss


def compare(name: str, steps: int) -> str:
    import torch

    plugin = importlib.import_module(f"papers_plugins.{PROXIES[name]}")
    torch.manual_seed(0)
    contiguous, loss = _segmenter(plugin) if name in SEGMENTERS else _detector(plugin)
    nhwc = copy.deepcopy(contiguous).to(memory_format=torch.channels_last)
    times: dict[str, list[float]] = {"contiguous": [], "channels_last": []}
    models = {"contiguous": contiguous, "channels_last": nhwc}
    optimizers = {k: torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9) for k, m in models.items()}
    for step in range(steps + 2):  # the first two steps of each warm up, untimed
        for layout, model in models.items():
            model.train()
            started = time.perf_counter()
            value = loss(model, step)
            optimizers[layout].zero_grad()
            value.backward()
            optimizers[layout].step()
            if step >= 2:
                times[layout].append(time.perf_counter() - started)
    medians = {k: 1000 * statistics.median(v) for k, v in times.items()}
    ratio = medians["channels_last"] / medians["contiguous"]
    return (
        f"{name} ({plugin.PROXY_VARIANT}): contiguous {medians['contiguous']:.1f} ms, "
        f"channels_last {medians['channels_last']:.1f} ms a step; ratio {ratio:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--only", choices=list(PROXIES), default=None)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} intra-op threads, median of {args.steps} steps")
    for name in [args.only] if args.only else list(PROXIES):
        print(compare(name, args.steps), flush=True)


if __name__ == "__main__":
    main()
