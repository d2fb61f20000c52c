"""RetinaNet's, SSD's and YOLOv3's proxy checks: narrow detectors trained on builtin:shapes, shown as
proxies (SSD's beside the paper's VOC 2007 figure); here only seconds-long smoke runs on ten scenes."""

from __future__ import annotations

import pytest

import papers
from papers.checks import proxy_check
from papers.registry import get_registry
from papers.shapes import ShapesConfig, is_source, split_sizes, write
from papers_plugins.detection import retinanet, ssd, yolov3

PROXIES = {"retinanet": retinanet, "ssd": ssd, "yolov3": yolov3}


@pytest.fixture(scope="module")
def ten_scenes(tmp_path_factory):
    """builtin:shapes' generator at ten images (6 train, 2 val, 2 test), as a VOC folder."""
    return str(write(tmp_path_factory.mktemp("shapes") / "shapes", ShapesConfig(images=10)))


@pytest.mark.parametrize("paper", sorted(PROXIES))
def test_each_registers_a_voc07_map_proxy_on_shapes_at_60_percent(paper):
    plugin = PROXIES[paper]
    (check,) = get_registry().training_checks(paper)
    assert (check.name, check.variant, check.data) == (
        plugin.PROXY_NAME,
        plugin.PROXY_VARIANT,
        plugin.PROXY_DATA,
    )
    assert is_source(check.data)  # builtin:shapes or another set of its generator
    assert (check.metric, check.min_accuracy) == ("voc07_map", 60.0)
    sizes = split_sizes(check.data)
    assert check.runner is not None and check.data in check.proxy
    assert f"{sizes['train']:,} synthetic scenes" in check.proxy and f"{sizes['val']} val" in check.proxy


def test_the_ssd_proxy_stands_beside_the_papers_voc_figure_as_measured():
    (check,) = get_registry().training_checks("ssd")
    spec = papers.get_spec("ssd")
    made = proxy_check(spec, check, 61.5, 200.0)
    assert (made.metric, made.reported, made.measured, made.status) == ("voc07_map", 74.3, 61.5, "pass")
    assert made.dataset == "PASCAL VOC 2007" and made.proxy == check.proxy
    assert proxy_check(spec, check, 59.0, 200.0).status == "fail"


def test_the_retinanet_proxy_stands_alone_as_the_paper_reports_no_voc_figure():
    (check,) = get_registry().training_checks("retinanet")
    made = proxy_check(papers.get_spec("retinanet"), check, 61.5, 200.0)
    assert (made.metric, made.reported, made.measured, made.status) == ("voc07_map", 60.0, 61.5, "pass")
    assert made.dataset == check.data and made.proxy == check.proxy


def test_the_narrow_retinanet_is_narrow_and_the_paper_keeps_its_widths():
    narrow = papers.build_model(retinanet.PROXY_VARIANT, num_classes=5, **retinanet.PROXY_OPTIONS)
    assert narrow.get_submodule("backbone.fpn.layer_blocks.0.0").out_channels == 64
    assert narrow.get_submodule("backbone.body.layer4.0.conv1").out_channels == 256
    assert sum(p.numel() for p in narrow.parameters()) < 5_000_000
    defaults = papers.get_spec("retinanet").graphs["retinanet"].params
    assert (defaults["channels"], defaults["block"], defaults["width"]) == (256, "bottleneck", 64)
    assert defaults["shortcut"] == "B"


def test_the_narrow_yolov3_is_narrow_and_the_paper_keeps_its_widths():
    narrow = papers.build_model(yolov3.PROXY_VARIANT, num_classes=4, **yolov3.PROXY_OPTIONS)
    assert narrow.get_submodule("detect1").in_channels == 256
    assert narrow.get_submodule("detect3").in_channels == 64
    assert sum(p.numel() for p in narrow.parameters()) < 2_500_000  # YOLOv3-416: 62 million
    defaults = papers.get_spec("yolov3").graphs["yolov3"].params
    assert (defaults["widths"], defaults["blocks"]) == ([64, 128, 256, 512, 1024], [1, 2, 8, 8, 4])
    assert defaults["anchors"][0] == [[116, 90], [156, 198], [373, 326]]


def test_the_narrow_ssd_is_narrow_and_the_paper_keeps_its_widths():
    narrow = papers.build_model(ssd.PROXY_VARIANT, num_classes=5, **ssd.PROXY_OPTIONS)
    assert narrow.get_submodule("backbone.features.0").out_channels == 8
    assert sum(p.numel() for p in narrow.parameters()) < 1_000_000
    defaults = papers.get_spec("ssd").graphs["ssd300"].params
    assert (defaults["widths"], defaults["fc"], defaults["batch_norm"]) == (
        [64, 128, 256, 512, 512],
        1024,
        False,
    )
    assert defaults["extras"][0] == [256, 512]


@pytest.mark.parametrize("paper", sorted(PROXIES))
def test_papers_check_run_trains_the_proxy_end_to_end(paper, ten_scenes, monkeypatch):
    import torch

    torch.set_num_threads(1)
    plugin = PROXIES[paper]
    monkeypatch.setattr(plugin, "PROXY_DATA", ten_scenes)
    monkeypatch.setattr(plugin, "PROXY_RECIPE", {**plugin.PROXY_RECIPE, "epochs": 1})  # its layout too
    checks = papers.check(paper, run=True)
    (made,) = [c for c in checks if c.proxy is not None]
    assert made.metric == "voc07_map"
    assert 0.0 <= made.measured <= 100.0 and made.status in ("pass", "fail")
    assert "on builtin:shapes" in made.reason
