"""Segmentation data: images and their label masks, as PASCAL VOC lays them out or as a plain folder.

Sources:

- a VOC folder (``VOCdevkit/VOC20xx`` or the folder holding ``JPEGImages/``, ``SegmentationClass/`` and
  ``ImageSets/Segmentation/<split>.txt``), read with the file layout of torchvision's
  ``VOCSegmentation``;
- ``builtin:shapes`` (:mod:`papers.shapes`, written in that layout);
- a plain folder with ``images/`` and ``masks/`` (same stems; every pair belongs to every split).

Masks are palette PNGs whose indices are the labels (VOC's), or greyscale label maps; 255 is ignored.
An RGB mask is read through VOC's palette, and a colour outside it is refused, as is a palette PNG
whose index shows neither VOC's colour for that label nor a greyscale palette's grey. Every refusal
names the file: a mask whose size differs from its image, a label outside the classes that is not
255, an unknown colour, an empty split file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from papers.errors import PapersError

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

IGNORE = 255
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass(frozen=True)
class Pair:
    image: Path
    mask: Path


def _voc_folder(root: Path) -> Path | None:
    if (root / "SegmentationClass").is_dir():
        return root
    devkit = root / "VOCdevkit" if (root / "VOCdevkit").is_dir() else root
    years = sorted(p for p in devkit.glob("VOC20*") if (p / "SegmentationClass").is_dir())
    return years[-1] if years else None


def segmentation_pairs(source: str, split: str) -> tuple[list[Pair], list[str] | None]:
    """The (image, mask) pairs of ``split`` in ``source``, and its class names where the source says
    them (VOC's 21, builtin:shapes' 5; a plain folder: none, the model's)."""
    from papers.segment import VOC_CLASSES
    from papers.shapes import CLASSES, is_source, source_root

    if is_source(source):
        folder = _voc_folder(source_root(source))
        assert folder is not None
        classes: list[str] | None = ["background", *CLASSES]
    else:
        root = Path(source)
        if not root.is_dir():
            raise PapersError(
                "no such folder (a VOC folder, images/ + masks/, or builtin:shapes)", file=source
            )
        if (root / "images").is_dir() and (root / "masks").is_dir():
            return _plain(root), None
        folder = _voc_folder(root)
        if folder is None:
            raise PapersError(
                "neither a VOC folder (SegmentationClass/, ImageSets/Segmentation/) nor images/ + masks/",
                file=source,
            )
        classes = list(VOC_CLASSES)
    listing = folder / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not listing.is_file():
        raise PapersError(f"no {split} split", file=str(listing))
    names = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
    if not names:
        raise PapersError("the split file lists no image", file=str(listing))
    return [
        Pair(folder / "JPEGImages" / f"{n}.jpg", folder / "SegmentationClass" / f"{n}.png") for n in names
    ], classes


def _plain(root: Path) -> list[Pair]:
    masks = {p.stem: p for p in (root / "masks").iterdir() if p.suffix.lower() == ".png"}
    pairs = []
    for image in sorted((root / "images").iterdir()):
        if image.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if image.stem not in masks:
            raise PapersError("no mask of this image in masks/ (same stem, .png)", file=str(image))
        pairs.append(Pair(image, masks[image.stem]))
    if not pairs:
        raise PapersError("images/ holds no image", file=str(root / "images"))
    return pairs


def read_pair(pair: Pair, num_classes: int) -> tuple[Image.Image, np.ndarray]:
    """The RGB image and its H×W uint8 label mask, checked against each other and the classes."""
    import numpy as np
    from PIL import Image

    from papers.segment import voc_palette

    try:
        image = Image.open(pair.image).convert("RGB")
    except OSError as exc:
        raise PapersError(f"cannot read the image: {exc}", file=str(pair.image)) from None
    try:
        mask_image = Image.open(pair.mask)
        mask_image.load()
    except OSError as exc:
        raise PapersError(f"cannot read the mask: {exc}", file=str(pair.mask)) from None
    if mask_image.size != image.size:
        raise PapersError(
            f"the mask is {mask_image.width}×{mask_image.height}, its image {image.width}×{image.height}",
            file=str(pair.mask),
        )
    if mask_image.mode == "P":
        mask = np.asarray(mask_image, dtype=np.uint8)
        _check_palette(mask_image.getpalette() or [], mask, pair.mask)
    elif mask_image.mode == "L":
        mask = np.asarray(mask_image, dtype=np.uint8)
    elif mask_image.mode in ("RGB", "RGBA"):
        colours = np.asarray(mask_image.convert("RGB"), dtype=np.int64)
        code = (colours[..., 0] << 16) | (colours[..., 1] << 8) | colours[..., 2]
        palette = np.asarray(voc_palette(), dtype=np.int64).reshape(-1, 3)
        known = {
            int((r << 16) | (g << 8) | b): i for i, (r, g, b) in enumerate(palette[: max(num_classes, 1)])
        }
        known[(224 << 16) | (224 << 8) | 192] = IGNORE  # VOC's boundary colour, label 255
        unknown = sorted(set(np.unique(code).tolist()) - set(known))
        if unknown:
            c = unknown[0]
            raise PapersError(
                f"colour ({c >> 16}, {(c >> 8) & 255}, {c & 255}) is not in VOC's palette of "
                f"{num_classes} classes",
                file=str(pair.mask),
            )
        mask = np.vectorize(known.__getitem__, otypes=[np.uint8])(code)
    else:
        raise PapersError(
            f"a mask is a palette, greyscale or RGB PNG, not mode {mask_image.mode}", file=str(pair.mask)
        )
    labels = np.unique(mask)
    outside = [int(v) for v in labels if v >= num_classes and v != IGNORE]
    if outside:
        raise PapersError(
            f"label {outside[0]} is outside the {num_classes} classes (0..{num_classes - 1}) "
            f"and not {IGNORE}",
            file=str(pair.mask),
        )
    return image, mask


def _check_palette(palette: list[int], mask: np.ndarray, file: Path) -> None:
    """A palette mask's indices are its labels: each index it uses must show VOC's colour for that
    label (or the grey of its own value, a greyscale palette's), else the file means other labels."""
    import numpy as np

    from papers.segment import voc_palette

    voc = voc_palette()
    for index in np.unique(mask).tolist():
        colour = tuple(palette[3 * index : 3 * index + 3])
        if len(colour) < 3:
            raise PapersError(f"index {index} has no colour in the mask's palette", file=str(file))
        if colour not in (tuple(voc[3 * index : 3 * index + 3]), (index, index, index)):
            raise PapersError(
                f"colour {colour} of index {index} is neither VOC's colour for label {index} nor grey",
                file=str(file),
            )
