"""papers train / papers eval for segmenters: data layouts, the loop, the metrics, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from papers.cli import cli
from papers.segment import voc_palette


def _scene(index: int, size: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(index)
    image = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
    mask = np.zeros((size, size), dtype=np.uint8)
    top, left = rng.integers(0, size // 2, 2)
    image[top : top + size // 2, left : left + size // 2] = (220, 40, 40)
    mask[top : top + size // 2, left : left + size // 2] = 1
    mask[0, 0] = 255  # an ignored pixel
    return image, mask


def _palette_png(mask: np.ndarray, path: Path) -> None:
    label_map = Image.fromarray(mask, mode="P")
    label_map.putpalette(voc_palette())
    label_map.save(path)


def _plain(root: Path, n: int = 6) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        image, mask = _scene(i)
        Image.fromarray(image).save(root / "images" / f"{i:03d}.png")
        _palette_png(mask, root / "masks" / f"{i:03d}.png")
    return root


def _voc(root: Path, n: int = 4) -> Path:
    folder = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (folder / sub).mkdir(parents=True)
    for i in range(n):
        image, mask = _scene(i)
        Image.fromarray(image).save(folder / "JPEGImages" / f"{i:03d}.jpg")
        _palette_png(mask, folder / "SegmentationClass" / f"{i:03d}.png")
    for split in ("train", "val"):
        (folder / "ImageSets" / "Segmentation" / f"{split}.txt").write_text(
            "".join(f"{i:03d}\n" for i in range(n))
        )
    return folder


def test_a_segmenter_trains_and_evaluates_with_the_four_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    data = _plain(tmp_path / "data")
    runner = CliRunner()
    args = ["train", "segnet_basic", "--data", str(data), "--epochs", "3", "--batch-size", "3"]
    made = runner.invoke(
        cli, [*args, "-r", "crop=32", "-r", "lr=0.05", "--out", str(tmp_path / "run"), "--json"]
    )
    assert made.exit_code == 0, made.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]
    assert {"val_miou", "val_pixel_acc", "val_mean_acc", "val_fwiou", "val_per_class"} <= set(metrics[-1])
    assert json.loads((tmp_path / "run" / "recipe.json").read_text())["crop"] == 32
    results = tmp_path / "results.json"
    weights = str(tmp_path / "run" / "model.safetensors")
    scored = runner.invoke(
        cli,
        ["eval", "segnet_basic", "--weights", weights, "--data", str(data), "--out", str(results), "--json"],
    )
    assert scored.exit_code == 0, scored.output
    measured = json.loads(scored.output)
    assert measured["miou"] == pytest.approx(100 * metrics[-1]["val_miou"], abs=1e-6)
    assert measured["images"] == 6 and measured["classes"] == 11
    rows = json.loads(results.read_text())["results"]
    assert {r["metric"] for r in rows} == {"miou", "pixel_acc", "mean_acc", "fwiou"}


def test_a_voc_folder_sets_the_classes_and_its_split_files(tmp_path):
    from papers.segmentation_data import read_pair, segmentation_pairs

    _voc(tmp_path)
    pairs, classes = segmentation_pairs(str(tmp_path), "train")
    assert len(pairs) == 4 and classes is not None and len(classes) == 21
    image, mask = read_pair(pairs[0], 21)
    assert mask.shape == (image.height, image.width) and set(np.unique(mask)) <= {0, 1, 255}


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("size", "the mask is 20×20, its image 40×40"),
        ("label", "label 30 is outside the 21 classes"),
        ("colour", "colour (1, 2, 3) is not in VOC's palette"),
        ("palette", "colour (1, 2, 3) of index 1 is neither VOC's colour for label 1 nor grey"),
        ("split", "the split file lists no image"),
    ],
)
def test_bad_masks_and_splits_are_refused_naming_the_file(tmp_path, damage, message):
    folder = _voc(tmp_path / "data")
    mask = folder / "SegmentationClass" / "000.png"
    if damage == "size":
        _palette_png(np.zeros((20, 20), np.uint8), mask)
    elif damage == "label":
        _palette_png(np.full((40, 40), 30, np.uint8), mask)
    elif damage == "colour":
        Image.fromarray(np.full((40, 40, 3), (1, 2, 3), np.uint8)).save(mask)
    elif damage == "palette":
        label_map = Image.fromarray(np.ones((40, 40), np.uint8), mode="P")
        label_map.putpalette([0, 0, 0, 1, 2, 3, *voc_palette()[6:]])
        label_map.save(mask)
    else:
        (folder / "ImageSets" / "Segmentation" / "train.txt").write_text("\n")
    out = tmp_path / "run"
    made = CliRunner().invoke(
        cli, ["train", "segnet_basic", "--data", str(tmp_path / "data"), "--epochs", "1", "--out", str(out)]
    )
    assert made.exit_code == 2, made.output
    assert message in made.output and "Traceback" not in made.output
    assert ("000.png" in made.output) or ("train.txt" in made.output)
    assert not out.exists()


def test_an_unknown_recipe_field_is_refused(tmp_path):
    made = CliRunner().invoke(
        cli, ["train", "segnet_basic", "--data", str(_plain(tmp_path / "d")), "-r", "momentum=0.5"]
    )
    assert made.exit_code == 2 and "not 'momentum'" in made.output


def test_a_diverging_run_stops_with_one_line_naming_the_rate(tmp_path):
    args = ["train", "segnet_basic", "--data", str(_plain(tmp_path / "d")), "--epochs", "2"]
    args += ["--out", str(tmp_path / "run"), "--batch-size", "3", "-r", "crop=32", "-r", "lr=1e12"]
    made = CliRunner().invoke(cli, args)
    assert made.exit_code == 2, made.output
    assert "lower the learning rate" in made.output and "-r lr" in made.output
    assert "Traceback" not in made.output


@pytest.mark.parametrize("device", ["gpu0", "cuda:0"])
def test_a_device_that_is_not_here_is_refused(tmp_path, monkeypatch, device):
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.setenv("PAPERS_DEVICE", device)
    args = ["train", "segnet_basic", "--data", str(_plain(tmp_path / "d")), "--out", str(tmp_path / "run")]
    made = CliRunner().invoke(cli, args)
    assert made.exit_code == 2 and "PAPERS_DEVICE" in made.output and repr(device) in made.output
    assert not (tmp_path / "run").exists()


def test_random_scaling_draws_factors_within_the_range_and_keeps_labels_aligned():
    import torch

    from papers.train_segmentation import _crop

    pixels = torch.zeros(3, 40, 60)
    labels = torch.zeros(40, 60, dtype=torch.long)
    pixels[:, 10:30, 20:40], labels[10:30, 20:40] = 1.0, 3  # a 20-pixel square of class 3
    labels[0, 0] = 255
    generator = torch.Generator().manual_seed(0)
    sides = set()
    for _ in range(40):
        crop_pixels, crop_labels = _crop(pixels, labels, 120, generator, (0.5, 2.0))
        assert crop_pixels.shape == (3, 120, 120) and crop_labels.shape == (120, 120)
        assert set(crop_labels.unique().tolist()) <= {0, 3, 255}
        square = crop_labels == 3
        side = int(square.any(0).sum())
        assert 9 <= side <= 41  # 20 pixels scaled by 0.5 to 2.0
        sides.add(side)
        # the image is scaled with its mask: the square's pixels are bright where its labels are
        inside = crop_pixels[0][square]
        assert float(inside.mean()) > 0.9
    assert len(sides) > 10  # the factor is drawn, not fixed
    unscaled = _crop(pixels, labels, 120, torch.Generator().manual_seed(0))[1]
    assert int((unscaled == 3).sum()) == 400


@pytest.mark.parametrize(
    ("setting", "message"),
    [(["scale_min=2", "scale_max=1"], "scale_min 2 is above scale_max 1"), (["scale_min=0"], "positive")],
)
def test_an_impossible_scale_range_is_refused(tmp_path, setting, message):
    args = ["train", "segnet_basic", "--data", str(_plain(tmp_path / "d")), "--out", str(tmp_path / "run")]
    for value in setting:
        args += ["-r", value]
    made = CliRunner().invoke(cli, args)
    assert made.exit_code == 2 and message in made.output, made.output
    assert not (tmp_path / "run").exists()
