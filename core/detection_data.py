"""Detection data: PASCAL VOC and COCO folders (and ``builtin:shapes``) as images and box targets.

Each item is a float image (C, H, W) in [0, 1] and a target ``{boxes, labels, difficult}``: boxes as
(x1, y1, x2, y2) in pixels, float32; labels int64, 0 left for the background as torchvision's
detectors have it; ``difficult`` marks the objects VOC's evaluation ignores (COCO's crowd regions).
The class list is ``classes[label]``:

- VOC (``DIR`` holding ``VOCdevkit/VOC20XX``, ``VOCdevkit`` or ``VOC20XX`` itself; read with
  torchvision's ``VOCDetection``): ``background`` then VOC's 20 classes in VOC's order where every
  name is one of them, else the sorted names of every split's annotations. VOC's boxes are 1-based
  inclusive pixels; (xmin - 1, ymin - 1, xmax, ymax) covers exactly those pixels, so IoU computed on
  it equals VOC's devkit's (which adds one to widths).
- COCO (``DIR`` with ``annotations/instances_<split>.json`` or ``instances_<split>.json``, images in
  ``DIR/<split>``, ``DIR/images/<split>``, ``DIR/images`` or ``DIR``; read with torchvision's
  ``CocoDetection`` and pycocotools): labels are the category ids, as torchvision's COCO models
  take them, so ``classes`` has ``max id + 1`` entries with ``N/A`` for ids no category has. Boxes
  are clipped to the image and empty ones dropped, as torchvision's reference scripts do (COCO
  itself has a few).
- ``builtin:shapes``: :mod:`papers.shapes` written in VOC's layout, read as VOC.

Every annotation of the split is read and checked before anything is evaluated; a problem is one
line naming the file and the field (a box outside the image or with xmin > xmax, an empty
annotation file, a category the COCO file does not define). An image that does not decode, or
whose size differs from its annotation, is named when it is read.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from papers.data import DataError

if TYPE_CHECKING:
    import torch

BACKGROUND = "background"
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip
"""PASCAL VOC's 20 object classes, in VOC's order (labels 1 to 20)."""
VOC_SPLITS = ("train", "val", "trainval", "test")


@dataclass
class DetectionSet:
    """One split of a detection source: a dataset of (image, target) and the class names by label."""

    source: str
    split: str
    dataset: Any
    classes: list[str]
    coco: Any = None
    """For COCO data, pycocotools' ground truth (areas and crowd flags as the file has them; a missing
    area is the box's, a missing crowd flag 0)."""

    @property
    def num_classes(self) -> int:
        """The classes a detector of this data predicts, the background included (torchvision's)."""
        return len(self.classes)

    @property
    def object_classes(self) -> list[str]:
        """The classes objects can have: neither the background nor an unused COCO id."""
        return [name for name in self.classes[1:] if name != "N/A"]


def is_detection_source(source: str) -> bool:
    """Whether ``source`` is detection data (``builtin:shapes``, a VOC folder or a COCO folder)."""
    from papers.shapes import is_source

    if is_source(source):
        return True
    if source.startswith("builtin:"):
        return False
    return _voc_root(Path(source)) is not None or bool(_coco_files(Path(source)))


def detection_split(source: str, split: str | None = None) -> DetectionSet:
    """The ``split`` of ``source`` (default: VOC's ``test`` where it has one, else ``val``; COCO's
    ``val``), every annotation read and checked."""
    from papers.shapes import is_source, source_root

    if is_source(source):
        return _voc_split(source_root(source), split or "test", source)
    path = Path(source)
    if not path.is_dir():
        raise DataError("no such data folder", file=source)
    if _voc_root(path) is not None:
        return _voc_split(path, split, source)
    if _coco_files(path):
        return _coco_split(path, split, source)
    raise DataError(
        "not detection data: expected a PASCAL VOC folder (VOCdevkit/VOC20XX/Annotations) or a COCO "
        "folder (annotations/instances_<split>.json)",
        file=source,
    )


