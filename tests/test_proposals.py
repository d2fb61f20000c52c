"""Region proposals (papers.proposals): selective search through OpenCV contrib finds a drawn object,
proposals files are read and every bad one is refused naming the file and the field."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest

from papers.errors import PapersError
from papers.proposals import ProposalsError, image_proposals, load_proposals, selective_search

OBJECT = (30, 20, 90, 60)
"""The rectangle drawn on the synthetic image, (x1, y1, x2, y2) in pixel edges."""


def _iou(boxes: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x1 = np.maximum(boxes[:, 0], box[0])
    y1 = np.maximum(boxes[:, 1], box[1])
    x2 = np.minimum(boxes[:, 2], box[2])
    y2 = np.minimum(boxes[:, 3], box[3])
    overlap = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return overlap / (area + (box[2] - box[0]) * (box[3] - box[1]) - overlap)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """A noisy grey 96 × 128 image with one red rectangle."""
    pixels = np.random.default_rng(0).integers(90, 140, size=(96, 128, 3)).astype(np.uint8)
    pixels[OBJECT[1] : OBJECT[3], OBJECT[0] : OBJECT[2]] = (220, 30, 30)
    return pixels


@pytest.mark.parametrize("mode", ["fast", "quality"])
def test_selective_search_gives_boxes_inside_the_image_one_of_them_on_the_drawn_object(image, mode):
    boxes = selective_search(image, mode=mode)
    assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4 and len(boxes) > 0
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 128).all() and (boxes[:, 3] <= 96).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert _iou(boxes, OBJECT).max() >= 0.5


def test_selective_search_takes_a_tensor_and_keeps_at_most_max_proposals(image):
    import torch

    tensor = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    # the same boxes; OpenCV's ranking is random (unseedable), so compare them in a fixed order
    assert sorted(map(tuple, selective_search(tensor).tolist())) == sorted(
        map(tuple, selective_search(image).tolist())
    )
    assert len(selective_search(image, max_proposals=3)) == 3
    with pytest.raises(ValueError, match="'fast' or 'quality'"):
        selective_search(image, mode="slow")


def test_without_opencv_contrib_selective_search_says_what_to_install(image, monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", types.ModuleType("cv2"))  # OpenCV without ximgproc
    with pytest.raises(PapersError, match="opencv-contrib-python-headless") as error:
        selective_search(image)
    assert "\n" not in str(error.value)


def test_a_json_and_an_npz_proposals_file_give_the_same_boxes(tmp_path):
    boxes = {"a.jpg": [[0, 0, 10, 20], [5.5, 6, 7, 8]], "b.png": []}
    written = tmp_path / "proposals.json"
    written.write_text(json.dumps(boxes))
    archive = tmp_path / "proposals.npz"
    np.savez(archive, **{name: np.asarray(b, dtype=np.float32).reshape(-1, 4) for name, b in boxes.items()})
    for table in (load_proposals(written), load_proposals(archive)):
        assert set(table) == {"a.jpg", "b.png"}
        np.testing.assert_array_equal(table["a.jpg"], np.float32([[0, 0, 10, 20], [5.5, 6, 7, 8]]))
        assert table["b.png"].shape == (0, 4)


def test_an_images_proposals_are_found_by_file_name_and_clipped_to_it(image, tmp_path):
    file = tmp_path / "proposals.json"
    file.write_text(json.dumps({"scene.jpg": [[-5, 10, 40, 50], [120, 90, 140, 120], [200, 0, 210, 5]]}))
    table = load_proposals(file)
    boxes = image_proposals(image, "/photos/scene.jpg", table=table, file=str(file))
    # the first box is clipped at x = 0, the second at the image's 128 × 96 corner, the third is outside
    np.testing.assert_array_equal(boxes, np.float32([[0, 10, 40, 50], [120, 90, 128, 96]]))
    with pytest.raises(ProposalsError) as error:
        image_proposals(image, "other.jpg", table=table, file=str(file))
    assert error.value.file == str(file) and error.value.field == "other.jpg"
    assert "no proposals for the image" in str(error.value)


@pytest.mark.parametrize(
    ("content", "field", "message"),
    [
        ({"a.jpg": [[0, 0, 10, 10], [8, 0, 4, 10]]}, "a.jpg[1]", "x2 > x1"),
        ({"a.jpg": [[0, 0, 10, 10, 3]]}, "a.jpg", r"shape \[1, 5\]"),
        ({"a.jpg": [[0, 0, "ten", 10]]}, "a.jpg", "numbers"),
        ({"a.jpg": [[0, 0, 10, 10]], "b.jpg": [[0, 9, 1, 2]]}, "b.jpg[0]", "y2 > y1"),
    ],
)
def test_a_box_that_is_no_box_is_refused_naming_the_file_and_the_box(tmp_path, content, field, message):
    file = tmp_path / "proposals.json"
    file.write_text(json.dumps(content))
    with pytest.raises(ProposalsError, match=message) as error:
        load_proposals(file)
    assert (error.value.file, error.value.field) == (str(file), field)
    assert str(error.value).startswith(f"{file}: {field}: ") and "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json", "not JSON"), ("[[0, 0, 1, 1]]", "maps each image file name")],
)
def test_a_file_that_is_not_a_proposals_table_is_refused_in_one_line(tmp_path, content, message):
    file = tmp_path / "proposals.json"
    file.write_text(content)
    with pytest.raises(ProposalsError, match=message) as error:
        load_proposals(file)
    assert error.value.file == str(file) and "\n" not in str(error.value)
    with pytest.raises(ProposalsError, match="cannot read"):
        load_proposals(tmp_path / "missing.json")


def test_fast_rcnn_takes_its_proposals_through_the_same_interface_in_papers_detect(image, run, tmp_path):
    from PIL import Image

    picture = tmp_path / "scene.png"
    Image.fromarray(image).save(picture)
    file = tmp_path / "proposals.json"
    file.write_text(json.dumps({"scene.png": [list(OBJECT), [0, 0, 40, 40]]}))
    tiny = ["-o", "min_size=64", "-o", "max_size=128", "-o", "hidden=32", "-o", "pooled=2"]
    args = ["detect", "fast_rcnn_vgg16", str(picture), "--proposals", str(file), "--json", *tiny]
    result = run(*args, "-o", "box_score_thresh=0")
    assert result.exit_code == 0, result.stderr
    (found,) = json.loads(result.stdout)
    # every detection is one of the two proposals, moved a little by the initialised box regression
    given = np.float32([OBJECT, [0, 0, 40, 40]])
    assert found["boxes"]
    for box in found["boxes"]:
        assert np.abs(given - np.float32(box)).max(axis=1).min() < 2.0
    refused = run("detect", "fasterrcnn_resnet50_fpn", str(picture), "--proposals", str(file))
    assert refused.exit_code == 2 and "makes its own proposals" in refused.stderr
