"""Graphs that reuse graphs, modules shared across inputs, and ops and blocks with several outputs.

The proofs are torchvision's own detection pieces: its ResNet-50-FPN backbone and its RetinaNet
head load strictly into spec-built graphs (ResNet-50 taken from the ResNet spec by reference, one
head run on five levels with one set of weights) and give the same outputs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from papers.build import build, trace
from papers.errors import GraphError
from papers.graph import expand
from papers.load import load_spec_file
from papers.registry import get_registry
from papers.spec import validate_spec
from tests.conftest import minimal_spec
from tests.equivalence import compare_with_reference

SPECS = Path(__file__).parent / "specs"


def flat_of(file: str, graph: str, **params):
    registry = get_registry()
    spec = load_spec_file(SPECS / file)
    return expand(spec, graph, params, registry.catalogue, registry.library(spec))


def randomise_frozen_batch_norms(model: torch.nn.Module) -> None:
    """torchvision's FrozenBatchNorm2d keeps its statistics and affine terms as buffers."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, FrozenBatchNorm2d):
            n = module.weight.numel()
            module.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.copy_(torch.rand(n, generator=generator) - 0.5)


@pytest.mark.parametrize("norm", ["frozen_batchnorm2d", "batchnorm2d"])
def test_torchvisions_resnet50_fpn_backbone_loads_and_gives_the_same_five_maps(norm):
    from torchvision.models.detection import fasterrcnn_resnet50_fpn
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops.misc import FrozenBatchNorm2d

    torch.manual_seed(0)
    if norm == "frozen_batchnorm2d":  # as fasterrcnn_resnet50_fpn builds it for pretrained weights
        reference = resnet_fpn_backbone(
            backbone_name="resnet50", weights=None, norm_layer=FrozenBatchNorm2d, trainable_layers=3
        )
        randomise_frozen_batch_norms(reference)
    else:
        reference = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None).backbone
    flat = flat_of("fpn_demo.yaml", "backbone", image_size=96, norm=norm)
    ours = build(flat, get_registry().catalogue, device="meta")
    assert not any(name.startswith(("body.fc", "body.avgpool")) for name in ours.state_dict())
    compare_with_reference(ours, reference, [torch.randn(2, 3, 96, 96)])


def test_the_backbone_is_resnet50_by_reference_not_a_copy():
    spec = load_spec_file(SPECS / "fpn_demo.yaml")
    text = (SPECS / "fpn_demo.yaml").read_text()
    assert "graph: resnet.resnet" in text and "bottleneck" not in str(spec.blocks)
    flat = flat_of("fpn_demo.yaml", "backbone", image_size=64)
    convs = [n.name for n in flat.nodes if n.op == "conv2d" and n.name.startswith("body.")]
    assert len(convs) == 1 + 16 * 3 + 4  # ResNet-50's: the stem, 16 bottlenecks, 4 projections
    assert flat.classifier == ("body.fc",)  # the inlined graph's head, cut away by the pruning
    assert not any(n.name == "body.fc" for n in flat.nodes)


def test_torchvisions_retinanet_head_loads_and_gives_the_same_outputs_with_one_set_of_weights():
    from torchvision.models.detection.retinanet import RetinaNetHead

    torch.manual_seed(0)
    reference = RetinaNetHead(256, 9, 91)
    flat = flat_of("retinanet_demo.yaml", "head", size=32)
    ours = build(flat, get_registry().catalogue, device="meta")
    levels = [torch.randn(2, 256, 32 >> i, 32 >> i) for i in range(5)]
    compare_with_reference(
        ours,
        _ListInput(reference),
        levels,
        names={"cls_logits": "cls_logits", "bbox_regression": "bbox_regression"},
    )
    traced = trace(flat, get_registry().catalogue, count_macs=True)
    assert sum(traced.params.values()) == sum(p.numel() for p in reference.parameters())
    # MACs are counted on every level the shared head runs on, not once
    per_level = {n.name.split(".")[0]: traced.macs[n.name] for n in flat.nodes if n.name.endswith("conv.0.0")}
    assert per_level["classification_head"] == 4 * per_level["cls_p4"] > 0


