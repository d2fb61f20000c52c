"""The op catalogue: every op builds through a graph, gives torch's outputs, and counts its multiply-adds."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from papers.build import build, trace
from papers.errors import GraphError
from papers.graph import FlatGraph, expand
from papers.layers import bilinear_, bilinear_kernel
from papers.ops import Catalogue, Op
from papers.spec import validate_spec
from tests.conftest import minimal_spec

CATALOGUE = Catalogue()


def flat_graph(nodes: list[dict[str, Any]], **graph: Any) -> FlatGraph:
    """A one-graph spec with these nodes (and inputs, outputs, init...) expanded."""
    data = minimal_spec(nodes=nodes, classifier=[], **graph)
    return expand(validate_spec(data), "net", {}, CATALOGUE)


def built(nodes: list[dict[str, Any]], **graph: Any) -> Any:
    return build(flat_graph(nodes, **graph), CATALOGUE)


def test_every_op_says_what_it_does():
    assert all(CATALOGUE[name].doc for name in CATALOGUE.names())


# --- multiply-adds ---------------------------------------------------------------------------


def test_a_module_op_counts_multiply_adds_unless_it_says_otherwise():
    assert Op("deconv", "torch.nn:ConvTranspose2d").counts_macs, "a plugin's layer is counted by default"
    assert CATALOGUE["conv_transpose2d"].counts_macs
    assert not CATALOGUE["relu"].counts_macs and not CATALOGUE["roi_align"].counts_macs


def test_conv_transpose2d_counts_cin_cout_k_k_h_w_over_groups():
    nodes = [
        {
            "name": "up",
            "op": "conv_transpose2d",
            "args": {"out_channels": 6, "kernel_size": 4, "stride": 2, "padding": 1, "groups": 2},
        }
    ]
    traced = trace(flat_graph(nodes, inputs={"image": [4, 10, 12]}), CATALOGUE, count_macs=True)
    assert traced.shapes["up"] == (1, 6, 20, 24)
    assert traced.macs["up"] == 4 * 6 * 4 * 4 * 10 * 12 // 2, "each input pixel meets a k x k kernel"


def _every_op_graph() -> FlatGraph:
    """One graph that uses every op of the catalogue (rois without a batch dimension)."""
    roi = {"output_size": 2, "spatial_scale": 1.0}
    nodes = [
        {"name": "conv", "op": "conv2d", "args": {"out_channels": 4, "kernel_size": 3, "padding": 1}},
        {"name": "bn", "op": "batchnorm2d"},
        {"name": "frozen", "op": "frozen_batchnorm2d"},
        {"name": "gn", "op": "group_norm", "args": {"num_groups": 2}},
        {"name": "lrn", "op": "lrn", "args": {"size": 3}},
        {"name": "relu", "op": "relu"},
        {"name": "relu6", "op": "relu6"},
        {"name": "leaky", "op": "leaky_relu", "args": {"negative_slope": 0.1}},
        {"name": "tanh", "op": "tanh"},
        {"name": "drop", "op": "dropout"},
        {"name": "drop2d", "op": "dropout2d"},
        {"name": "same", "op": "identity"},
        {"name": "gate", "op": "sigmoid"},
        {"name": "gated", "op": "mul", "in": ["same", "gate"]},
        {"name": "soft", "op": "softmax", "args": {"dim": 1}},
        {"name": "pool", "op": "maxpool2d", "args": {"kernel_size": 2, "return_indices": True}},
        {"name": "unpool", "op": "max_unpool2d", "in": ["pool", "pool.indices"], "args": {"kernel_size": 2}},
        {"name": "avg", "op": "avgpool2d", "args": {"kernel_size": 2}, "in": "soft"},
        {"name": "up", "op": "upsample", "args": {"scale_factor": 2, "mode": "bilinear"}},
        {
            "name": "deconv",
            "op": "conv_transpose2d",
            "in": "avg",
            "args": {"out_channels": 4, "kernel_size": 4, "stride": 2, "padding": 1},
        },
        {"name": "resized", "op": "resize_as", "in": ["avg", "image"]},
        {"name": "padded", "op": "pad", "in": "soft", "args": {"pad": [1, 1, 1, 1]}},
        {"name": "cropped", "op": "crop_as", "in": ["padded", "image"], "args": {"offset": 1}},
        {"name": "sum", "op": "add", "in": ["unpool", "up", "deconv", "resized", "cropped"]},
        {"name": "halved", "op": "scale", "args": {"other": 0.5}},
        {"name": "total", "op": "add_", "in": ["halved", "soft"]},
        {"name": "align", "op": "roi_align", "in": ["total", "rois"], "args": roi | {"sampling_ratio": 2}},
        {"name": "roipool", "op": "roi_pool", "in": ["total", "rois"], "args": roi},
        {
            "name": "psalign",
            "op": "ps_roi_align",
            "in": ["total", "rois"],
            "args": roi | {"sampling_ratio": 2},
        },
        {"name": "pspool", "op": "ps_roi_pool", "in": ["total", "rois"], "args": roi},
        {
            "name": "rois_cat",
            "op": "cat",
            "in": ["align", "roipool", "psalign", "pspool"],
            "args": {"dim": 1},
        },
        {"name": "gap", "op": "adaptive_avgpool2d", "args": {"output_size": 1}},
        {"name": "gmp", "op": "adaptive_maxpool2d", "args": {"output_size": 1}, "in": "rois_cat"},
        {"name": "pooled", "op": "add", "in": ["gap", "gmp"]},
        {"name": "flat", "op": "flatten", "args": {"start_dim": 1}},
        {"name": "bn1d", "op": "batchnorm1d"},
        {"name": "fc", "op": "linear", "args": {"out_features": 5}},
        {"name": "score", "op": "mean", "args": {"dim": 1}},
        {"name": "rows", "op": "flatten_anchors", "in": "gated", "args": {"values": 2}},
        {"name": "reorg", "op": "darknet_reorg", "in": "gated", "args": {"stride": 2}},
    ]
    outputs = [
        {"name": "reorg", "node": "reorg"},
        {"name": "score", "node": "score"},
        {"name": "gated", "node": "gated"},
        {"name": "rows", "node": "rows"},
    ]
    inputs = {"image": [4, 8, 8], "rois": [3, 5]}
    return flat_graph(nodes, inputs=inputs, unbatched=["rois"], outputs=outputs)


def test_the_every_op_graph_uses_every_op():
    assert {node.op for node in _every_op_graph().nodes} == set(CATALOGUE.names())


def test_ops_run_outside_the_flop_counter_would_count_nothing_inside_it():
    flat = _every_op_graph()
    fast = trace(flat, CATALOGUE, count_macs=True).macs
    every = Catalogue([dataclasses.replace(CATALOGUE[name], counts_macs=True) for name in CATALOGUE.names()])
    counted = trace(flat, every, count_macs=True).macs
    assert counted == fast
    assert {name for name, macs in fast.items() if macs} == {"conv", "deconv", "fc"}


# --- the new layers through a graph ------------------------------------------------------------

IMAGE = torch.randn(2, 3, 16, 16)


@pytest.mark.parametrize(
    "args",
    [
        {"scale_factor": 2},
        {"size": [20, 24], "mode": "bilinear", "align_corners": True},
        {"scale_factor": 0.5, "mode": "bilinear"},
    ],
)
def test_upsample_is_torchs_upsample(args):
    model = built([{"name": "up", "op": "upsample", "args": args}])
    assert torch.equal(model(IMAGE), nn.Upsample(**args)(IMAGE))
    assert not model.state_dict()


@pytest.mark.parametrize("args", [{}, {"mode": "nearest"}, {"align_corners": True}])
def test_resize_as_resizes_the_first_input_to_the_seconds_size(args):
    nodes = [
        {"name": "pool", "op": "maxpool2d", "args": {"kernel_size": 3}},
        {"name": "resized", "op": "resize_as", "in": ["pool", "image"], "args": args},
    ]
    model = built(nodes)
    pooled = F.max_pool2d(IMAGE, 3)
    expected = F.interpolate(pooled, size=(16, 16), mode=args.get("mode", "bilinear"), **_corners(args))
    assert torch.equal(model(IMAGE), expected)
    assert model(torch.randn(1, 3, 22, 10)).shape == (1, 3, 22, 10), "the size is read at run time"


def _corners(args: dict[str, Any]) -> dict[str, Any]:
    return {"align_corners": args["align_corners"]} if "align_corners" in args else {}


@pytest.mark.parametrize("offset", [3, [2, 4]])
def test_crop_as_crops_the_first_input_to_the_seconds_size_at_the_offset(offset):
    nodes = [
        {"name": "padded", "op": "pad", "args": {"pad": [3, 3, 3, 3]}},
        {"name": "cropped", "op": "crop_as", "in": ["padded", "image"], "args": {"offset": offset}},
    ]
    top, left = (offset, offset) if isinstance(offset, int) else offset
    expected = F.pad(IMAGE, [3, 3, 3, 3])[:, :, top : top + 16, left : left + 16]
    assert torch.equal(built(nodes)(IMAGE), expected)
    if offset == 3:
        assert torch.equal(built(nodes)(IMAGE), IMAGE), "FCN's crop undoes the padding"


def test_a_crop_outside_the_input_is_refused_naming_the_node():
    nodes = [
        {"name": "padded", "op": "pad", "args": {"pad": [1, 1, 1, 1]}},
        {"name": "cropped", "op": "crop_as", "in": ["padded", "image"], "args": {"offset": 3}},
    ]
    with pytest.raises(GraphError, match=r"node 'cropped' \(crop_as\) .*cannot crop 16 from 18 at offset 3"):
        trace(flat_graph(nodes), CATALOGUE)


def test_conv_transpose2d_infers_in_channels_and_has_torchs_parameters():
    args = {"out_channels": 5, "kernel_size": 4, "stride": 2, "padding": 1}
    model = built([{"name": "up", "op": "conv_transpose2d", "args": args}])
    assert model.up.in_channels == 3
    library = nn.ConvTranspose2d(3, **args)
    assert list(model.state_dict()) == [f"up.{key}" for key in library.state_dict()]
    expected = F.conv_transpose2d(IMAGE, model.up.weight, model.up.bias, stride=2, padding=1)
    assert torch.equal(model(IMAGE), expected)
    assert model(IMAGE).shape == (2, 5, 32, 32)


@pytest.mark.parametrize(("size", "output_size"), [(16, None), (15, [15, 15])])
def test_max_unpool2d_puts_values_back_at_the_pooling_indices(size, output_size):
    unpool_args = {"kernel_size": 2} | ({"output_size": output_size} if output_size else {})
    nodes = [
        {"name": "pool", "op": "maxpool2d", "args": {"kernel_size": 2, "return_indices": True}},
        {"name": "unpool", "op": "max_unpool2d", "in": ["pool", "pool.indices"], "args": unpool_args},
    ]
    model = built(nodes, inputs={"image": [3, size, size]})
    image = torch.randn(2, 3, size, size)
    pooled, indices = F.max_pool2d(image, 2, return_indices=True)
    expected = F.max_unpool2d(pooled, indices, 2, output_size=output_size)
    assert torch.equal(model(image), expected)
    assert expected.shape == (2, 3, size, size)


def test_frozen_batchnorm2d_has_torchvisions_state_and_starts_as_the_identity():
    from torchvision.ops.misc import FrozenBatchNorm2d

    model = built([{"name": "norm", "op": "frozen_batchnorm2d"}])
    library = FrozenBatchNorm2d(3)
    assert list(model.state_dict()) == [f"norm.{key}" for key in library.state_dict()]
    assert "norm.num_batches_tracked" not in model.state_dict()
    for key, value in library.state_dict().items():
        assert torch.equal(model.state_dict()[f"norm.{key}"], value), "initialised as torchvision does"
    for buffer in library.buffers():
        buffer.uniform_(0.5, 2.0)
    model.load_state_dict({f"norm.{key}": value for key, value in library.state_dict().items()})
    assert torch.allclose(model(IMAGE), library(IMAGE))


def test_group_norm_infers_num_channels_and_has_torchs_parameters():
    model = built([{"name": "norm", "op": "group_norm", "args": {"num_groups": 3}}])
    assert model.norm.num_channels == 3
    assert list(model.state_dict()) == [f"norm.{key}" for key in nn.GroupNorm(3, 3).state_dict()]
    expected = F.group_norm(IMAGE, 3, model.norm.weight, model.norm.bias)
    assert torch.equal(model(IMAGE), expected)


# --- RoI pooling -------------------------------------------------------------------------------

ROI_OPS = {
    "roi_pool": ("roi_pool", {"output_size": 3, "spatial_scale": 0.5}),
    "roi_align": (
        "roi_align",
        {"output_size": 3, "spatial_scale": 0.5, "sampling_ratio": 2, "aligned": True},
    ),
    "ps_roi_pool": ("ps_roi_pool", {"output_size": 2, "spatial_scale": 0.5}),
    "ps_roi_align": ("ps_roi_align", {"output_size": 2, "spatial_scale": 0.5, "sampling_ratio": 2}),
}
FEATURES = torch.randn(2, 8, 16, 16)
ROIS = torch.tensor([[0, 0.0, 0.0, 20.0, 24.0], [1, 4.0, 6.0, 30.0, 18.0], [1, 2.0, 2.0, 9.0, 9.0]])


@pytest.mark.parametrize("op", ROI_OPS)
def test_a_roi_op_is_torchvisions_module_on_meta_and_real_tensors(op):
    import torchvision.ops

    function, args = getattr(torchvision.ops, ROI_OPS[op][0]), ROI_OPS[op][1]
    layer = CATALOGUE[op].resolve()(**args)
    expected = function(FEATURES, ROIS, **args)
    assert torch.equal(layer(FEATURES, ROIS), expected)
    meta = layer(FEATURES.to("meta"), ROIS.to("meta"))
    assert meta.is_meta and meta.shape == expected.shape
    assert not layer.state_dict()


@pytest.mark.parametrize("op", ROI_OPS)
def test_a_roi_op_builds_through_a_graph_with_unbatched_rois(op):
    import torchvision.ops

    function, args = getattr(torchvision.ops, ROI_OPS[op][0]), ROI_OPS[op][1]
    nodes = [{"name": "pooled", "op": op, "in": ["image", "rois"], "args": args}]
    flat = flat_graph(nodes, inputs={"image": [8, 16, 16], "rois": [3, 5]}, unbatched=["rois"])
    traced = trace(flat, CATALOGUE, count_macs=True)
    expected = function(FEATURES, ROIS, **args)
    assert traced.shapes["pooled"] == expected.shape, "three rois, whatever the batch"
    assert traced.macs["pooled"] == 0
    assert torch.equal(build(flat, CATALOGUE)(FEATURES, ROIS), expected)


def test_torchvision_ops_imported_first_inside_a_build_works():
    """Importing torchvision.ops imports torch._dynamo, which the shape pass stands in for while it
    runs; every op's module is imported before the pass, so torchvision's import gets the real one."""
    code = (
        "import sys, torch\n"
        "from papers.build import build, trace\n"
        "from tests.test_ops import CATALOGUE, FEATURES, ROIS, flat_graph\n"
        "assert 'torchvision' not in sys.modules, 'the test must import torchvision.ops first in the build'\n"
        "nodes = [{'name': 'pooled', 'op': 'roi_align', 'in': ['image', 'rois'],\n"
        "          'args': {'output_size': 3, 'spatial_scale': 0.5, 'sampling_ratio': 2}}]\n"
        "flat = flat_graph(nodes, inputs={'image': [8, 16, 16], 'rois': [3, 5]}, unbatched=['rois'])\n"
        "assert trace(flat, CATALOGUE, count_macs=True).shapes['pooled'] == (3, 8, 3, 3)\n"
        "import torch._dynamo.utils, torchvision.ops\n"
        "assert torch._dynamo.disable.__module__.startswith('torch._dynamo'), 'the real dynamo'\n"
        "expected = torchvision.ops.roi_align(FEATURES, ROIS, 3, 0.5, 2)\n"
        "assert torch.equal(build(flat, CATALOGUE)(FEATURES, ROIS), expected)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)


# --- FCN's bilinear upsampling filters ---------------------------------------------------------


def _fcn_upsample_filt(size: int) -> torch.Tensor:
    """FCN's ``surgery.upsample_filt`` (github.com/shelhamer/fcn.berkeleyvision.org), in torch."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return (1 - (rows - center).abs() / factor) * (1 - (cols - center).abs() / factor)


