"""DeepLab v2: ASPP on ResNet-101 (atrous, output stride 8) and on DeepLab v1's VGG-16."""

from __future__ import annotations

import torch
import torchvision

import papers


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
    summed = torch.nn.functional.interpolate(
        sum(branches), size=(65, 65), mode="bilinear", align_corners=False
    )
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
    assert statuses.count("pass") == 2 and "fail" not in statuses
    assert papers.expand_variant("deeplab_v2_resnet101").task.crf.iterations == 10
