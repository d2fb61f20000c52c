"""Training YOLO through `papers train`: YOLOv3's loss (Section 2) term by term, and a narrow YOLOv3
trained, resumed and evaluated on builtin:shapes end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from papers.shapes import ShapesConfig, write
from papers_plugins.detection.yolo_layers import yolov3_loss

# One scale, 8 × 8 cells of 8 pixels on a 64-pixel input, two priors (8 × 8 and 32 × 32 pixels),
# two classes: 2 × (5 + 2) = 14 channels.
ANCHORS = [[[8, 8], [32, 32]]]
SIZE = (64, 64)
NARROW = {
    "widths": [8, 16, 16, 32, 32],
    "blocks": [1, 1, 1, 1, 1],
    "image_size": 96,
    "anchors": [[[48, 48], [64, 64], [90, 90]], [[24, 24], [32, 32], [40, 40]], [[8, 8], [12, 12], [16, 16]]],
}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def _map(fill: float = -8.0) -> torch.Tensor:
    """A raw map that predicts nothing: every objectness and class logit at ``fill``."""
    raw = torch.zeros(1, 2, 7, 8, 8)
    raw[:, :, 4:] = fill
    return raw.view(1, 14, 8, 8)


def _target(box: list[float], label: int = 1) -> dict[str, torch.Tensor]:
    return {"boxes": torch.tensor([box]), "labels": torch.tensor([label])}


def test_an_object_is_learned_by_the_prior_of_closest_shape_in_the_cell_of_its_centre():
    raw = _map().requires_grad_()
    # a 28 × 28 box centred at (20, 36): the 32 × 32 prior, cell (row 4, column 2)
    losses = yolov3_loss([raw], ANCHORS, [_target([6, 22, 34, 50])], SIZE)
    losses["loss_box"].backward()
    touched = raw.grad.view(2, 7, 8, 8).abs().sum(1).nonzero().tolist()
    assert touched == [[1, 4, 2]]


def test_a_perfect_prediction_costs_nothing_but_the_logistic_terms_floor():
    raw = _map().view(1, 2, 7, 8, 8)
    cx, cy, w, h = 20.0, 36.0, 28.0, 28.0
    cell = raw[0, 1, :, 4, 2]
    cell[0] = torch.logit(torch.tensor(cx / 8 - 2))
    cell[1] = torch.logit(torch.tensor(cy / 8 - 4))
    cell[2], cell[3] = math.log(w / 32), math.log(h / 32)
    cell[4], cell[5], cell[6] = 12.0, -12.0, 12.0  # sure of an object of class 1 (labels from 0)
    losses = yolov3_loss([raw.reshape(1, 14, 8, 8)], ANCHORS, [_target([6, 22, 34, 50])], SIZE)
    assert losses["loss_box"].item() == pytest.approx(0.0, abs=1e-10)
    assert losses["loss_classifier"].item() < 1e-4
    assert losses["loss_objectness"].item() < 127 * 4e-4  # 127 empty predictions at σ(−8), one sure hit


def test_a_prediction_overlapping_an_object_above_half_is_not_told_it_is_background():
    raw = _map(fill=3.0).requires_grad_()  # every prediction says "object"
    losses = yolov3_loss([raw], ANCHORS, [_target([6, 22, 34, 50])], SIZE)
    losses["loss_objectness"].backward()
    grads = raw.grad.view(2, 7, 8, 8)[:, 4]
    # the 32 × 32 priors of the cells next to the object's (their default boxes overlap it by > 0.5)
    # get no objectness gradient; far cells are pushed to background
    assert grads[1, 4, 3].item() == 0.0 and grads[1, 0, 7].item() > 0.0
    assert grads[1, 4, 2].item() < 0.0  # the assigned prior is pushed up


def test_a_class_is_an_independent_logistic_not_a_softmax():
    raw = _map().view(1, 2, 7, 8, 8)
    raw[0, 1, 5:, 4, 2] = 10.0  # both classes "sure"
    losses = yolov3_loss([raw.reshape(1, 14, 8, 8)], ANCHORS, [_target([6, 22, 34, 50], label=0)], SIZE)
    assert losses["loss_classifier"].item() == pytest.approx(10.0 + math.log1p(math.exp(-10)), rel=1e-4)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return write(tmp_path_factory.mktemp("shapes"), ShapesConfig(seed=4, images=8)).parent.parent


def test_a_narrow_yolov3_trains_resumes_and_evaluates_through_the_cli(run, shapes, tmp_path):
    out = tmp_path / "run"
    options = [f"{key}={json.dumps(value)}" for key, value in NARROW.items()]
    flags = [item for option in options for item in ("-o", option)]
    args = ["--data", str(shapes), "--epochs", "2", "-r", "lr=0.001", *flags]
    first = run("train", "yolov3_416", *args, "--out", str(out), "--stop-after", "1")
    assert first.exit_code == 0, first.stderr
    resumed = run("train", "yolov3_416", "--resume", str(out))
    assert resumed.exit_code == 0, resumed.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert [m["epoch"] for m in metrics] == [1, 2] and all(math.isfinite(m["train_loss"]) for m in metrics)
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["options"]["num_classes"] == 4  # the shapes' classes, no background
    scored = run(
        "eval", "yolov3_416", "--weights", str(out / "model.safetensors"), "--data", str(shapes), "--json"
    )
    assert scored.exit_code == 0, scored.stderr
    assert 0.0 <= json.loads(scored.stdout)["voc07_map"] <= 100.0
    image = str(sorted((shapes / "VOCdevkit/VOC2007/JPEGImages").glob("*.jpg"))[0])
    found = run("detect", "yolov3_416", image, "--weights", str(out / "model.safetensors"), *flags, "--json")
    assert found.exit_code == 0, found.stderr
