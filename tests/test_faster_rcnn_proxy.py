"""Faster R-CNN's proxy check: a narrow Faster R-CNN trained on builtin:shapes, shown as a proxy beside
the paper's VOC 2007 figure; here only a seconds-long smoke run of the same network on ten scenes."""

from __future__ import annotations

import pytest

import papers
from papers.checks import proxy_check
from papers.registry import get_registry
from papers.shapes import ShapesConfig, write
from papers_plugins.detection import faster_rcnn


@pytest.fixture
def ten_scenes(tmp_path):
    """builtin:shapes' generator at ten images (6 train, 2 val, 2 test), as a VOC folder."""
    return str(write(tmp_path / "shapes", ShapesConfig(images=10)))


def test_faster_rcnn_registers_a_voc07_map_proxy_on_shapes():
    (check,) = get_registry().training_checks("faster_rcnn")
    assert (check.name, check.variant, check.data) == (
        "faster_rcnn-shapes",
        "faster_rcnn_vgg16",
        "builtin:shapes",
    )
    assert (check.metric, check.min_accuracy) == ("voc07_map", 70.0)
    assert check.runner is not None and "builtin:shapes" in check.proxy


def test_the_proxy_stands_beside_the_papers_voc_figure_as_measured():
    (check,) = get_registry().training_checks("faster_rcnn")
    spec = papers.get_spec("faster_rcnn")
    made = proxy_check(spec, check, 74.5, 200.0)
    assert (made.metric, made.reported, made.measured, made.status) == ("voc07_map", 73.2, 74.5, "pass")
    assert made.dataset == "PASCAL VOC 2007" and made.proxy == check.proxy
    assert "voc07_map 74.50% on builtin:shapes" in made.reason
    assert proxy_check(spec, check, 65.0, 200.0).status == "fail"


def test_the_narrow_network_is_narrow_and_the_paper_keeps_its_widths():
    narrow = papers.build_model(faster_rcnn.PROXY_VARIANT, num_classes=5, **faster_rcnn.PROXY_OPTIONS)
    assert narrow.get_submodule("rpn.conv").out_channels == faster_rcnn.PROXY_OPTIONS["channels"]
    assert narrow.get_submodule("roi_heads.box_head.fc7").out_features == 256
    assert sum(p.numel() for p in narrow.parameters()) < 2_000_000
    defaults = papers.get_spec("faster_rcnn").graphs["faster_rcnn"].params
    assert defaults["widths"] == [64, 128, 256, 512, 512]
    assert (defaults["representation_size"], defaults["dropout"]) == (4096, 0.5)
    assert defaults["batch_norm"] is False


def test_papers_check_run_trains_the_proxy_end_to_end(ten_scenes, monkeypatch):
    import torch

    torch.set_num_threads(1)
    monkeypatch.setattr(faster_rcnn, "PROXY_DATA", ten_scenes)
    monkeypatch.setattr(faster_rcnn, "PROXY_RECIPE", {**faster_rcnn.PROXY_RECIPE, "epochs": 1})
    checks = papers.check("faster_rcnn", run=True)
    (made,) = [c for c in checks if c.proxy is not None]
    assert made.metric == "voc07_map" and made.reported == 73.2
    assert 0.0 <= made.measured <= 100.0 and made.status in ("pass", "fail")
    assert "on builtin:shapes" in made.reason
