"""DenseNet: Table 2's parameter counts checked, torchvision's DenseNets load and compute the same."""

from __future__ import annotations

import pytest
import torch

import papers

pytest.importorskip("torchvision")

IMAGENET_VARIANTS = ["densenet121", "densenet169", "densenet201", "densenet264", "densenet161"]
CIFAR_VARIANTS = [
    "densenet_40_12",
    "densenet_100_12",
    "densenet_100_24",
    "densenet_bc_100_12",
    "densenet_bc_250_24",
    "densenet_bc_190_40",
]


@pytest.fixture(scope="module")
def checks():
    return papers.check("densenet")


def test_the_registry_lists_every_variant():
    ids = [v.id for v in papers.get_spec("densenet").variants]
    assert sorted(ids) == sorted(IMAGENET_VARIANTS + CIFAR_VARIANTS)


@pytest.mark.parametrize(
    ("variant", "stem_kernel", "classes"),
    [*((v, 7, 1000) for v in IMAGENET_VARIANTS), *((v, 3, 10) for v in CIFAR_VARIANTS)],
)
def test_every_variant_builds_on_the_meta_device(variant, stem_kernel, classes):
    model = papers.build_model(variant, device="meta")
    assert model.get_submodule("features.conv0").kernel_size == (stem_kernel, stem_kernel)
    assert model.get_submodule("classifier").out_features == classes


def test_no_check_fails_and_every_static_check_passes(checks):
    assert not [c for c in checks if c.status == "fail"]
    static = [c for c in checks if c.status != "not_measurable"]
    assert {c.variant for c in static if c.metric == "params"} == {*CIFAR_VARIANTS, "densenet201"}
    assert {c.variant for c in static if c.metric == "output_shape"} == {"densenet121", "densenet201"}
    assert all(c.status == "pass" for c in static), [c for c in static if c.status != "pass"]


def test_reported_errors_are_not_measurable_without_weights(checks):
    errors = [c for c in checks if c.metric in ("error", "top1_error", "top5_error")]
    assert {c.variant for c in errors} == {*CIFAR_VARIANTS, *IMAGENET_VARIANTS} - {"densenet161"}
    assert all(c.status == "not_measurable" for c in errors)


def test_imagenet_feature_stages_follow_timms_taps():
    model = papers.build_model(
        "densenet121", features=["stage1", "stage2", "stage3", "stage4", "stage5"], device="meta"
    ).eval()
    out = model(torch.empty(1, 3, 224, 224, device="meta"))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "stage1": (1, 64, 112, 112),
        "stage2": (1, 256, 56, 56),
        "stage3": (1, 512, 28, 28),
        "stage4": (1, 1024, 14, 14),
        "stage5": (1, 1024, 7, 7),
    }


def test_cifar_feature_stages_are_the_three_dense_blocks():
    model = papers.build_model("densenet_bc_100_12", features=["stage1", "stage2", "stage3"], device="meta")
    out = model.eval()(torch.empty(1, 3, 32, 32, device="meta"))
    # 2k = 24 channels in, 16 layers of k = 12 a block, halved by each transition
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "stage1": (1, 24 + 16 * 12, 32, 32),
        "stage2": (1, 108 + 16 * 12, 16, 16),
        "stage3": (1, 150 + 16 * 12, 8, 8),
    }


def test_each_layer_reads_the_block_input_and_every_earlier_layer():
    model = papers.build_model("densenet121", device="meta")
    block = "features.denseblock2"
    for i in range(1, 13):  # 128 channels enter block 2; each layer adds k = 32
        assert model.get_submodule(f"{block}.denselayer{i}.norm1").num_features == 128 + 32 * (i - 1)
    assert model.get_submodule("features.transition2.conv").out_channels == (128 + 12 * 32) // 2
    # the running concatenations are functions: no parameters, no state_dict entries
    assert not [k for k in model.state_dict() if "concat" in k]


def test_plain_densenet_has_no_bottleneck_and_no_compression():
    model = papers.build_model("densenet_40_12", device="meta")
    layer = model.get_submodule("features.denseblock1.denselayer1")
    assert layer.get_submodule("conv1").kernel_size == (3, 3)
    assert not hasattr(layer, "conv2")
    assert model.get_submodule("features.conv0").out_channels == 16
    assert model.get_submodule("features.transition1.conv").out_channels == 16 + 12 * 12


def test_dropout_follows_every_convolution_but_the_first_when_asked():
    def dropouts(**options):
        model = papers.build_model("densenet_bc_100_12", device="meta", **options)
        return [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]

    assert dropouts() == []
    # 3 blocks of 16 bottleneck layers (two convolutions each) and 2 transitions
    assert dropouts(drop_rate=0.2) == [0.2] * (3 * 16 * 2 + 2)


def test_num_classes_resets_the_head():
    model = papers.build_model("densenet_bc_100_12", num_classes=100, device="meta").eval()
    assert model.get_submodule("classifier").out_features == 100
    assert model(torch.empty(2, 3, 32, 32, device="meta")).shape == (2, 100)