class _ListInput(torch.nn.Module):
    """torchvision's head takes one list of maps; ours takes them as five inputs."""

    def __init__(self, head: torch.nn.Module):
        super().__init__()
        self.head = head

    def forward(self, *levels: torch.Tensor):
        return self.head(list(levels))

    def state_dict(self, *args, **kwargs):
        return self.head.state_dict(*args, **kwargs)


def test_a_segnet_style_block_gives_pooled_maps_and_indices_and_the_decoder_unpools_there():
    flat = flat_of("segnet_demo.yaml", "net")
    unpools = {n.name: n.inputs for n in flat.nodes if n.op == "max_unpool2d"}
    assert unpools == {
        "dec2.unpool": ("enc2.pool", "enc2.pool:indices"),
        "dec1.unpool": ("dec2.relu", "enc1.pool:indices"),
    }
    registry = get_registry()
    model = build(flat, registry.catalogue)
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, 5, 32, 32)
    # the decoder puts each value back where the encoder's pooling took it from
    pooled, indices = torch.nn.functional.max_pool2d(x, 2, 2, return_indices=True)
    back = torch.nn.functional.max_unpool2d(pooled, indices, 2, 2)
    assert ((back != 0).sum(dim=(2, 3)) <= 16 * 16).all()
    traced = trace(flat, registry.catalogue, count_macs=True)
    assert traced.shapes["enc1.pool:indices"] == (1, 16, 16, 16)
    assert traced.macs["dec1.conv"] == 16 * 16 * 9 * 32 * 32


def test_a_reused_graph_is_expanded_with_its_own_defaults_and_the_callers_args():
    resnext = get_registry().variants["resnext50_32x4d"]
    assert resnext[1].graph == "resnext"
    flat = flat_of("fpn_demo.yaml", "backbone", image_size=64, layers=[1, 1, 1, 1])
    assert next(n.name for n in flat.nodes if n.name.startswith("body.layer4")) == "body.layer4.0.conv1"


def _graph_spec(nodes, **extra):
    data = minimal_spec(nodes=nodes, **extra)
    return data


def _expand(data):
    registry = get_registry()
    spec = validate_spec(data)
    return expand(spec, "net", {}, registry.catalogue, registry.library(spec))


CONV = {"name": "conv", "op": "conv2d", "args": {"out_channels": 4, "kernel_size": 3, "padding": 1}}


@pytest.mark.parametrize(
    ("nodes", "extra", "message"),
    [
        (  # a shared module called on an input of another width
            [
                CONV,
                {
                    "name": "wide",
                    "op": "conv2d",
                    "in": "image",
                    "args": {"out_channels": 8, "kernel_size": 1},
                },
                {
                    "name": "again",
                    "op": "conv2d",
                    "in": "wide",
                    "shares": "conv",
                    "args": {"out_channels": 4, "kernel_size": 3, "padding": 1},
                },
            ],
            {},
            "sharing 'conv'",
        ),
        (
            [
                CONV,
                {
                    "name": "again",
                    "op": "conv2d",
                    "shares": "conv",
                    "args": {"out_channels": 5, "kernel_size": 3},
                },
            ],
            {},
            "whose arguments differ",
        ),
        ([CONV, {"name": "again", "op": "relu", "shares": "nowhere"}], {}, "'nowhere' names no node"),
        ([CONV, {"name": "r", "op": "relu", "in": "conv.indices"}], {}, "'conv.indices' names no node"),
        ([{"name": "body", "graph": "resnet.nosuch"}], {"uses": ["resnet"]}, "unknown graph 'resnet.nosuch'"),
        ([{"name": "body", "graph": "vgg.vgg"}], {}, "which `uses` does not list"),
        (
            [{"name": "body", "graph": "resnet.resnet", "args": {"depth": 50}}],
            {"uses": ["resnet"]},
            "has no parameter 'depth'",
        ),
    ],
)
def test_bad_reuse_sharing_and_items_are_one_clear_error(nodes, extra, message):
    data = minimal_spec(nodes=nodes)
    data.update(extra)
    data["graphs"]["net"].pop("classifier", None)
    registry = get_registry()
    with pytest.raises(GraphError, match=message):
        flat = _expand(data)
        trace(flat, registry.catalogue)