def test_the_bilinear_kernel_is_fcns_closed_form():
    assert bilinear_kernel([4])[None].tolist() == [[0.25, 0.75, 0.75, 0.25]]
    assert bilinear_kernel([3]).tolist() == [0.5, 1.0, 0.5]
    for size in range(1, 17):
        assert torch.allclose(bilinear_kernel([size, size]), _fcn_upsample_filt(size).double())


def test_a_bilinear_init_rule_gives_each_channel_the_kernel_and_mixes_none():
    args = {"out_channels": 3, "kernel_size": 4, "stride": 2, "padding": 1, "bias": False}
    init = [{"op": "conv_transpose2d", "param": "weight", "fn": "bilinear"}]
    model = built([{"name": "up", "op": "conv_transpose2d", "args": args}], init=init)
    kernel = _fcn_upsample_filt(4).float()
    expected = torch.zeros(3, 3, 4, 4)
    for channel in range(3):
        expected[channel, channel] = kernel
    assert torch.equal(model.up.weight.detach(), expected)


def test_a_stride_two_bilinear_deconvolution_keeps_a_constant_image_constant_inside():
    args = {"out_channels": 3, "kernel_size": 4, "stride": 2, "padding": 1, "bias": False}
    init = [{"op": "conv_transpose2d", "param": "weight", "fn": "bilinear"}]
    model = built([{"name": "up", "op": "conv_transpose2d", "args": args}], init=init)
    out = model(torch.full((1, 3, 16, 16), 2.5))
    assert out.shape == (1, 3, 32, 32)
    assert torch.allclose(out[:, :, 1:-1, 1:-1], torch.tensor(2.5)), "one border pixel sees one input"


def test_a_bilinear_filter_per_channel_group_fills_every_channel():
    weight = bilinear_(torch.empty(5, 1, 3, 3))
    assert torch.equal(weight, _fcn_upsample_filt(3).float().expand(5, 1, 3, 3))


def test_a_bilinear_init_of_a_weight_that_mixes_channels_is_refused():
    with pytest.raises(ValueError, match="as many input as output channels"):
        bilinear_(torch.empty(4, 3, 4, 4))
    with pytest.raises(ValueError, match="convolution weight"):
        bilinear_(torch.empty(4))


def test_an_op_from_a_package_not_installed_names_the_package():
    from papers.errors import GraphError
    from papers.ops import Op

    op = Op("warp", "papers_no_such_package.layers:Warp", "module", {}, doc="a plugin's layer")
    with pytest.raises(GraphError, match="op 'warp' needs the 'papers_no_such_package' package"):
        op.resolve()
