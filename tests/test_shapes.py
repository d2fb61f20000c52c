"""``builtin:shapes``: deterministic synthetic scenes, written as PASCAL VOC and read by torchvision's
VOC datasets, with boxes that are exactly the bounds of each shape's pixels in the class mask."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from papers.errors import PapersError
from papers.shapes import CLASSES, ShapesConfig, shapes_root, write

SMALL = ShapesConfig(seed=3, images=12)


@pytest.fixture(scope="module")
def voc(tmp_path_factory) -> Path:
    return write(tmp_path_factory.mktemp("shapes"), SMALL)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_same_seed_writes_the_same_bytes_and_another_seed_other_images(voc, tmp_path):
    again = write(tmp_path / "again", SMALL)
    assert _files(again) == _files(voc)
    other = write(tmp_path / "other", ShapesConfig(seed=4, images=12))
    assert _files(other)["JPEGImages/000000.jpg"] != _files(voc)["JPEGImages/000000.jpg"]


def test_a_larger_set_begins_with_the_images_of_a_smaller_one(voc, tmp_path):
    larger = write(tmp_path / "larger", ShapesConfig(seed=3, images=20))
    for name in ("JPEGImages/000011.jpg", "Annotations/000011.xml", "SegmentationClass/000011.png"):
        assert (larger / name).read_bytes() == (voc / name).read_bytes()


def test_torchvisions_voc_datasets_read_every_split(voc):
    from torchvision.datasets import VOCDetection, VOCSegmentation

    root = voc.parent.parent
    seen = []
    for split in ("train", "val", "test"):
        detection = VOCDetection(str(root), year="2007", image_set=split, download=False)
        segmentation = VOCSegmentation(str(root), year="2007", image_set=split, download=False)
        assert len(detection) == len(segmentation) > 0
        image, target = detection[0]
        assert target["annotation"]["object"]
        image_again, mask = segmentation[0]
        assert mask.mode == "P" and mask.size == image.size == image_again.size
        seen += [Path(p).stem for p in detection.images]
    assert sorted(seen) == [f"{i:06d}" for i in range(12)]  # the splits are disjoint and cover the set
    trainval = VOCDetection(str(root), year="2007", image_set="trainval", download=False)
    assert len(trainval) == 12 - len(VOCDetection(str(root), year="2007", image_set="test").images)


def test_each_box_is_the_exact_bounds_of_its_shape_in_the_mask(voc):
    objects = 0
    for xml in sorted((voc / "Annotations").glob("*.xml")):
        mask = np.asarray(Image.open(voc / "SegmentationClass" / f"{xml.stem}.png"))
        covered = np.zeros(mask.shape, dtype=bool)
        root = ET.parse(xml).getroot()
        assert (int(root.findtext("size/width")), int(root.findtext("size/height"))) == mask.shape[::-1]
        for obj in root.iter("object"):
            label = CLASSES.index(obj.findtext("name")) + 1
            x1, y1, x2, y2 = (int(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax"))
            inside = mask[y1 - 1 : y2, x1 - 1 : x2]  # VOC's boxes are 1-based and inclusive
            assert (inside == label).any(0).all() and (inside == label).any(1).all()  # tight on every side
            covered[y1 - 1 : y2, x1 - 1 : x2] |= inside == label
            objects += 1
        assert not (mask.astype(bool) & ~covered).any()  # no labelled pixel outside its object's box
    assert objects > 12  # several objects per image


def test_images_have_different_sizes_within_the_bounds(voc):
    sizes = {Image.open(p).size for p in (voc / "JPEGImages").glob("*.jpg")}
    assert len(sizes) > 6
    assert all(128 <= side <= 200 for size in sizes for side in size)


def test_the_set_is_cached_in_a_folder_named_by_its_parameters(monkeypatch, tmp_path):
    monkeypatch.setenv("PAPERS_CACHE_DIR", str(tmp_path))
    first = shapes_root(SMALL)
    assert first == tmp_path / "data" / SMALL.folder_name and "seed3-n12" in first.name
    stamp = (first / "VOCdevkit/VOC2007/JPEGImages/000000.jpg").stat().st_mtime_ns
    assert shapes_root(SMALL) == first
    assert (first / "VOCdevkit/VOC2007/JPEGImages/000000.jpg").stat().st_mtime_ns == stamp  # not rewritten
    assert shapes_root(ShapesConfig(seed=5, images=12)) != first
    assert not [p for p in (tmp_path / "data").iterdir() if ".tmp-" in p.name]


def test_impossible_parameters_are_refused():
    with pytest.raises(PapersError, match="at least 5 images"):
        write("unused", ShapesConfig(images=2))
    with pytest.raises(PapersError, match="min_size"):
        write("unused", ShapesConfig(min_size=300, max_size=200))


def test_a_query_names_another_set_of_the_generator(monkeypatch, tmp_path):
    from papers.shapes import source_config, source_root

    monkeypatch.setenv("PAPERS_CACHE_DIR", str(tmp_path))
    assert source_config("builtin:shapes") is None  # the default set
    config = source_config("builtin:shapes?images=12&seed=3")
    assert config == SMALL
    assert source_root("builtin:shapes?seed=3&images=12") == shapes_root(SMALL)


def test_split_sizes_are_those_the_generator_writes(voc):
    from papers.shapes import split_sizes

    written = {
        split: len((voc / "ImageSets" / "Main" / f"{split}.txt").read_text().split())
        for split in ("train", "val", "test")
    }
    assert split_sizes("builtin:shapes?seed=3&images=12") == written
    assert split_sizes("builtin:shapes") == {"train": 180, "val": 60, "test": 60}


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("builtin:shapes?image=12", "not 'image'"),
        ("builtin:shapes?images=many", "whole number"),
        ("builtin:shapes?images=12&images=13", "names images twice"),
        ("builtin:shapes?images=2", "at least 5 images"),
        ("builtin:shapes?min_size=10", "64 <= min_size"),
    ],
)
def test_a_bad_query_is_refused_naming_the_data_option(source, message):
    from papers.shapes import source_config

    with pytest.raises(PapersError, match=message) as refused:
        source_config(source)
    assert refused.value.field == "--data"
