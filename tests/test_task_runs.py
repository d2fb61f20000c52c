"""Runs of the task loops (papers.task_runs): a detector's paper recipe, epoch checkpoints, --resume,
--weights and --stop-after, on the tiny detector of tests/specs and SegNet-Basic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import papers
import papers.registry
from papers import hookspecs
from papers.plugins import PluginInfo, PluginManager
from papers.registry import Registry
from papers.shapes import ShapesConfig, write
from tests.test_train_segmentation import _plain

SPEC = Path(__file__).parent / "specs" / "tiny_detector.yaml"
VARIANT = "tiny_detector_demo"
# A paper-style recipe for the tiny detector: a length in iterations, a multistep schedule by
# iteration, an augmentation the detection loop does not run.
PAPER_RECIPE = {
    "optimizer": {"name": "sgd", "lr": 0.004, "momentum": 0.9},
    "batch_size": 2,
    "weight_decay": 1.0e-4,
    "schedule": {"name": "multistep", "factor": 0.1, "milestones": [3], "unit": "iteration"},
    "iterations": 7,
    "augmentation": [{"name": "horizontal_flip"}, {"name": "color_jitter"}],
    "source": "test fixture, Section 0",
}


def _registry_with(tmp_path: Path, hyperparameters: dict | None) -> Registry:
    spec = yaml.safe_load(SPEC.read_text())
    if hyperparameters is not None:
        spec["hyperparameters"] = hyperparameters
    file = tmp_path / "tiny_detector.yaml"
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


@pytest.fixture(scope="module")
def _plain_registry(tmp_path_factory) -> Registry:
    return _registry_with(tmp_path_factory.mktemp("plain"), None)


@pytest.fixture(scope="module")
def _paper_registry(tmp_path_factory) -> Registry:
    return _registry_with(tmp_path_factory.mktemp("paper"), PAPER_RECIPE)


@pytest.fixture
def plain(_plain_registry, monkeypatch, one_thread) -> Registry:
    monkeypatch.setattr(papers.registry, "_current", _plain_registry)
    return _plain_registry


@pytest.fixture
def paper(_paper_registry, monkeypatch, one_thread) -> Registry:
    monkeypatch.setattr(papers.registry, "_current", _paper_registry)
    return _paper_registry


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return write(tmp_path_factory.mktemp("shapes"), ShapesConfig(seed=3, images=8)).parent.parent


def _same_weights(a: Path, b: Path) -> bool:
    first, second = load_file(str(a)), load_file(str(b))
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_a_detector_trains_with_its_papers_recipe_where_the_spec_gives_one(paper, run, shapes, tmp_path):
    out = tmp_path / "run"
    made = run("train", VARIANT, "--data", str(shapes), "--out", str(out))
    assert made.exit_code == 0, made.stderr
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["recipe"] == "paper" and recipe["source"] == "test fixture, Section 0"
    assert recipe["optimizer"]["lr"] == 0.004 and recipe["weight_decay"] == 1.0e-4
    assert any(d.startswith("augmentation color_jitter") for d in recipe["deviations"])
    # 7 iterations at 2 images a step: as many whole epochs as they need, the last one cut short
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    assert checkpoint["step"] == 7
    assert len(json.loads((out / "metrics.json").read_text())) == recipe["epochs"]
    # past the milestone at iteration 3, the rate is the paper's tenth
    (group,) = checkpoint["optimizer"]["param_groups"]
    assert group["lr"] == pytest.approx(0.0004) and group["momentum"] == 0.9


def test_lr_is_short_for_the_papers_optimizer_lr_and_epochs_replace_its_iterations(paper, run, shapes):
    shown = run("train", VARIANT, "--data", str(shapes), "--dry-run", "-r", "lr=0.02", "--epochs", "3")
    assert shown.exit_code == 0, shown.stderr
    recipe = json.loads(shown.stdout)
    assert recipe["optimizer"]["lr"] == 0.02 and recipe["epochs"] == 3 and recipe.get("iterations") is None
    refused = run("train", VARIANT, "--data", str(shapes), "--dry-run", "-r", "optimizer.nope=1")
    assert refused.exit_code == 2 and "optimizer.nope" in refused.stderr


def test_a_detector_without_a_recipe_trains_with_the_registrys(plain, run, shapes):
    shown = run("train", VARIANT, "--data", str(shapes), "--dry-run")
    assert shown.exit_code == 0, shown.stderr
    assert json.loads(shown.stdout) == {
        "recipe": "registry",
        "epochs": 10,
        "batch_size": 2,
        "lr": 0.01,
        "weight_decay": 5e-4,
        "grad_clip": 0.0,
        "seed": 0,
        "augment": "flip",
        "channels_last": False,
        "val_interval": 1,
    }


def test_ssds_sampling_trains_and_keeps_every_box_inside_its_image(plain, run, shapes, tmp_path):
    from papers.detection_data import detection_split
    from papers.train_detection import _sampled, _ssd_sampling

    train = detection_split(str(shapes), "train")
    sampling, sizes = _ssd_sampling(), set()
    torch.manual_seed(0)
    for _ in range(6):
        for index in range(len(train.dataset)):
            image, target = train.dataset[index]
            made, kept = _sampled(sampling, image, {"boxes": target["boxes"], "labels": target["labels"]})
            boxes, height, width = kept["boxes"], made.shape[-2], made.shape[-1]
            assert type(made) is torch.Tensor and type(boxes) is torch.Tensor
            assert len(kept["labels"]) == len(boxes) <= len(target["boxes"])
            assert bool((boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all())
            assert bool((boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all())
            assert bool((boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all())
            sizes.add((height, width) != tuple(image.shape[-2:]))
    assert sizes == {True, False}  # some images cropped or zoomed out, some left whole
    out = tmp_path / "run"
    made = run(
        "train", VARIANT, "--data", str(shapes), "--epochs", "1", "-r", "augment=ssd", "--out", str(out)
    )
    assert made.exit_code == 0, made.stderr
    assert json.loads((out / "recipe.json").read_text())["augment"] == "ssd"
    refused = run("train", VARIANT, "--data", str(shapes), "--dry-run", "-r", "augment=mosaic")
    assert refused.exit_code == 2 and "-r augment" in refused.stderr and "flip or ssd" in refused.stderr


def _losses(folder: Path) -> list[float]:
    return [m["train_loss"] for m in json.loads((folder / "metrics.json").read_text())]


@pytest.mark.parametrize("recipe", ["registry", "paper"])
def test_a_detector_trains_channels_last_to_the_same_numbers_up_to_rounding(
    request, recipe, run, shapes, tmp_path
):
    request.getfixturevalue("plain" if recipe == "registry" else "paper")
    args = ("train", VARIANT, "--data", str(shapes), "--epochs", "2", "-r", "lr=0.005")
    assert run(*args, "--out", str(tmp_path / "nchw")).exit_code == 0
    made = run(*args, "-r", "channels_last=true", "--out", str(tmp_path / "nhwc"))
    assert made.exit_code == 0, made.stderr
    recorded = json.loads((tmp_path / "nhwc" / "recipe.json").read_text())
    assert recorded["channels_last"] is True and recorded["recipe"] == recipe
    assert _losses(tmp_path / "nhwc") == pytest.approx(_losses(tmp_path / "nchw"), rel=1e-4)
    saved = load_file(str(tmp_path / "nhwc" / "model.safetensors"))  # written in the default layout
    assert all(t.is_contiguous() for t in saved.values())
    refused = run(*args, "--dry-run", "-r", "channels_last=nhwc")
    assert refused.exit_code == 2 and refused.stdout == ""
    assert "-r channels_last" in refused.stderr and "nhwc" in refused.stderr


@pytest.mark.parametrize("recipe", ["registry", "paper"])
def test_a_detector_scores_every_val_interval_epochs_and_the_last_to_the_same_numbers(
    request, recipe, run, shapes, tmp_path
):
    request.getfixturevalue("plain" if recipe == "registry" else "paper")
    args = ("train", VARIANT, "--data", str(shapes), "--epochs", "3", "-r", "lr=0.005")
    assert run(*args, "--out", str(tmp_path / "every")).exit_code == 0
    made = run(*args, "-r", "val_interval=2", "--out", str(tmp_path / "second"))
    assert made.exit_code == 0, made.stderr
    assert json.loads((tmp_path / "second" / "recipe.json").read_text())["val_interval"] == 2
    every, second = (json.loads((tmp_path / f / "metrics.json").read_text()) for f in ("every", "second"))
    assert ["val_voc07_map" in row for row in second] == [False, True, True]
    for ours, theirs in zip(second, every, strict=True):  # scoring changes nothing the training does
        assert ours["train_loss"] == theirs["train_loss"]
        assert ours.get("val_voc07_map", theirs["val_voc07_map"]) == theirs["val_voc07_map"]
    assert _same_weights(tmp_path / "every" / "model.safetensors", tmp_path / "second" / "model.safetensors")
    for value in ("0", "two"):
        refused = run(*args, "--dry-run", "-r", f"val_interval={value}")
        assert refused.exit_code == 2 and refused.stdout == ""
        assert "-r val_interval" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1


def test_a_stopped_detector_run_resumed_ends_as_an_uninterrupted_one(plain, run, shapes, tmp_path):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    args = ("--data", str(shapes), "--epochs", "2", "-r", "lr=0.005")
    assert run("train", VARIANT, *args, "--out", str(straight)).exit_code == 0
    first = run("train", VARIANT, *args, "--out", str(stopped), "--stop-after", "1")
    assert first.exit_code == 0 and "continue with --resume" in first.stdout
    assert len(json.loads((stopped / "metrics.json").read_text())) == 1
    resumed = run("train", VARIANT, "--resume", str(stopped))
    assert resumed.exit_code == 0, resumed.stderr
    assert _same_weights(straight / "model.safetensors", stopped / "model.safetensors")
    losses = [
        [m["train_loss"] for m in json.loads((f / "metrics.json").read_text())] for f in (straight, stopped)
    ]
    assert losses[0] == losses[1]


def test_a_stopped_segmenter_run_resumed_ends_as_an_uninterrupted_one(run, tmp_path, one_thread):
    data = _plain(tmp_path / "data")
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    args = ("--data", str(data), "--epochs", "2", "--batch-size", "3", "-r", "crop=32")
    assert run("train", "segnet_basic", *args, "--out", str(straight)).exit_code == 0
    assert run("train", "segnet_basic", *args, "--out", str(stopped), "--stop-after", "1").exit_code == 0
    extended = run("train", "segnet_basic", "--resume", str(stopped))
    assert extended.exit_code == 0, extended.stderr
    assert _same_weights(straight / "model.safetensors", stopped / "model.safetensors")


def test_a_segmenter_trains_and_resumes_channels_last_to_the_same_numbers_up_to_rounding(
    run, tmp_path, one_thread
):
    data = _plain(tmp_path / "data")
    nchw, nhwc = tmp_path / "nchw", tmp_path / "nhwc"
    args = ("--data", str(data), "--epochs", "2", "--batch-size", "3", "-r", "crop=32")
    assert run("train", "segnet_basic", *args, "--out", str(nchw)).exit_code == 0
    layout = ("-r", "channels_last=true")
    assert (
        run("train", "segnet_basic", *args, *layout, "--out", str(nhwc), "--stop-after", "1").exit_code == 0
    )
    resumed = run("train", "segnet_basic", "--resume", str(nhwc))
    assert resumed.exit_code == 0, resumed.stderr
    assert json.loads((nhwc / "recipe.json").read_text())["channels_last"] is True
    assert _losses(nhwc) == pytest.approx(_losses(nchw), rel=1e-4)
    ours, theirs = (load_file(str(f / "model.safetensors")) for f in (nhwc, nchw))
    assert all(torch.allclose(ours[k], theirs[k], rtol=1e-4, atol=1e-5) for k in theirs)


def test_a_segmenter_scores_only_after_the_last_epoch_when_the_interval_is_longer(run, tmp_path, one_thread):
    data = _plain(tmp_path / "data")
    args = ("--data", str(data), "--epochs", "2", "--batch-size", "3", "-r", "crop=32")
    assert run("train", "segnet_basic", *args, "--out", str(tmp_path / "every")).exit_code == 0
    made = run("train", "segnet_basic", *args, "-r", "val_interval=5", "--out", str(tmp_path / "last"))
    assert made.exit_code == 0, made.stderr
    every, last = (json.loads((tmp_path / f / "metrics.json").read_text()) for f in ("every", "last"))
    assert not any(key.startswith("val_") for key in last[0])
    assert {k: v for k, v in last[1].items() if k != "seconds"} == {
        k: v for k, v in every[1].items() if k != "seconds"
    }
    assert "mIoU" in made.stdout  # the final line reports the last epoch's scores


def test_a_resumed_run_keeps_its_recipe_variant_and_data(plain, run, shapes, tmp_path):
    folder = tmp_path / "run"
    args = ("--data", str(shapes), "--epochs", "2", "--out", str(folder), "--stop-after", "1")
    assert run("train", VARIANT, *args).exit_code == 0
    before = (folder / "model.safetensors").read_bytes()
    for extra, named in (
        (("-r", "lr=0.1"), "keeps its recipe"),
        (("--epochs", "1"), "more epochs than its 2"),
        (("--data", "builtin:shapes"), "--data"),
    ):
        refused = run("train", VARIANT, "--resume", str(folder), *extra)
        assert refused.exit_code == 2 and named in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
    other = run("train", "segnet_basic", "--resume", str(folder))
    assert other.exit_code == 2 and "not segnet_basic" in other.stderr
    (folder / "checkpoint.pt").write_bytes(b"not a checkpoint")
    damaged = run("train", VARIANT, "--resume", str(folder))
    assert damaged.exit_code == 2 and "checkpoint.pt" in damaged.stderr
    assert (folder / "model.safetensors").read_bytes() == before


def test_a_task_run_starts_from_weights_and_refuses_ones_that_do_not_fit(plain, run, shapes, tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(5)
    start = tmp_path / "start.safetensors"
    save_file(papers.build_model(VARIANT, num_classes=5).state_dict(), str(start))
    args = ("--data", str(shapes), "--epochs", "1", "-r", "lr=0.005")
    made = run("train", VARIANT, *args, "--weights", str(start), "--out", str(tmp_path / "a"))
    assert made.exit_code == 0, made.stderr
    seeded = run("train", VARIANT, *args, "--out", str(tmp_path / "b"))
    assert not _same_weights(tmp_path / "a" / "model.safetensors", tmp_path / "b" / "model.safetensors")
    wrong = tmp_path / "wrong.safetensors"
    save_file({"conv1.weight": torch.zeros(1)}, str(wrong))
    refused = run("train", VARIANT, *args, "--weights", str(wrong), "--out", str(tmp_path / "c"))
    assert seeded.exit_code == 0 and refused.exit_code == 2 and "wrong.safetensors" in refused.stderr
    assert not (tmp_path / "c").exists()
