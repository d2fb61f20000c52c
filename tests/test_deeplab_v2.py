"""DeepLab v2: ASPP on ResNet-101 (atrous, output stride 8) and on DeepLab v1's VGG-16, and the
multi-scale inputs fused by a per-pixel maximum (MSC)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision
from click.testing import CliRunner
from PIL import Image
from torch.nn.functional import interpolate

import papers
from papers.cli import cli
from papers.errors import PapersError
from papers.multiscale import MultiScaleSegmenter, build_multi_scale, max_fuse, scaled_size


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _dilations(model: torch.nn.Module, prefix: str) -> list[int]:
    return [
        m.dilation[0]
        for name, m in model.named_modules()
        if name.startswith(prefix) and isinstance(m, torch.nn.Conv2d)
    ]


def test_resnet101_aspp_l_sums_four_atrous_branches_at_output_stride_8():
    torch.manual_seed(0)
    model = papers.build_model("deeplab_v2_resnet101", image_size=65).eval()
    assert [model.get_submodule(f"aspp.{j}").dilation[0] for j in range(4)] == [6, 12, 18, 24]
    branches = []
    hooks = [
        model.get_submodule(f"aspp.{j}").register_forward_hook(lambda m, i, o: branches.append(o))
        for j in range(4)
    ]
    with torch.no_grad():
        out = model(torch.randn(1, 3, 65, 65))["out"]
    for hook in hooks:
        hook.remove()
    assert out.shape == (1, 21, 65, 65)  # upsampled to the input
    assert branches[0].shape[-2:] == (9, 9)  # 65 px at output stride 8
    summed = interpolate(sum(branches), size=(65, 65), mode="bilinear", align_corners=False)
    assert torch.allclose(out, summed, atol=1e-5)


def test_the_resnet101_backbone_is_torchvisions_made_atrous():
    ours = papers.build_model("deeplab_v2_resnet101", image_size=65).state_dict()
    theirs = torchvision.models.resnet101(replace_stride_with_dilation=[False, True, True]).state_dict()
    backbone = {k.removeprefix("backbone."): v.shape for k, v in ours.items() if k.startswith("backbone.")}
    assert backbone == {k: v.shape for k, v in theirs.items() if not k.startswith("fc.")}


def test_vgg16_aspp_branches_are_fc6_fc7_fc8_at_their_rates_on_deeplab_v1s_trunk():
    for variant, rates in (
        ("deeplab_v2_vgg16_aspp_l", [6, 12, 18, 24]),
        ("deeplab_v2_vgg16_aspp_s", [2, 4, 8, 12]),
    ):
        model = papers.build_model(variant, image_size=65)
        assert [model.get_submodule(f"aspp.{j}.fc6").dilation[0] for j in range(4)] == rates
        assert model.get_submodule("aspp.0.fc6").out_channels == 1024
        assert model.get_submodule("aspp.3.fc7").out_channels == 1024
        names = {name for name, _ in model.named_modules()}
        assert "backbone.conv5_3" in names and not {"backbone.fc6", "backbone.fc7", "backbone.fc8"} & names
        assert _dilations(model, "backbone.conv5") == [2, 2, 2]  # v1's atrous conv5
        with torch.no_grad():
            assert model.eval()(torch.randn(1, 3, 65, 65))["out"].shape == (1, 21, 65, 65)


def test_the_spec_checks_and_carries_the_crf():
    statuses = [c.status for c in papers.check("deeplab_v2")]
    assert statuses.count("pass") == 3 and "fail" not in statuses
    assert papers.expand_variant("deeplab_v2_resnet101").task.crf.iterations == 10


def test_max_fusion_upsamples_to_the_largest_map_and_keeps_the_per_pixel_maximum():
    large = torch.tensor([[[[1.0, 5.0], [3.0, -2.0]], [[0.0, 0.0], [9.0, 0.0]]]])  # 1×2×2×2
    small = torch.tensor([[[[2.0]], [[4.0]]]])  # 1×2×1×1: constant once upsampled
    expected = torch.tensor([[[[2.0, 5.0], [3.0, 2.0]], [[4.0, 4.0], [9.0, 4.0]]]])
    assert torch.equal(max_fuse([large, small]), expected)


def test_the_scaled_image_is_sized_as_caffes_interp_layer():
    assert [scaled_size(321, s) for s in (1.0, 0.75, 0.5)] == [321, 241, 161]
    assert [scaled_size(65, s) for s in (1.0, 0.75, 0.5)] == [65, 49, 33]


def test_msc_runs_one_network_at_three_scales_and_fuses_them_by_max():
    torch.manual_seed(0)
    model = build_multi_scale("deeplab_v2_vgg16_aspp_s", image_size=65, per_scale=True).eval()
    single = model.segmenter
    assert model.scales == [1.0, 0.75, 0.5]
    assert model.state_dict().keys() == single.state_dict().keys()  # the same weights, not copies
    images = torch.randn(1, 3, 65, 65)
    with torch.no_grad():
        result = model(images)
        by_hand = []
        for side in (65, 49, 33):
            x = interpolate(images, size=(side, side), mode="bilinear", align_corners=True)
            by_hand.append(single.network(x)["out"])
    assert [tuple(m.shape[-2:]) for m in result["scales"]] == [(9, 9), (7, 7), (5, 5)]
    fused = torch.maximum(
        by_hand[0],
        torch.maximum(*(interpolate(m, size=(9, 9), mode="bilinear") for m in by_hand[1:])),
    )
    expected = interpolate(fused, size=(65, 65), mode="bilinear")
    assert result["out"].shape == (1, 21, 65, 65)
    assert torch.allclose(result["out"], expected, atol=1e-5)


def test_papers_segment_msc_runs_the_specs_scales_and_refuses_a_paper_without_them(tmp_path, monkeypatch):
    assert papers.expand_variant("deeplab_v2_resnet101").task.msc_scales == [1.0, 0.75, 0.5]
    seen = []
    forward = MultiScaleSegmenter.forward

    def spy(self, images):
        seen.append(self.scales)
        return forward(self, images)

    monkeypatch.setattr(MultiScaleSegmenter, "forward", spy)
    picture = tmp_path / "scene.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(picture)
    runner = CliRunner()
    args = ["segment", "deeplab_v2_vgg16_aspp_s", str(picture), "--json"]
    single, fused = runner.invoke(cli, args), runner.invoke(cli, [*args, "--msc"])
    assert single.exit_code == 0 and fused.exit_code == 0, fused.output
    (one,), (many,) = json.loads(single.output), json.loads(fused.output)
    assert sum(one["histogram"].values()) == sum(many["histogram"].values()) == 40 * 40
    assert seen == [[1.0, 0.75, 0.5]]  # only the --msc run went through the three scales
    refused = runner.invoke(cli, ["segment", "deeplab_v1_largefov", str(picture), "--msc"])
    assert refused.exit_code == 2
    assert "--msc: deeplab_v1_largefov's paper uses no multi-scale inputs" in refused.output
    with pytest.raises(PapersError, match="no multi-scale inputs"):
        build_multi_scale("fcn32s")


def test_msc_refuses_a_non_segmenter_and_bad_scales():
    segmenter = papers.build_model("deeplab_v2_vgg16_aspp_s", image_size=33)
    with pytest.raises(PapersError, match="scale factors"):
        MultiScaleSegmenter(segmenter, scales=[1.0, 0.0])
    with pytest.raises(PapersError, match="segmenter"):
        MultiScaleSegmenter(torch.nn.Conv2d(3, 3, 1), [1.0])
