"""``builtin:shapes``: a synthetic detection and segmentation set, written as PASCAL VOC.

Each image (128–200 px a side by default, each side drawn on its own) holds one to four shapes of
four classes (circle, square, triangle, star), in colours that stand out from a textured, noisy
background: a smooth random field, faint stripes and Gaussian pixel noise. Shapes do not overlap,
so every box is exact: the tightest box around the shape's pixels, which are also its pixels in the
class mask. The set is written in the layout of PASCAL VOC 2007, so it is read by the same code as
VOC itself (torchvision's ``VOCDetection`` and ``VOCSegmentation``)::

    VOCdevkit/VOC2007/Annotations/000000.xml          boxes, 1-based inclusive pixels as VOC's
    VOCdevkit/VOC2007/JPEGImages/000000.jpg
    VOCdevkit/VOC2007/SegmentationClass/000000.png    class per pixel, VOC's palette, 0 background
    VOCdevkit/VOC2007/ImageSets/Main/{train,val,trainval,test}.txt
    VOCdevkit/VOC2007/ImageSets/Segmentation/{train,val,trainval,test}.txt

Images are split 60/20/20 into train, val and test. Generation is deterministic: image ``i`` is
drawn from its own random stream (the seed and ``i``), so the same seed gives the same bytes, and a
larger set begins with the images of a smaller one. The set is cached in a folder named by the
generator's version, the seed and the size parameters (``$PAPERS_CACHE_DIR/data``), written whole
beside it and renamed into place, so concurrent processes never see half of one.

``--data builtin:shapes`` names the default set (:data:`BUILTIN`: 300 images); other sets of the same
generator are named by the fields of :class:`ShapesConfig` that differ, as a query:
``builtin:shapes?images=3000`` (its first 300 images are the default set's, split anew),
``builtin:shapes?seed=1&max_objects=8``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from papers.errors import PapersError

if TYPE_CHECKING:
    import numpy as np

CLASSES = ("circle", "square", "triangle", "star")
"""The shape classes; label ``i + 1`` in the masks (0 is the background)."""
VERSION = 1
"""Bumped whenever the generator's output changes, so a cached set is never stale."""
YEAR = "2007"
SPLITS = {"train": 0.6, "val": 0.2, "test": 0.2}
MIN_CONTRAST = 90.0
"""The least Euclidean RGB distance between a shape's colour and the background's mean under it."""


@dataclass(frozen=True)
class ShapesConfig:
    """What a ``builtin:shapes`` set is generated from; each field is part of the cache folder's name."""

    seed: int = 0
    images: int = 300
    min_size: int = 128
    max_size: int = 200
    max_objects: int = 4

    def check(self) -> None:
        if self.images < 5:
            raise PapersError("builtin:shapes needs at least 5 images (one in each split)", field="images")
        if not 64 <= self.min_size <= self.max_size <= 4096:
            raise PapersError(
                "builtin:shapes image sides lie in 64 <= min_size <= max_size <= 4096", field="min_size"
            )
        if not 1 <= self.max_objects <= 16:
            raise PapersError("builtin:shapes holds 1 to 16 objects per image", field="max_objects")

    @property
    def folder_name(self) -> str:
        return (
            f"shapes-v{VERSION}-seed{self.seed}-n{self.images}-"
            f"{self.min_size}to{self.max_size}px-max{self.max_objects}"
        )


BUILTIN = ShapesConfig()
"""The set ``--data builtin:shapes`` names: seed 0, 300 images of 128 to 200 px a side."""


SOURCE = "builtin:shapes"


def is_source(source: str) -> bool:
    """Whether the data source ``source`` names a ``builtin:shapes`` set (with or without a query)."""
    return source == SOURCE or source.startswith(SOURCE + "?")


def source_config(source: str) -> ShapesConfig | None:
    """The set ``source`` names: ``None`` for plain ``builtin:shapes`` (:data:`BUILTIN`), else
    :data:`BUILTIN` with the query's fields, each checked (``images=3000&seed=1``)."""
    if source == SOURCE:
        return None
    fields = [field.name for field in dataclasses.fields(ShapesConfig)]
    values: dict[str, int] = {}
    for part in source[len(SOURCE) + 1 :].split("&"):
        key, _, value = part.partition("=")
        if key not in fields:
            raise PapersError(f"{SOURCE} takes {', '.join(fields)}; not {key!r}", field="--data")
        if key in values:
            raise PapersError(f"{SOURCE} names {key} twice", field="--data")
        if not value.isdigit():
            raise PapersError(f"{SOURCE}'s {key} is a whole number, not {value!r}", field="--data")
        values[key] = int(value)
    config = dataclasses.replace(BUILTIN, **values)
    try:
        config.check()
    except PapersError as error:
        raise PapersError(error.message, field="--data") from None
    return config


