"""``papers detect`` and ``papers eval`` of a detector, on a detector small enough for a test
(tests/specs/tiny_detector.yaml, torchvision's detection contract through the task layer)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

import papers
import papers.registry
from papers import hookspecs
from papers.detection_data import detection_split
from papers.plugins import PluginInfo, PluginManager
from papers.registry import Registry
from papers.shapes import ShapesConfig, write

SPEC = Path(__file__).parent / "specs" / "tiny_detector.yaml"
VARIANT = "tiny_detector_demo"
# What the fixture's copy of the spec reports: a VOC figure (so label names are VOC's when the model
# has 21 classes) and a builtin:shapes one for `papers check --results` to answer.
RESULTS = [
    {
        "variant": VARIANT,
        "metric": "voc07_map",
        "value": 50.0,
        "unit": "percent",
        "dataset": "PASCAL VOC 2007",
        "split": "test",
        "source": "test fixture",
    },
    {
        "variant": VARIANT,
        "metric": "voc07_map",
        "value": 50.0,
        "unit": "percent",
        "dataset": "builtin:shapes",
        "split": "test",
        "source": "test fixture",
        "tolerance": 100.0,
    },
]


@pytest.fixture(scope="module")
def _registry(tmp_path_factory) -> Registry:
    spec = yaml.safe_load(SPEC.read_text())
    spec["results"] = RESULTS
    file = tmp_path_factory.mktemp("spec") / "tiny_detector.yaml"
    file.write_text(yaml.safe_dump(spec, sort_keys=False))

    class _Spec:
        @hookspecs.hookimpl
        def papers_specs(self):
            return [file]

    manager = PluginManager()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PAPERS_PLUGINS", "")
        manager.load_entry_points()
    manager.register(_Spec(), PluginInfo("tiny_detector", "tests", "0", "tests"))
    return Registry(manager)


@pytest.fixture
def registry(_registry, monkeypatch, one_thread) -> Registry:
    monkeypatch.setattr(papers.registry, "_current", _registry)
    return _registry


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """A small builtin:shapes set (root of VOCdevkit)."""
    return write(tmp_path_factory.mktemp("shapes"), ShapesConfig(seed=2, images=10)).parent.parent


@pytest.fixture
def weights(registry, tmp_path) -> Path:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    path = tmp_path / "tiny.safetensors"
    save_file(papers.build_model(VARIANT).state_dict(), str(path))
    return path


def _images(shapes: Path, count: int = 2) -> list[str]:
    return [str(p) for p in sorted((shapes / "VOCdevkit/VOC2007/JPEGImages").glob("*.jpg"))[:count]]


def test_detect_prints_boxes_scores_and_labels_as_json(registry, run, shapes, weights):
    images = _images(shapes)
    result = run(
        "detect", VARIANT, *images, "--weights", str(weights), "--json", "-o", "detections_per_img=5"
    )
    assert result.exit_code == 0, result.stderr
    found = json.loads(result.stdout)
    assert [f["image"] for f in found] == images
    for item in found:
        assert set(item) == {"image", "boxes", "scores", "labels", "label_names"}
        assert 0 < len(item["boxes"]) <= 5
        assert all(len(box) == 4 and box[0] <= box[2] and box[1] <= box[3] for box in item["boxes"])
        assert item["scores"] == sorted(item["scores"], reverse=True)
        assert item["label_names"] == [f"class_{label}" for label in item["labels"]]  # no names known


def test_detect_out_writes_detections_json_and_each_image_with_its_boxes(registry, run, shapes, tmp_path):
    images = _images(shapes)
    out = tmp_path / "out"
    result = run("detect", VARIANT, *images, "--out", str(out), "-o", "detections_per_img=3")
    assert result.exit_code == 0, result.stderr
    written = json.loads((out / "detections.json").read_text())
    assert [w["image"] for w in written] == images
    for image in images:
        drawn = out / Path(image).name
        assert Image.open(drawn).size == Image.open(image).size
        assert drawn.read_bytes() != Path(image).read_bytes()  # the boxes are drawn on it


def test_label_names_come_from_the_dataset_the_variants_results_name(registry, run, shapes):
    result = run("detect", VARIANT, _images(shapes, 1)[0], "--json", "-o", "num_classes=21")
    assert result.exit_code == 0, result.stderr
    from papers.detection_data import BACKGROUND, VOC_CLASSES

    names = [BACKGROUND, *VOC_CLASSES]
    item = json.loads(result.stdout)[0]
    assert item["label_names"] == [names[label] for label in item["labels"]] and item["labels"]


def test_a_classifier_is_refused_by_detect(registry, run, shapes):
    result = run("detect", "alexnet", _images(shapes, 1)[0])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "papers: error: VARIANT: alexnet is not a detector (its graph has no `detection` section)"
    ]


def test_an_image_that_does_not_decode_is_refused_and_nothing_is_written(registry, run, shapes, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really")
    out = tmp_path / "out"
    result = run("detect", VARIANT, _images(shapes, 1)[0], str(broken), "--out", str(out))
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert str(broken) in result.stderr
    assert not out.exists()


def test_eval_on_builtin_shapes_writes_detection_metrics_that_check_answers(
    registry, run, weights, tmp_path, monkeypatch
):
    monkeypatch.setenv("PAPERS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr("papers.shapes.BUILTIN", ShapesConfig(images=10))  # 2 test images
    results = tmp_path / "results.json"
    result = run(
        "eval",
        VARIANT,
        "--weights",
        str(weights),
        "--data",
        "builtin:shapes",
        "--json",
        "--out",
        str(results),
    )
    assert result.exit_code == 0, result.stderr
    measured = json.loads(result.stdout)
    assert measured["split"] == "test" and measured["images"] == 2 and measured["classes"] == 4
    for name in ("voc07_map", "voc_map", "coco_ap", "ap50", "ap75"):
        assert 0 <= measured[name] <= 100
    rows = {row["metric"]: row for row in json.loads(results.read_text())["results"]}
    assert {"voc07_map", "voc_map", "coco_ap", "ap50", "ap75"} <= set(rows)
    assert all(row["dataset"] == "builtin:shapes" and row["split"] == "test" for row in rows.values())
    assert "ap_l" not in rows  # no large object in these images: COCO's AP_l is undefined, not written
    assert rows["voc07_map"]["value"] == round(measured["voc07_map"], 4)
    checks = papers.check("tiny-detector-demo", results=results)
    on_shapes = [c for c in checks if c.metric == "voc07_map" and c.dataset == "builtin:shapes"]
    assert len(on_shapes) == 1 and on_shapes[0].measured == rows["voc07_map"]["value"]
    assert on_shapes[0].status == "pass"
    on_voc = [c for c in checks if c.metric == "voc07_map" and c.dataset == "PASCAL VOC 2007"]
    assert on_voc[0].status == "not_measurable"  # a builtin:shapes figure never answers a VOC one


def test_eval_of_a_voc_folder_with_a_bad_box_stops_before_writing(registry, run, shapes, weights, tmp_path):
    root = Path(shutil.copytree(shapes, tmp_path / "voc"))
    voc = root / "VOCdevkit" / "VOC2007"
    first = (voc / "ImageSets/Main/test.txt").read_text().split()[0]
    xml = voc / "Annotations" / f"{first}.xml"
    xml.write_text(xml.read_text().replace("<xmax>", "<xmax>9999", 1))
    results = tmp_path / "results.json"
    result = run("eval", VARIANT, "--weights", str(weights), "--data", str(root), "--out", str(results))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(xml) in lines[0] and "object[0].bndbox.xmax" in lines[0]
    assert not results.exists()


def test_eval_refuses_a_model_built_for_other_classes_than_the_datas(
    registry, run, shapes, weights, tmp_path
):
    results = tmp_path / "results.json"
    result = run(
        "eval",
        VARIANT,
        "--weights",
        str(weights),
        "--data",
        str(shapes),
        "-o",
        "num_classes=3",
        "--out",
        str(results),
    )
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"papers: error: {shapes}: num_classes: the data has 5 classes with the background "
        "(circle, square, star, triangle); the model is built for 3"
    ]
    assert not results.exists()


def test_eval_names_the_class_count_when_weights_do_not_fit(registry, run, weights, tmp_path):
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "images").mkdir()
    Image.new("RGB", (64, 48)).save(root / "images" / "a.jpg")
    document = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 10]}],
        "categories": [{"id": 1, "name": "thing"}],
    }
    (root / "annotations" / "instances_val.json").write_text(json.dumps(document))
    result = run("eval", VARIANT, "--weights", str(weights), "--data", str(root))
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "shape mismatch" in result.stderr and "the data's 2 classes with the background" in result.stderr


def test_eval_of_a_coco_folder_scores_against_the_files_ground_truth(
    registry, run, shapes, weights, tmp_path
):
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    shutil.copytree(shapes / "VOCdevkit/VOC2007/JPEGImages", root / "val2017")
    images = sorted(p.name for p in (root / "val2017").iterdir())[:3]
    sizes = [Image.open(root / "val2017" / name).size for name in images]
    document = {
        "images": [
            {"id": 10 + i, "file_name": name, "width": w, "height": h}
            for i, (name, (w, h)) in enumerate(zip(images, sizes, strict=True))
        ],
        # categories 1, 2 and 4 (no 3): the model's 5 outputs are the ids 0 to 4; no `area` given
        "annotations": [
            {"id": i + 1, "image_id": 10 + i, "category_id": (1, 2, 4)[i], "bbox": [5, 6, 40, 30]}
            for i in range(3)
        ],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 4, "name": "d"}],
    }
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(document))
    result = run("eval", VARIANT, "--weights", str(weights), "--data", str(root), "--json")
    assert result.exit_code == 0, result.stderr
    measured = json.loads(result.stdout)
    assert measured["split"] == "val2017" and measured["images"] == 3 and measured["classes"] == 3
    assert measured["ap_m"] is not None and measured["ap_s"] is None  # 1,200 px² objects only
    assert set(measured["per_class_voc07_ap"]) == {"a", "b", "d"}


def test_a_detector_trains_on_shapes_and_its_weights_evaluate(registry, run, shapes, tmp_path):
    out = tmp_path / "run"
    made = run("train", VARIANT, "--data", str(shapes), "--epochs", "2", "--out", str(out), "-r", "lr=0.005")
    assert made.exit_code == 0, made.stderr
    assert "VOC07 mAP" in made.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert all(math.isfinite(m["train_loss"]) and 0.0 <= m["val_voc07_map"] <= 100.0 for m in metrics)
    recipe = json.loads((out / "recipe.json").read_text())
    assert set(recipe["classes"][1:]) <= {"circle", "square", "triangle", "star"} and recipe["lr"] == 0.005
    scored = run(
        "eval", VARIANT, "--weights", str(out / "model.safetensors"), "--data", str(shapes), "--json"
    )
    assert scored.exit_code == 0, scored.stderr
    assert {"voc07_map", "voc_map", "coco_ap", "ap50"} <= set(json.loads(scored.stdout))
    assert json.loads(scored.stdout)["split"] == "test"  # VOC's default
    val = run(
        "eval", VARIANT, "--weights", str(out / "model.safetensors"), "--data", str(shapes), "--split", "val"
    )
    assert val.exit_code == 0, val.stderr
    assert f"({len(detection_split(str(shapes), 'val').dataset)} images, val split)" in val.stdout
    assert f"voc07_map {metrics[-1]['val_voc07_map']:.2f}%" in val.stdout  # what the run reported


def test_a_detectors_recipe_and_classes_are_checked_before_training(registry, run, shapes, tmp_path):
    refused = run("train", VARIANT, "--data", str(shapes), "-r", "momentum=0.5", "--out", str(tmp_path / "a"))
    assert refused.exit_code == 2 and "not 'momentum'" in refused.stderr
    wrong = run("train", VARIANT, "--data", "builtin:digits", "--out", str(tmp_path / "b"))
    assert wrong.exit_code == 2 and "a detector trains on builtin:shapes" in wrong.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_eval_of_a_coco_file_with_an_undefined_category_stops_before_writing(
    registry, run, weights, tmp_path
):
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "val2017").mkdir()
    Image.new("RGB", (64, 48)).save(root / "val2017" / "a.jpg")
    document = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 5, "bbox": [1, 2, 10, 10]}],
        "categories": [{"id": 1, "name": "thing"}],
    }
    file = root / "annotations" / "instances_val2017.json"
    file.write_text(json.dumps(document))
    results = tmp_path / "results.json"
    result = run("eval", VARIANT, "--weights", str(weights), "--data", str(root), "--out", str(results))
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert str(file) in line and "annotations[0].category_id" in line and "5 is not one of" in line
    assert not results.exists()


def test_training_on_a_voc_folder_with_an_empty_annotation_stops_before_writing(
    registry, run, shapes, tmp_path
):
    root = Path(shutil.copytree(shapes, tmp_path / "voc"))
    voc = root / "VOCdevkit" / "VOC2007"
    first = (voc / "ImageSets/Main/train.txt").read_text().split()[0]
    xml = voc / "Annotations" / f"{first}.xml"
    xml.write_text("")
    out = tmp_path / "run"
    result = run("train", VARIANT, "--data", str(root), "--epochs", "1", "--out", str(out))
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert str(xml) in line and "empty annotation file" in line
    assert not out.exists()