# --- PASCAL VOC -----------------------------------------------------------------------------


def _voc_root(path: Path) -> tuple[Path, str] | None:
    """(root, year) such that ``root/VOCdevkit/VOC<year>`` is ``path``'s VOC folder, as torchvision's
    ``VOCDetection`` finds it."""
    candidates = [
        *sorted(path.glob("VOCdevkit/VOC20[01][0-9]")),
        *sorted(path.glob("VOC20[01][0-9]")),
        *([path] if path.name.startswith("VOC20") else []),
    ]
    for voc in candidates:
        if voc.parent.name == "VOCdevkit" and (voc / "Annotations").is_dir():
            return voc.parent.parent, voc.name.removeprefix("VOC")
    return None


def _voc_split(path: Path, split: str | None, source: str) -> DetectionSet:
    from torchvision.datasets import VOCDetection

    found = _voc_root(path)
    if found is None:
        raise DataError("no VOCdevkit/VOC20XX/Annotations folder", file=source)
    root, year = found
    voc = root / "VOCdevkit" / f"VOC{year}"
    lists = voc / "ImageSets" / "Main"
    if split is None:
        split = "test" if (lists / "test.txt").is_file() else "val"
    allowed = [*VOC_SPLITS] if year == "2007" else [s for s in VOC_SPLITS if s != "test"]
    if split not in allowed:
        raise DataError(f"VOC {year} has the splits {', '.join(allowed)}, not {split!r}", field="split")
    if not (lists / f"{split}.txt").is_file():
        raise DataError(f"no split file for {split!r}", file=str(lists / f"{split}.txt"))
    try:
        listing = VOCDetection(str(root), year=year, image_set=split, download=False)
    except (OSError, RuntimeError, ValueError) as exc:
        raise DataError(f"cannot read the VOC folder: {exc}", file=str(voc)) from None
    if not listing.images:
        raise DataError("the split file lists no image", file=str(lists / f"{split}.txt"))
    records = [_read_voc(Path(file)) for file in listing.annotations]
    names = {obj[0] for record in records for obj in record.objects}
    if names <= set(VOC_CLASSES):
        classes = [BACKGROUND, *VOC_CLASSES]
    else:
        for other in VOC_SPLITS:  # the class list is the same whichever split is read
            if other != split and (lists / f"{other}.txt").is_file():
                ids = (lists / f"{other}.txt").read_text().split()
                names |= {obj[0] for i in ids for obj in _read_voc(voc / "Annotations" / f"{i}.xml").objects}
        classes = [BACKGROUND, *sorted(names)]
    dataset = _Boxes(
        [
            (image, record.size, [(classes.index(n), box, hard) for n, box, hard in record.objects])
            for image, record in zip(listing.images, records, strict=True)
        ]
    )
    return DetectionSet(source, split, dataset, classes)


@dataclass
class _VOCRecord:
    size: tuple[int, int]  # width, height
    objects: list[tuple[str, tuple[float, float, float, float], bool]]


