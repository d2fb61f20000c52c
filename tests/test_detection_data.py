"""Detection data: VOC and COCO folders read through torchvision's datasets into images and box
targets, and every kind of bad annotation refused in one line naming the file and the field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from papers.data import DataError, load_image
from papers.detection_data import BACKGROUND, VOC_CLASSES, detection_split, is_detection_source
from papers.shapes import CLASSES, ShapesConfig, write

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def _shapes(tmp_path_factory) -> Path:
    return write(tmp_path_factory.mktemp("shapes"), ShapesConfig(seed=1, images=10)).parent.parent


@pytest.fixture
def voc_root(_shapes, tmp_path) -> Path:
    """A writable copy of a small builtin:shapes set: ``root/VOCdevkit/VOC2007``."""
    return Path(shutil.copytree(_shapes, tmp_path / "voc"))


def _annotation(root: Path, split: str = "test") -> Path:
    voc = root / "VOCdevkit" / "VOC2007"
    first = (voc / "ImageSets" / "Main" / f"{split}.txt").read_text().split()[0]
    return voc / "Annotations" / f"{first}.xml"


def test_a_voc_folder_gives_float_images_and_box_targets(voc_root):
    data = detection_split(str(voc_root), "train")
    assert data.split == "train" and data.classes == [BACKGROUND, *sorted(CLASSES)]
    image, target = data.dataset[0]
    assert image.dtype == torch.float32 and image.shape[0] == 3 and image.min() >= 0 and image.max() <= 1
    assert target["boxes"].dtype == torch.float32 and target["boxes"].shape[1] == 4
    assert target["labels"].dtype == torch.int64 and (target["labels"] >= 1).all()
    # VOC's 1-based inclusive box (xmin, ...) is (xmin - 1, ymin - 1, xmax, ymax) in continuous pixels
    import xml.etree.ElementTree as ET

    first = ET.parse(_annotation(voc_root, "train")).find("object/bndbox")
    xmin, ymin, xmax, ymax = (float(first.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
    assert target["boxes"][0].tolist() == [xmin - 1, ymin - 1, xmax, ymax]


def test_the_class_list_is_the_same_whichever_split_is_read(voc_root):
    assert detection_split(str(voc_root), "test").classes == detection_split(str(voc_root), "train").classes


def test_the_voc_folder_may_be_named_at_any_of_its_levels(voc_root):
    for path in (voc_root, voc_root / "VOCdevkit", voc_root / "VOCdevkit" / "VOC2007"):
        assert is_detection_source(str(path))
        assert detection_split(str(path)).split == "test"  # VOC 2007's test split, where there is one


def test_voc_class_names_take_vocs_order(voc_root):
    for xml in (voc_root / "VOCdevkit/VOC2007/Annotations").glob("*.xml"):
        text = xml.read_text()
        for shape, name in zip(CLASSES, ("dog", "aeroplane", "person", "cat"), strict=True):
            text = text.replace(f"<name>{shape}</name>", f"<name>{name}</name>")
        xml.write_text(text)
    assert detection_split(str(voc_root)).classes == [BACKGROUND, *VOC_CLASSES]


@pytest.mark.parametrize(
    ("edit", "field", "message"),
    [
        (("<xmax>", "<xmax>9999"), "object[0].bndbox.xmax", "outside the image"),
        (("<xmin>", "<xmin>-5"), "object[0].bndbox.xmin", "outside the image"),
        (("<ymin>", "<ymin>9999"), "object[0].bndbox", "ymin 9999"),
        (("<xmin>", "<xmin>x"), "object[0].bndbox.xmin", "is not a number"),
        (("<width>", "<width>x"), "size.width", "is not a number"),
        (("<name>", "<label>", "</name>", "</label>"), "object[0].name", "missing"),
    ],
)
def test_a_bad_voc_annotation_is_named_with_its_field(voc_root, edit, field, message):
    xml = _annotation(voc_root)
    text = xml.read_text()
    for old, new in zip(edit[::2], edit[1::2], strict=True):
        text = text.replace(old, new, 1)
    xml.write_text(text)
    with pytest.raises(DataError, match=message) as caught:
        detection_split(str(voc_root), "test")
    assert caught.value.file == str(xml) and caught.value.field == field
    assert "\n" not in str(caught.value)


def test_xmin_greater_than_xmax_is_refused(voc_root):
    import re

    xml = _annotation(voc_root)
    text = xml.read_text()
    xmax = re.search(r"<xmax>(\d+)</xmax>", text).group(1)
    xml.write_text(re.sub(r"<xmin>\d+</xmin>", f"<xmin>{int(xmax) + 1}</xmin>", text, count=1))
    with pytest.raises(DataError, match=rf"xmin {int(xmax) + 1} is greater than xmax {xmax}") as caught:
        detection_split(str(voc_root), "test")
    assert caught.value.field == "object[0].bndbox"


def test_an_empty_annotation_file_is_refused(voc_root):
    xml = _annotation(voc_root)
    xml.write_text("")
    with pytest.raises(DataError, match="empty annotation file") as caught:
        detection_split(str(voc_root), "test")
    assert caught.value.file == str(xml)
    xml.write_text("<annotation><size>")
    with pytest.raises(DataError, match="not valid XML"):
        detection_split(str(voc_root), "test")


def test_an_image_that_does_not_decode_is_named_when_it_is_read(voc_root):
    data = detection_split(str(voc_root), "test")
    broken = Path(data.dataset.path(0))
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(OSError, match=str(broken)):
        data.dataset[0]


def test_an_image_whose_size_differs_from_its_annotation_is_named(voc_root):
    data = detection_split(str(voc_root), "test")
    path = Path(data.dataset.path(0))
    load_image(str(path)).resize((64, 64)).save(path)
    with pytest.raises(OSError, match="its annotation says"):
        data.dataset[0]


def test_a_folder_that_is_no_detection_data_is_refused(tmp_path):
    assert not is_detection_source(str(tmp_path))
    with pytest.raises(DataError, match="not detection data"):
        detection_split(str(tmp_path))
    with pytest.raises(DataError, match="VOC 2007 has the splits"):
        detection_split(str(_voc_like(tmp_path)), "holdout")


def _voc_like(tmp_path: Path) -> Path:
    voc = tmp_path / "v" / "VOCdevkit" / "VOC2007"
    (voc / "Annotations").mkdir(parents=True)
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    return tmp_path / "v"


# --- COCO -------------------------------------------------------------------------------------


def _coco(tmp_path: Path, **changes) -> Path:
    """A COCO folder of two images, categories 1 and 3 (id 2 unused)."""
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "val2017").mkdir()
    for name, size in (("a.jpg", (80, 60)), ("b.jpg", (50, 70))):
        Image.new("RGB", size, (120, 30, 200)).save(root / "val2017" / name)
    document = {
        "images": [
            {"id": 7, "file_name": "a.jpg", "width": 80, "height": 60},
            {"id": 9, "file_name": "b.jpg", "width": 50, "height": 70},
        ],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 1, "bbox": [10, 5, 20, 30], "area": 600, "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 3, "bbox": [70, 50, 20, 20], "area": 400, "iscrowd": 0},
            {"id": 3, "image_id": 9, "category_id": 3, "bbox": [0, 0, 5, 5], "area": 25, "iscrowd": 1},
        ],
        "categories": [{"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}],
    }
    document.update(changes)
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(document))
    return root


def test_a_coco_folder_keeps_category_ids_as_labels(tmp_path):
    data = detection_split(str(_coco(tmp_path)))
    assert data.split == "val2017" and data.classes == [BACKGROUND, "cat", "N/A", "dog"]
    assert data.object_classes == ["cat", "dog"] and data.num_classes == 4
    image, target = data.dataset[0]
    assert image.shape == (3, 60, 80)
    assert target["labels"].tolist() == [1, 3]
    # [x, y, w, h] as (x1, y1, x2, y2), clipped to the image as torchvision's references do
    assert target["boxes"].tolist() == [[10, 5, 30, 35], [70, 50, 80, 60]]
    assert data.dataset[1][1]["difficult"].tolist() == [True]  # a crowd region
    assert data.dataset.image_id(1) == 9 and data.coco is not None


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        (
            {"annotations": [{"id": 1, "image_id": 7, "category_id": 2, "bbox": [0, 0, 1, 1]}]},
            "annotations[0].category_id",
            "2 is not one of the categories",
        ),
        ({"categories": None}, "categories", "missing"),
        (
            {"annotations": [{"id": 1, "image_id": 8, "category_id": 1, "bbox": [0, 0, 1, 1]}]},
            "annotations[0].image_id",
            "not an image's id",
        ),
        (
            {"annotations": [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [0, 0, 1]}]},
            "annotations[0].bbox",
            r"\[x, y, width, height\]",
        ),
    ],
)
def test_a_bad_coco_file_is_named_with_its_field(tmp_path, changes, field, message):
    root = _coco(tmp_path, **changes)
    with pytest.raises(DataError, match=message) as caught:
        detection_split(str(root))
    assert caught.value.file == str(root / "annotations" / "instances_val2017.json")
    assert caught.value.field == field


def test_an_empty_coco_file_is_refused(tmp_path):
    root = _coco(tmp_path)
    (root / "annotations" / "instances_val2017.json").write_text("")
    with pytest.raises(DataError, match="empty annotation file"):
        detection_split(str(root))
