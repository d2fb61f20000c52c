"""`papers segment`: label maps with the VOC palette and overlays, class histograms as JSON, one line
and exit 2 for what it cannot do."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import save_file

import papers
from papers.cli import cli
from papers.segment import voc_palette

# the smallest segmenter of the registry at a small size: FCN-ResNet-50 with 3 classes
ARGS = ["fcn_resnet50", "-o", "image_size=32", "-o", "num_classes=3"]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _image(path, height=40, width=48, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return str(path)


def test_voc_palette_colours():
    palette = voc_palette()
    assert palette[:3] == [0, 0, 0]
    assert palette[3:6] == [128, 0, 0]  # aeroplane
    assert palette[15 * 3 : 16 * 3] == [192, 128, 128]  # person
    assert palette[255 * 3 : 256 * 3] == [224, 224, 192]  # the void label


def test_label_maps_overlays_and_histograms(tmp_path):
    first, second = _image(tmp_path / "a.jpg"), _image(tmp_path / "b.png", 24, 20, seed=1)
    out = tmp_path / "out"
    # weights that favour class 2 everywhere: the final convolution's bias only
    torch.manual_seed(0)
    model = papers.build_model("fcn_resnet50", image_size=32, num_classes=3)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["classifier.4.weight"].zero_()
    state["classifier.4.bias"].copy_(torch.tensor([0.0, 0.0, 1.0]))
    save_file(state, str(tmp_path / "w.safetensors"))
    result = CliRunner().invoke(
        cli,
        [
            "segment",
            *ARGS,
            first,
            second,
            "--out",
            str(out),
            "--weights",
            str(tmp_path / "w.safetensors"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [row["size"] for row in rows] == [[40, 48], [24, 20]]
    assert [row["histogram"] for row in rows] == [{"2": 40 * 48}, {"2": 24 * 20}]
    labels = Image.open(out / "a.png")
    assert labels.mode == "P" and labels.size == (48, 40)
    assert set(np.asarray(labels).ravel()) == {2}
    assert labels.getpalette()[6:9] == [0, 128, 0]
    overlay = Image.open(out / "b.overlay.png")
    assert overlay.size == (20, 24) and overlay.mode == "RGB"


def test_the_text_output_lists_each_image(tmp_path):
    result = CliRunner().invoke(cli, ["segment", *ARGS, _image(tmp_path / "a.jpg")])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"{tmp_path / 'a.jpg'}: ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["resnet18", "IMAGE"], "resnet18 is not a segmenter"),
        (["fcn_resnet50", "BROKEN"], "cannot read the image"),
        (["fcn_resnet50", "IMAGE", "--weights", "MISSING"], "no such weights file"),
        (["fcn_resnet50", "IMAGE", "IMAGE", "--out", "OUT"], "two images have the same name"),
        (["no_such_variant", "IMAGE"], "no_such_variant"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    image = _image(tmp_path / "a.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    names = {
        "IMAGE": image,
        "BROKEN": str(tmp_path / "broken.jpg"),
        "MISSING": str(tmp_path / "missing.safetensors"),
        "OUT": str(tmp_path / "out"),
    }
    result = CliRunner().invoke(cli, ["segment", *[names.get(a, a) for a in args]])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