def split_sizes(source: str) -> dict[str, int]:
    """How many images each split of the set ``source`` names holds, without generating it."""
    config = source_config(source) or BUILTIN
    train, val = round(config.images * SPLITS["train"]), round(config.images * SPLITS["val"])
    return {"train": train, "val": val, "test": config.images - train - val}


def source_root(source: str) -> Path:
    """The folder holding ``VOCdevkit/VOC2007`` of the set the data source ``source`` names."""
    return shapes_root(source_config(source))


def shapes_root(config: ShapesConfig | None = None) -> Path:
    """The folder holding ``VOCdevkit/VOC2007`` of the set ``config`` describes (default:
    :data:`BUILTIN`'s), generated on first use."""
    from papers.files import cache_dir

    config = config or BUILTIN
    config.check()
    base = cache_dir()
    folder = (base / "data" if base is not None else Path(tempfile.gettempdir()) / "papers-data") / (
        config.folder_name
    )
    if (folder / "VOCdevkit" / f"VOC{YEAR}").is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        write(temporary, config)
        try:
            os.rename(temporary, folder)
        except OSError:  # another process placed the same set first: theirs is identical
            if not (folder / "VOCdevkit" / f"VOC{YEAR}").is_dir():
                raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return folder


def write(root: str | Path, config: ShapesConfig | None = None) -> Path:
    """Write the set under ``root`` (``root/VOCdevkit/VOC2007``) and return that VOC folder."""
    import numpy as np
    from PIL import Image

    from papers.segment import voc_palette

    config = config or ShapesConfig()
    config.check()
    voc = Path(root) / "VOCdevkit" / f"VOC{YEAR}"
    folders = {
        name: voc / name
        for name in (
            "Annotations",
            "JPEGImages",
            "SegmentationClass",
            "ImageSets/Main",
            "ImageSets/Segmentation",
        )
    }
    for path in folders.values():
        path.mkdir(parents=True, exist_ok=True)
    palette = voc_palette()
    ids = [f"{index:06d}" for index in range(config.images)]
    for index, name in enumerate(ids):
        image, mask, objects = draw_image(config, index)
        Image.fromarray(image).save(folders["JPEGImages"] / f"{name}.jpg", quality=92)
        label_map = Image.fromarray(mask)
        label_map.putpalette(palette)  # an "L" image becomes "P" with its values as the indices
        label_map.save(folders["SegmentationClass"] / f"{name}.png")
        (folders["Annotations"] / f"{name}.xml").write_bytes(
            _annotation(name, image.shape[1], image.shape[0], objects)
        )
    order = np.random.default_rng([config.seed, config.images, 1]).permutation(config.images)
    train_end = round(config.images * SPLITS["train"])
    val_end = train_end + round(config.images * SPLITS["val"])
    splits = {
        "train": sorted(order[:train_end]),
        "val": sorted(order[train_end:val_end]),
        "test": sorted(order[val_end:]),
    }
    splits["trainval"] = sorted([*splits["train"], *splits["val"]])
    for split, members in splits.items():
        text = "".join(f"{ids[i]}\n" for i in members)
        for kind in ("Main", "Segmentation"):
            (voc / "ImageSets" / kind / f"{split}.txt").write_text(text)
    return voc


@dataclass(frozen=True)
class Shape:
    """One object: its class name and its box in VOC's 1-based inclusive pixels."""

    name: str
    xmin: int
    ymin: int
    xmax: int
    ymax: int