def test_an_unbatched_input_keeps_its_shape_and_a_batch_is_refused():
    from torchvision.ops import roi_align

    data = minimal_spec(
        inputs={"image": [3, 16, 16], "rois": [4, 5]},
        unbatched=["rois"],
        nodes=[
            {"name": "conv", "op": "conv2d", "args": {"out_channels": 4, "kernel_size": 3, "padding": 1}},
            {
                "name": "pool",
                "op": "roi_align",
                "in": ["conv", "rois"],
                "args": {"output_size": 2, "spatial_scale": 1.0, "sampling_ratio": 2},
            },
        ],
    )
    data["graphs"]["net"].pop("classifier")
    flat = _expand(data)
    registry = get_registry()
    traced = trace(flat, registry.catalogue)
    assert traced.shapes["rois"] == (4, 5) and traced.shapes["pool"] == (4, 4, 2, 2)
    model = build(flat, registry.catalogue)
    image = torch.randn(2, 3, 16, 16)
    rois = torch.tensor(
        [[0, 0, 0, 8, 8], [1, 2, 2, 10, 12], [0, 4, 4, 15, 15], [1, 0, 0, 3, 3]], dtype=torch.float
    )
    expected = roi_align(model.conv(image), rois, output_size=2, spatial_scale=1.0, sampling_ratio=2)
    assert torch.equal(model(image, rois), expected)
    data["graphs"]["net"]["unbatched"] = ["boxes"]
    with pytest.raises(GraphError, match="'boxes' is not an input"):
        _expand(data)


def test_function_nodes_carry_the_specs_names_in_the_generated_forward():
    model = build(
        flat_of("fpn_demo.yaml", "backbone", image_size=64), get_registry().catalogue, device="meta"
    )
    code = model.code
    assert "merge0 = " in code and "top_down0 = " in code
    assert "iadd" not in code and "add_1" not in code


def test_feature_stages_carry_their_channels_and_stride():
    import papers

    resnet = {f.name: (f.channels, f.stride) for f in papers.feature_info("resnet50")}
    assert resnet == {
        "stem": (64, 2),
        "stage1": (256, 4),
        "stage2": (512, 8),
        "stage3": (1024, 16),
        "stage4": (2048, 32),
    }
    # ResNeXt, WRN-50-2 and SENet take ResNet's stages by reference: the same names at the same strides
    for variant in ("resnext50_32x4d", "wide_resnet50_2", "seresnet50"):
        assert {f.name: f.stride for f in papers.feature_info(variant)} == {
            k: s for k, (_, s) in resnet.items()
        }
    cifar = papers.feature_info("wrn_28_10")
    assert [(f.name, f.stride) for f in cifar] == [("stage1", 1), ("stage2", 2), ("stage3", 4)]


def test_diagrams_draw_items_from_their_node_and_inlined_graphs_by_their_groups():
    from papers.diagram import view
    from papers.measure import measure_graph

    registry = get_registry()
    flat = flat_of("segnet_demo.yaml", "net")
    drawn = view(flat, "", measure_graph("segnet_demo", flat, registry.catalogue).node_shapes).text
    assert "enc1<br>block encoder" in drawn and ":" not in drawn.replace("flowchart TD", "")
    flat = flat_of("fpn_demo.yaml", "backbone", image_size=64)
    drawn = view(flat, "", measure_graph("fpn_backbone_demo", flat, registry.catalogue).node_shapes).text
    assert "body.layer4<br>3 × resnet.bottleneck" in drawn


def test_an_unbatched_input_read_as_a_batch_is_one_clear_error():
    data = minimal_spec(
        inputs={"image": [3, 16, 16], "rois": [4, 5]},
        unbatched=["rois"],
        nodes=[{"name": "conv", "op": "conv2d", "in": "rois", "args": {"out_channels": 4, "kernel_size": 3}}],
    )
    data["graphs"]["net"].pop("classifier")
    with pytest.raises(GraphError, match=r"node 'conv' \(conv2d\) fails on input \[4, 5\]"):
        trace(_expand(data), get_registry().catalogue)
