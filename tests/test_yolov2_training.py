"""Training YOLOv2 through `papers train`: its loss (YOLO9000 Section 2, the rest as yolo_v2_loss's
docstring says) term by term on hand-made maps, and a narrow YOLOv2 trained and evaluated on
builtin:shapes end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from papers.shapes import ShapesConfig, write
from papers_plugins.detection.yolo_layers import yolo_detector, yolo_v2_loss

# 8 × 8 cells of 8 pixels on a 64-pixel input, two priors (1 × 1 and 4 × 4 cells: 8 and 32 pixels),
# two classes: 2 × (5 + 2) = 14 channels.
ANCHORS = [[1.0, 1.0], [4.0, 4.0]]
SIZE = (64, 64)
BOX = [6.0, 22.0, 34.0, 50.0]  # 28 × 28 pixels centred at (20, 36): the 4 × 4 prior, row 4, column 2
NARROW = {
    "stages": [[[3, 8]], [[3, 8]], [[3, 16]], [[3, 16]], [[3, 16]], [[3, 32]]],
    "head_filters": 32,
    "image_size": 96,
    "anchors": [[0.5, 0.5], [1.0, 1.0], [1.5, 1.5]],
}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def _map(fill: float = -30.0) -> torch.Tensor:
    """A raw map [1, 2, 7, 8, 8] that predicts nothing: every objectness logit at ``fill``, the boxes
    at their priors in the middle of their cells, the classes even."""
    raw = torch.zeros(1, 2, 7, 8, 8)
    raw[:, :, 4] = fill
    return raw


def _loss(raw: torch.Tensor, box: list[float] = BOX, label: int = 1, **options) -> dict[str, torch.Tensor]:
    target = {"boxes": torch.tensor([box]), "labels": torch.tensor([label])}
    return yolo_v2_loss(raw.reshape(1, 14, 8, 8), ANCHORS, [target], SIZE, **options)


def test_an_object_is_learned_by_the_prior_of_closest_shape_in_the_cell_of_its_centre():
    raw = _map().requires_grad_()
    losses = _loss(raw)
    (losses["loss_box"] + losses["loss_classifier"]).backward()
    assert raw.grad.abs().sum(2)[0].nonzero().tolist() == [[1, 4, 2]]
    small = _map().requires_grad_()  # a 6 × 6 box centred at (60, 4): the 1 × 1 prior, row 0, column 7
    _loss(small, box=[57.0, 1.0, 63.0, 7.0])["loss_box"].backward()
    assert small.grad.abs().sum(2)[0].nonzero().tolist() == [[0, 0, 7]]


def test_a_perfect_prediction_costs_no_coordinates_and_its_objectness_target_is_one():
    raw = _map()
    cell = raw[0, 1, :, 4, 2]
    cell[0] = torch.logit(torch.tensor(20 / 8 - 2))
    cell[1] = torch.logit(torch.tensor(36 / 8 - 4))
    cell[2] = cell[3] = math.log(28 / 32)
    cell[4], cell[5], cell[6] = 30.0, -15.0, 15.0  # sure of an object of class 1 (labels from 0)
    losses = _loss(raw)
    assert losses["loss_box"].item() == pytest.approx(0.0, abs=1e-10)
    assert losses["loss_objectness"].item() == pytest.approx(0.0, abs=1e-10)  # its box's IoU is 1
    assert losses["loss_classifier"].item() == pytest.approx(0.0, abs=1e-10)


def test_the_responsible_objectness_is_trained_to_the_iou_of_its_box_with_the_object():
    raw = _map()
    raw[0, 1, 4, 4, 2] = 0.0  # σ = 0.5; its box is the 32 × 32 prior at the object's centre
    iou = 28 * 28 / (32 * 32)
    assert _loss(raw)["loss_objectness"].item() == pytest.approx((0.5 - iou) ** 2, rel=1e-5)
    raw[0, 1, 4, 4, 2] = torch.logit(torch.tensor(iou, dtype=torch.float64)).item()
    assert _loss(raw)["loss_objectness"].item() == pytest.approx(0.0, abs=1e-10)


def test_the_coordinates_weigh_lambda_coord_and_the_empty_priors_lambda_noobj():
    raw = _map(fill=0.0)  # every objectness at σ = 0.5
    nothing = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    empty = yolo_v2_loss(raw.reshape(1, 14, 8, 8), ANCHORS, [nothing], SIZE)
    assert empty["loss_objectness"].item() == pytest.approx(0.5 * 128 * 0.25)
    offset = _map()
    offset[0, 1, 2, 4, 2] = 1.0  # tw one off log(28 / 32)
    expected = 5.0 * (1.0 - math.log(28 / 32)) ** 2 + 5.0 * math.log(28 / 32) ** 2
    assert _loss(offset)["loss_box"].item() == pytest.approx(expected, rel=1e-5)


def test_a_prediction_overlapping_an_object_above_half_is_not_told_it_is_background():
    raw = _map(fill=3.0).requires_grad_()  # every prediction says "object"
    _loss(raw)["loss_objectness"].backward()
    grads = raw.grad[0, :, 4]
    # the 32 × 32 prior of the next cell (its box overlaps the object by 0.52) gets no gradient, a far
    # cell's is pushed to background; without the rule both are
    assert grads[1, 4, 3].item() == 0.0 and grads[1, 0, 7].item() > 0.0
    every = _map(fill=3.0).requires_grad_()
    _loss(every, ignore_thresh=None)["loss_objectness"].backward()
    assert every.grad[0, 1, 4, 4, 3].item() > 0.0


def test_classes_are_a_softmax_scored_by_squared_error():
    raw = _map()
    raw[0, 1, 5:, 4, 2] = 10.0  # both classes "sure": a softmax makes them 0.5 each
    assert _loss(raw, label=0)["loss_classifier"].item() == pytest.approx(0.5, rel=1e-6)


def test_multiscale_training_draws_a_multiple_of_32_every_ten_batches_and_evaluates_at_its_size():
    detector = yolo_detector("yolov2_voc", 2, weights=None, options={**NARROW, "multiscale": [64, 160]})
    assert detector.scales == [64, 96, 128, 160]
    seen = []
    object.__setattr__(detector, "loss", lambda outputs, targets, size: seen.append(size) or {})
    torch.manual_seed(0)
    detector.train()
    image, target = (
        torch.rand(3, 50, 70),
        {"boxes": torch.tensor([[10.0, 10.0, 30.0, 40.0]]), "labels": torch.tensor([1])},
    )
    for _ in range(40):
        detector([image], [target])
    sides = [height for height, _ in seen]
    assert all(len(set(sides[i : i + 10])) == 1 for i in range(0, 40, 10))
    assert set(sides) <= {64, 96, 128, 160} and len(set(sides)) > 1
    decoded = []
    object.__setattr__(detector, "decode", lambda outputs, size: decoded.append(size) or [_nothing()])
    detector.eval()
    with torch.no_grad():
        detector([image])
    assert decoded == [(96, 96)]  # evaluation at the build size


def _nothing() -> dict[str, torch.Tensor]:
    return {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}


@pytest.mark.parametrize("bounds", [[64, 100], [160, 64], [64], "64"])
def test_multiscale_bounds_that_are_not_two_ordered_multiples_of_32_are_refused(bounds):
    from papers.errors import PapersError

    with pytest.raises(PapersError, match="two multiples of 32") as caught:
        yolo_detector("yolov2_voc", 2, weights=None, options={**NARROW, "multiscale": bounds})
    assert caught.value.field == "-o multiscale"


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return write(tmp_path_factory.mktemp("shapes"), ShapesConfig(seed=4, images=8)).parent.parent


def test_a_narrow_yolov2_trains_and_evaluates_through_the_cli(run, shapes, tmp_path):
    out = tmp_path / "run"
    options = {**NARROW, "multiscale": [64, 128]}
    flags = [item for key, value in options.items() for item in ("-o", f"{key}={json.dumps(value)}")]
    trained = run("train", "yolov2_voc", "--data", str(shapes), "--epochs", "1", *flags, "--out", str(out))
    assert trained.exit_code == 0, trained.stderr
    (row,) = json.loads((out / "metrics.json").read_text())
    assert math.isfinite(row["train_loss"]) and row["train_loss"] > 0
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["options"]["num_classes"] == 4 and recipe["options"]["multiscale"] == [64, 128]
    scored = run(
        "eval", "yolov2_voc", "--weights", str(out / "model.safetensors"), "--data", str(shapes), "--json"
    )
    assert scored.exit_code == 0, scored.stderr
    assert 0.0 <= json.loads(scored.stdout)["voc07_map"] <= 100.0
