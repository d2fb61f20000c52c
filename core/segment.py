"""``papers segment``: a segmenter's label map for each image, as a palette PNG and an overlay.

The palette is PASCAL VOC's (class ``c``'s colour spreads its bits over the three channels, three at
a time, from the most significant bit down); its 21 class names are used when the model has 21 classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from papers.errors import PapersError

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def voc_palette(size: int = 256) -> list[int]:
    """PASCAL VOC's colour map as a flat ``[r, g, b, r, g, b, ...]`` list of ``size`` colours."""
    palette = []
    for label in range(size):
        rgb = [0, 0, 0]
        value = label
        for bit in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((value >> channel) & 1) << bit
            value >>= 3
        palette.extend(rgb)
    return palette


def segment(
    variant: str,
    images: list[str],
    *,
    weights: str | None = None,
    out: str | None = None,
    options: dict[str, Any] | None = None,
    crf: bool = False,
    msc: bool = False,
) -> list[dict[str, Any]]:
    """Label maps of ``images``: per image its size and class histogram (pixels per class); with
    ``out``, ``<out>/<stem>.png`` (palette) and ``<out>/<stem>.overlay.png`` are written; with
    ``msc``, the network runs at the paper's input scales, max-fused (:mod:`papers.multiscale`); with
    ``crf``, the scores are refined by the paper's fully connected CRF (:mod:`papers.crf`) first."""
    import numpy as np
    import torch
    from PIL import Image

    import papers
    from papers.data import load_image
    from papers.evaluate import fit_weights, load_weights
    from papers.spec import Segmentation

    task = papers.expand_variant(variant).task
    if not isinstance(task, Segmentation):
        raise PapersError(f"{variant} is not a segmenter (its graph has no `segmentation` section)")
    if crf and task.crf is None:
        raise PapersError(f"--crf: {variant}'s paper runs no CRF (its `segmentation` section has no `crf`)")
    if msc and not task.msc_scales:
        raise PapersError(
            f"--msc: {variant}'s paper uses no multi-scale inputs (its `segmentation` section has no "
            "`msc_scales`)"
        )
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise PapersError("--out must be a folder", file=out)
    loaded = []
    for path in images:
        try:
            loaded.append(load_image(path))
        except OSError as exc:
            raise PapersError(f"cannot read the image: {exc}", file=path) from None
    stems = [Path(path).stem for path in images]
    if out is not None and len(set(stems)) != len(stems):
        raise PapersError("two images have the same name; their label maps would overwrite each other")
    torch.manual_seed(0)
    model = papers.build_model(variant, **(options or {}))
    if weights is not None:
        fit_weights(model, load_weights(weights), file=weights)
    if msc:
        from papers.multiscale import MultiScaleSegmenter

        model = MultiScaleSegmenter(model, task.msc_scales)
    model.eval()
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    results = []
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
    for path, stem, image in zip(images, stems, loaded, strict=True):
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        with torch.no_grad():
            try:
                logits = model(((pixels - mean) / std)[None])["out"][0]
            except RuntimeError as exc:  # too small for the network's poolings (SegNet's five)
                reason = str(exc).splitlines()[0]
                raise PapersError(
                    f"{variant} cannot take this {image.height}×{image.width} image: {reason}", file=path
                ) from None
        if crf:
            from papers.crf import dense_crf

            refined = dense_crf(np.asarray(image), logits.softmax(0).numpy(), task.crf)
            logits = torch.from_numpy(refined)
        labels = logits.argmax(0).to(torch.uint8).numpy()
        classes = logits.shape[0]
        names = VOC_CLASSES if classes == len(VOC_CLASSES) else tuple(str(c) for c in range(classes))
        counts = np.bincount(labels.ravel(), minlength=classes)
        histogram = {names[c]: int(n) for c, n in enumerate(counts) if n}
        result: dict[str, Any] = {"image": path, "size": [image.height, image.width], "histogram": histogram}
        if out is not None:
            label_map = Image.frombytes("P", (image.width, image.height), labels.tobytes())
            label_map.putpalette(voc_palette())
            label_file = Path(out) / f"{stem}.png"
            overlay_file = Path(out) / f"{stem}.overlay.png"
            label_map.save(label_file)
            Image.blend(image, label_map.convert("RGB"), 0.5).save(overlay_file)
            result["files"] = [str(label_file), str(overlay_file)]
        results.append(result)
    return results
