"""The segmentation papers' proxy checks: narrow FCN-8s and DeepLabv3 trained on builtin:shapes, shown
as proxies beside the paper's VOC figure; here only a seconds-long smoke run of the same networks."""

from __future__ import annotations

import numpy as np
from PIL import Image

import papers
from papers.checks import proxy_check
from papers.registry import get_registry
from papers.segment import voc_palette
from papers.shapes import is_source, split_sizes
from papers_plugins.segmentation import deeplabv3, fcn
from tests.conftest import benchmark


def _tiny_set(root, n=8, size=48):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        rng = np.random.default_rng(i)
        image = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
        mask = np.zeros((size, size), np.uint8)
        top, left = rng.integers(0, size // 2, 2)
        image[top : top + size // 2, left : left + size // 2] = (40, 200, 60)
        mask[top : top + size // 2, left : left + size // 2] = 1 + i % 4
        Image.fromarray(image).save(root / "images" / f"{i}.png")
        label_map = Image.fromarray(mask, mode="P")
        label_map.putpalette(voc_palette())
        label_map.save(root / "masks" / f"{i}.png")
    return root


def test_fcn_and_deeplabv3_register_a_miou_proxy_on_shapes():
    registry = get_registry()
    for paper, plugin in (("fcn", fcn), ("deeplabv3", deeplabv3)):
        (check,) = registry.training_checks(paper)
        assert (check.variant, check.data, check.metric) == (plugin.PROXY_VARIANT, plugin.PROXY_DATA, "miou")
        assert is_source(check.data)  # builtin:shapes or another set of its generator
        assert check.min_accuracy == 70.0 and check.runner is not None and check.data in check.proxy
        sizes = split_sizes(check.data)
        assert f"{sizes['train']:,} synthetic scenes" in check.proxy and f"{sizes['val']} val" in check.proxy
        assert check.overrides == plugin.PROXY_RECIPE


def test_the_proxy_stands_beside_the_papers_voc_figure_as_measured():
    (check,) = get_registry().training_checks("fcn")
    made = proxy_check(papers.get_spec("fcn"), check, 74.5, 300.0)
    assert (made.metric, made.reported, made.measured, made.status) == ("miou", 62.7, 74.5, "pass")
    assert made.dataset == "PASCAL VOC 2011" and made.proxy == check.proxy
    assert "miou 74.50% on builtin:shapes" in made.reason
    assert proxy_check(papers.get_spec("fcn"), check, 65.0, 300.0).status == "fail"


def test_the_narrow_networks_are_narrow_and_keep_the_default_widths():
    narrow = papers.build_model("fcn8s", num_classes=5, **fcn.PROXY_OPTIONS)
    assert narrow.conv1_1.out_channels == 8 and narrow.fc6.out_channels == 128
    small = papers.build_model(deeplabv3.PROXY_VARIANT, num_classes=5, **deeplabv3.PROXY_OPTIONS)
    assert small.get_submodule("backbone.layer4.0.conv3").out_channels == 256  # ResNet's 2048
    assert small.get_submodule("classifier.0.project.0").out_channels == 32  # ASPP's 256
    assert sum(p.numel() for p in small.parameters()) < 500_000
    defaults = papers.get_spec("deeplabv3").graphs["deeplabv3"].params
    assert (defaults["width"], defaults["aspp_channels"]) == (64, 256)


def test_a_smoke_run_of_both_proxies_lowers_the_loss(tmp_path, monkeypatch):
    import torch

    from papers.train_segmentation import train_segmenter

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    data = str(_tiny_set(tmp_path / "data"))
    for variant, options, recipe in (
        ("fcn8s", fcn.PROXY_OPTIONS, fcn.PROXY_RECIPE),
        (deeplabv3.PROXY_VARIANT, deeplabv3.PROXY_OPTIONS, deeplabv3.PROXY_RECIPE),
    ):
        run = train_segmenter(
            variant,
            data,
            overrides={**recipe, "epochs": 3, "batch_size": 4, "crop": 32, "lr": 0.05},  # its layout too
            options={**options, "num_classes": 5},
        )
        losses = [row["train_loss"] for row in run.metrics]
        assert losses[-1] < losses[0], (variant, losses)
        assert {"val_miou", "val_pixel_acc", "val_mean_acc", "val_fwiou"} <= set(run.final)


def test_the_crf_effect_is_measured_on_a_finished_run(tmp_path, monkeypatch, capsys):
    import sys

    import torch

    from papers.train_segmentation import train_segmenter

    torch.set_num_threads(1)
    data = str(_tiny_set(tmp_path / "data"))
    options = {**deeplabv3.PROXY_OPTIONS, "num_classes": 5}
    overrides = {"epochs": 1, "batch_size": 4, "crop": 32}
    train_segmenter(deeplabv3.PROXY_VARIANT, data, overrides=overrides, options=options, out=tmp_path / "run")
    module = benchmark("segmentation_proxies")
    argv = ["segmentation_proxies.py", "--threads", "1", "--crf-of", str(tmp_path / "run")]
    monkeypatch.setattr(sys, "argv", argv)
    module.main()
    printed = capsys.readouterr().out
    assert f"({deeplabv3.PROXY_VARIANT}, {data})" in printed
    assert "without CRF  mIoU" in printed and "with CRF     mIoU" in printed and "ms per val image" in printed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "run"], "it writes nothing"