def _read_voc(file: Path) -> _VOCRecord:
    """One annotation file, checked: its size, and each object's name and box inside the image."""
    import xml.etree.ElementTree as ET

    from torchvision.datasets import VOCDetection

    where = str(file)
    try:
        text = file.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read the annotation: {exc.strerror or exc}", file=where) from None
    if not text.strip():
        raise DataError("empty annotation file", file=where)
    try:
        tree = VOCDetection.parse_voc_xml(ET.fromstring(text))
    except ET.ParseError as exc:
        raise DataError(f"not valid XML: {exc}", file=where) from None
    annotation = tree.get("annotation")
    if not isinstance(annotation, dict):
        raise DataError("no <annotation> element", file=where)
    size = annotation.get("size")
    width = _number(size, "width", where, "size.width")
    height = _number(size, "height", where, "size.height")
    if width <= 0 or height <= 0:
        raise DataError(f"the image size {width:g}×{height:g} is empty", file=where, field="size")
    found = annotation.get("object", [])
    objects = []
    for index, obj in enumerate(found if isinstance(found, list) else [found]):
        field = f"object[{index}]"
        name = obj.get("name") if isinstance(obj, dict) else None
        if not isinstance(name, str) or not name.strip():
            raise DataError("missing", file=where, field=f"{field}.name")
        box = obj.get("bndbox")
        xmin, ymin, xmax, ymax = (
            _number(box, key, where, f"{field}.bndbox.{key}") for key in ("xmin", "ymin", "xmax", "ymax")
        )
        for low, high, key, side in ((xmin, xmax, "x", width), (ymin, ymax, "y", height)):
            if low > high:
                raise DataError(
                    f"{key}min {low:g} is greater than {key}max {high:g}", file=where, field=f"{field}.bndbox"
                )
            if low < 0 or high > side:
                edge = f"{key}min" if low < 0 else f"{key}max"
                extent = "width" if key == "x" else "height"
                raise DataError(
                    f"{edge} {low if low < 0 else high:g} lies outside the image ({extent} {side:g})",
                    file=where,
                    field=f"{field}.bndbox.{edge}",
                )
        difficult = str(obj.get("difficult", "0")).strip() == "1"
        objects.append((name.strip(), (max(xmin - 1, 0.0), max(ymin - 1, 0.0), xmax, ymax), difficult))
    return _VOCRecord((int(width), int(height)), objects)


def _number(parent: Any, key: str, file: str, field: str) -> float:
    value = parent.get(key) if isinstance(parent, dict) else None
    if value is None:
        raise DataError("missing", file=file, field=field)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataError(f"{value!r} is not a number", file=file, field=field) from None


# --- COCO -----------------------------------------------------------------------------------


def _coco_files(path: Path) -> list[Path]:
    return sorted([*path.glob("annotations/instances_*.json"), *path.glob("instances_*.json")])


def _coco_split(path: Path, split: str | None, source: str) -> DetectionSet:
    files = _coco_files(path)
    by_split = {file.stem.removeprefix("instances_"): file for file in files}
    if split is None:
        chosen = [s for s in by_split if s.startswith("val")] or list(by_split)
        split_name = chosen[0]
    else:
        matches = [s for s in by_split if s == split or s.startswith(split)]
        if not matches:
            raise DataError(f"no instances_{split}*.json (found: {', '.join(by_split)})", file=source)
        split_name = matches[0]
    annotation_file = by_split[split_name]
    document = _check_coco(annotation_file)
    images = next(
        (
            folder
            for folder in (path / split_name, path / "images" / split_name, path / "images", path)
            if folder.is_dir() and any(folder.iterdir())
        ),
        path,
    )
    from torchvision.datasets import CocoDetection

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        dataset = CocoDetection(str(images), str(annotation_file))
    categories = {int(c["id"]): str(c["name"]) for c in document["categories"]}
    classes = ["N/A"] * (max(categories, default=0) + 1)
    classes[0] = BACKGROUND
    for number, name in categories.items():
        classes[number] = name
    for ann in dataset.coco.anns.values():  # COCO's evaluation reads each object's area and crowd flag
        ann.setdefault("area", float(ann["bbox"][2]) * float(ann["bbox"][3]))
        ann.setdefault("iscrowd", 0)
    items = []
    for image_id in dataset.ids:
        info = dataset.coco.imgs[image_id]
        objects = []
        for ann in dataset.coco.imgToAnns.get(image_id, []):
            x, y, w, h = (float(v) for v in ann["bbox"])
            objects.append((int(ann["category_id"]), (x, y, x + w, y + h), bool(ann.get("iscrowd", 0))))
        size = (int(info["width"]), int(info["height"])) if "width" in info and "height" in info else None
        items.append((str(images / info["file_name"]), size, objects, int(image_id)))
    coco_split = split_name if split is None else split
    return DetectionSet(source, coco_split, _Boxes(items, clip=True), classes, coco=dataset.coco)