def draw_image(config: ShapesConfig, index: int) -> tuple[np.ndarray, np.ndarray, list[Shape]]:
    """Image ``index`` of the set: RGB pixels (H, W, 3), its class mask (H, W) and its objects."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng([config.seed, index])
    width, height = (int(v) for v in rng.integers(config.min_size, config.max_size + 1, size=2))
    pixels = _background(rng, height, width)
    mask = np.zeros((height, width), dtype=np.uint8)
    count = int(rng.integers(1, config.max_objects + 1))
    largest = max(16, min(72, min(width, height) // 2))
    placed: list[tuple[int, int, int, int]] = []
    objects: list[Shape] = []
    for _ in range(count * 20):
        if len(objects) == count:
            break
        side = int(rng.integers(16, largest + 1))
        x0 = int(rng.integers(0, width - side + 1))
        y0 = int(rng.integers(0, height - side + 1))
        if any(
            x0 < bx1 + 3 and bx0 < x0 + side + 3 and y0 < by1 + 3 and by0 < y0 + side + 3
            for bx0, by0, bx1, by1 in placed
        ):
            continue
        label = int(rng.integers(len(CLASSES)))
        shape = Image.new("L", (width, height), 0)
        _draw(ImageDraw.Draw(shape), CLASSES[label], x0, y0, side, rng)
        inside = np.asarray(shape) > 0
        if not inside.any():
            continue
        placed.append((x0, y0, x0 + side, y0 + side))
        colour = _colour(rng, pixels[inside].mean(0))
        pixels[inside] = colour
        mask[inside] = label + 1
        rows, cols = np.flatnonzero(inside.any(1)), np.flatnonzero(inside.any(0))
        objects.append(
            Shape(CLASSES[label], int(cols[0]) + 1, int(rows[0]) + 1, int(cols[-1]) + 1, int(rows[-1]) + 1)
        )
    pixels += rng.normal(0.0, 6.0, size=pixels.shape)
    return np.clip(pixels, 0, 255).round().astype(np.uint8), mask, objects


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth random colour field (a coarse grid of colours, upsampled) with faint stripes."""
    import numpy as np
    from PIL import Image

    coarse = rng.uniform(40, 215, size=(4, 4, 3)).astype(np.uint8)
    field = np.asarray(
        Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), dtype=np.float64
    )
    angle = rng.uniform(0, math.pi)
    period = rng.uniform(6, 24)
    ys, xs = np.mgrid[0:height, 0:width]
    stripes = np.sin((xs * math.cos(angle) + ys * math.sin(angle)) * 2 * math.pi / period)
    return field + rng.uniform(5, 20) * stripes[..., None]


def _colour(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    """A colour at least :data:`MIN_CONTRAST` from ``background`` (the farthest of a few tries)."""
    import numpy as np

    best, distance = None, -1.0
    for _ in range(16):
        candidate = rng.integers(0, 256, size=3).astype(np.float64)
        gap = float(np.linalg.norm(candidate - background))
        if gap > distance:
            best, distance = candidate, gap
        if gap >= MIN_CONTRAST:
            break
    assert best is not None
    return best


def _draw(draw: object, name: str, x0: int, y0: int, side: int, rng: np.random.Generator) -> None:
    """Draw shape ``name`` filled with 255 inside the square at (x0, y0) of ``side`` pixels."""
    centre_x, centre_y, radius = x0 + (side - 1) / 2, y0 + (side - 1) / 2, (side - 1) / 2
    turn = float(rng.uniform(0, 2 * math.pi))
    if name == "circle":
        draw.ellipse([x0, y0, x0 + side - 1, y0 + side - 1], fill=255)  # type: ignore[attr-defined]
    elif name == "square":
        inset = int(rng.integers(0, max(1, side // 6)))
        draw.rectangle([x0 + inset, y0 + inset, x0 + side - 1 - inset, y0 + side - 1 - inset], fill=255)  # type: ignore[attr-defined]
    elif name == "triangle":
        draw.polygon(_polygon(centre_x, centre_y, [radius] * 3, turn), fill=255)  # type: ignore[attr-defined]
    else:
        draw.polygon(_polygon(centre_x, centre_y, [radius, radius * 0.45] * 5, turn), fill=255)  # type: ignore[attr-defined]


def _polygon(x: float, y: float, radii: list[float], turn: float) -> list[tuple[float, float]]:
    step = 2 * math.pi / len(radii)
    return [
        (x + r * math.cos(turn + i * step), y + r * math.sin(turn + i * step)) for i, r in enumerate(radii)
    ]


def _annotation(name: str, width: int, height: int, objects: list[Shape]) -> bytes:
    """VOC's annotation XML for one image."""
    import xml.etree.ElementTree as ET

    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = f"VOC{YEAR}"
    ET.SubElement(root, "filename").text = f"{name}.jpg"
    ET.SubElement(ET.SubElement(root, "source"), "database").text = "papers builtin:shapes"
    size = ET.SubElement(root, "size")
    for key, value in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, key).text = str(value)
    ET.SubElement(root, "segmented").text = "1"
    for shape in objects:
        element = ET.SubElement(root, "object")
        ET.SubElement(element, "name").text = shape.name
        ET.SubElement(element, "pose").text = "Unspecified"
        ET.SubElement(element, "truncated").text = "0"
        ET.SubElement(element, "difficult").text = "0"
        box = ET.SubElement(element, "bndbox")
        for key in ("xmin", "ymin", "xmax", "ymax"):
            ET.SubElement(box, key).text = str(getattr(shape, key))
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8") + b"\n"
