"""MultiBox through `papers train` and `papers eval`: class-agnostic, every object the one class
"object", priors the k-means centroids of the train split's boxes, the bipartite matching loss of
Section 3 on a hand-made case."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from papers.detect import class_agnostic, class_detector
from papers.shapes import ShapesConfig, write
from papers_plugins.detection.multibox_layers import matching_loss

ALPHA = 0.3
NARROW = ["-o", "image_size=95", "-o", "k=8"]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def test_the_matching_loss_assigns_the_object_to_the_cheapest_prediction_and_scores_both_terms():
    truth = torch.tensor([[0.5, 0.5, 1.0, 1.0]])
    locations = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]])
    even = matching_loss(locations, torch.zeros(2), truth, alpha=ALPHA)
    assert even.predictions.tolist() == [1] and even.boxes.tolist() == [0]
    assert even.location.item() == pytest.approx(0.0)
    assert even.confidence.item() == pytest.approx(2 * math.log(2))  # −log c1 − log(1 − c0), c = 0.5
    shifted = matching_loss(
        locations + torch.tensor([0.0, 0.0, 0.0, 0.1]), torch.zeros(2), truth, alpha=ALPHA
    )
    assert shifted.location.item() == pytest.approx(ALPHA / 2 * 0.1**2)
    # a confident prediction far away is cheaper to match than an unsure one on the object
    sure = matching_loss(locations, torch.tensor([10.0, -10.0]), truth, alpha=ALPHA)
    assert sure.predictions.tolist() == [0]
    assert sure.location.item() == pytest.approx(ALPHA / 2 * 4 * 0.5**2)


def test_multibox_is_a_class_agnostic_plugin_detector_and_yolo_is_not():
    assert class_detector("multibox_alexnet_k100") is not None
    assert class_agnostic("multibox_alexnet_k100")
    assert not class_agnostic("yolov2_voc")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return write(tmp_path_factory.mktemp("shapes"), ShapesConfig(seed=4, images=8)).parent.parent


def test_multibox_trains_and_is_scored_class_agnostic_through_the_cli(run, shapes, tmp_path):
    out = tmp_path / "run"
    args = ["--data", str(shapes), "--epochs", "1", "-r", "lr=0.001", *NARROW, "--out", str(out)]
    trained = run("train", "multibox_alexnet_k100", *args)
    assert trained.exit_code == 0, trained.stderr
    (row,) = json.loads((out / "metrics.json").read_text())
    assert math.isfinite(row["train_loss"]) and row["train_loss"] > 0
    recipe = json.loads((out / "recipe.json").read_text())
    assert "num_classes" not in recipe["options"] and "class-agnostic" in recipe["evaluation"]
    priors = torch.tensor(recipe["options"]["priors"])  # k-means of the train split's boxes
    assert priors.shape == (8, 4) and bool((priors[:, 2:] > priors[:, :2]).all())
    weights = str(out / "model.safetensors")
    scored = run("eval", "multibox_alexnet_k100", "--weights", weights, "--data", str(shapes), "--json")
    assert scored.exit_code == 0, scored.stderr
    result = json.loads(scored.stdout)
    assert result["classes"] == 1 and set(result["per_class_voc07_ap"]) <= {"object"}
    assert 0.0 <= result["voc07_map"] <= 100.0
    image = str(sorted((shapes / "VOCdevkit/VOC2007/JPEGImages").glob("*.jpg"))[0])
    found = run("detect", "multibox_alexnet_k100", image, "--weights", weights, "--json")
    assert found.exit_code == 0, found.stderr
    assert set(json.loads(found.stdout)[0]["label_names"]) <= {"object"}


def test_more_priors_than_training_boxes_are_refused_in_one_line(run, shapes, tmp_path):
    out = tmp_path / "run"
    refused = run("train", "multibox_alexnet_k100", "--data", str(shapes), "--epochs", "1", "--out", str(out))
    assert refused.exit_code == 2
    assert "100 k-means priors need at least 100 training boxes" in refused.stderr
    assert "Traceback" not in refused.stderr and not out.exists()