def _check_coco(file: Path) -> dict[str, Any]:
    """The COCO annotation file, checked: images, categories, and each annotation's image, category
    and box."""
    where = str(file)
    try:
        text = file.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read the annotations: {exc.strerror or exc}", file=where) from None
    if not text.strip():
        raise DataError("empty annotation file", file=where)
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise DataError(f"not valid JSON: {exc}", file=where) from None
    if not isinstance(document, dict):
        raise DataError("a COCO file is a JSON object", file=where)
    for key in ("images", "annotations", "categories"):
        if not isinstance(document.get(key), list):
            raise DataError("missing (a list)", file=where, field=key)
    categories: set[int] = set()
    for index, category in enumerate(document["categories"]):
        if not isinstance(category, dict) or not isinstance(category.get("id"), int) or category["id"] < 1:
            raise DataError(
                "a category has a positive integer id", file=where, field=f"categories[{index}].id"
            )
        if not isinstance(category.get("name"), str):
            raise DataError("missing", file=where, field=f"categories[{index}].name")
        categories.add(category["id"])
    images: set[Any] = set()
    for index, image in enumerate(document["images"]):
        for key in ("id", "file_name"):
            if not isinstance(image, dict) or key not in image:
                raise DataError("missing", file=where, field=f"images[{index}].{key}")
        images.add(image["id"])
    for index, ann in enumerate(document["annotations"]):
        field = f"annotations[{index}]"
        if not isinstance(ann, dict):
            raise DataError("an annotation is an object", file=where, field=field)
        if "id" not in ann:
            raise DataError("missing", file=where, field=f"{field}.id")
        if ann.get("image_id") not in images:
            raise DataError(
                f"{ann.get('image_id')!r} is not an image's id", file=where, field=f"{field}.image_id"
            )
        if ann.get("category_id") not in categories:
            raise DataError(
                f"{ann.get('category_id')!r} is not one of the categories",
                file=where,
                field=f"{field}.category_id",
            )
        box = ann.get("bbox")
        if (
            not isinstance(box, list)
            or len(box) != 4
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in box)
        ):
            raise DataError("a box is [x, y, width, height]", file=where, field=f"{field}.bbox")
        if box[2] < 0 or box[3] < 0:
            raise DataError("a box's width and height are not negative", file=where, field=f"{field}.bbox")
    return document


# --- the dataset ----------------------------------------------------------------------------


class _Boxes:
    """Images read on demand with their checked targets: (path, (width, height) or None, objects[,
    image id]), each object (label, (x1, y1, x2, y2), difficult)."""

    def __init__(self, items: list[tuple], *, clip: bool = False):
        self.items, self.clip = items, clip

    def __len__(self) -> int:
        return len(self.items)

    def path(self, index: int) -> str:
        return self.items[index][0]

    def image_id(self, index: int) -> int:
        item = self.items[index]
        return item[3] if len(item) > 3 else index

    def target(self, index: int) -> dict[str, torch.Tensor]:
        """The target of item ``index``, without reading its image."""
        import torch

        _, size, objects = self.items[index][:3]
        boxes = torch.tensor([box for _, box, _ in objects], dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([label for label, _, _ in objects], dtype=torch.int64)
        difficult = torch.tensor([hard for _, _, hard in objects], dtype=torch.bool)
        if self.clip and size is not None:
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, size[0])
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, size[1])
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            boxes, labels, difficult = boxes[keep], labels[keep], difficult[keep]
        return {"boxes": boxes, "labels": labels, "difficult": difficult}

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        import numpy as np
        import torch

        from papers.data import load_image

        path, size, _ = self.items[index][:3]
        image = load_image(path)  # OSError naming the file
        if size is not None and (image.width, image.height) != tuple(size):
            raise OSError(
                f"{path}: the image is {image.width}×{image.height}, its annotation says {size[0]}×{size[1]}"
            )
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()
        return pixels, self.target(index)
