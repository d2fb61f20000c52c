"""The YOLO family: YOLO v1 (Redmon et al. 2016), YOLO9000 / YOLOv2 (Redmon & Farhadi 2017) and YOLOv3
(Redmon & Farhadi 2018): their networks' layer tables, the static checks, v1's loss against a hand
computation, the three decodings and the anchor clustering."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

import papers
from papers.darknet import darknet_model
from papers_plugins.detection.yolo_layers import (
    centred_iou,
    decode_yolo_v1,
    decode_yolo_v2,
    decode_yolov3,
    kmeans_anchors,
    wordtree_probabilities,
    wordtree_softmax,
    yolo_v1_grid,
    yolo_v1_loss,
)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _convolutions(model: torch.nn.Module) -> list[torch.nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]


@pytest.mark.parametrize("paper", ["yolo", "yolo9000", "yolov3"])
def test_every_static_check_of_the_paper_passes(paper):
    checks = papers.check(paper)
    static = [c for c in checks if c.metric in {"output_shape", "flops", "macs", "params"}]
    assert static and all(c.status in {"pass", "inconsistent"} for c in static), [
        (c.variant, c.metric, c.measured, c.status) for c in static
    ]


def test_yolo_v1_is_figure_3_24_convolutions_then_two_fully_connected_layers_and_fast_yolo_has_9():
    yolo = papers.build_model("yolo_v1", device="meta")
    convolutions = _convolutions(yolo)
    assert len(convolutions) == 24
    assert [c.kernel_size[0] for c in convolutions[2:6]] == [1, 3, 1, 3]  # 1×1 reductions, then 3×3
    assert convolutions[0].kernel_size == (7, 7) and convolutions[0].stride == (2, 2)
    assert convolutions[-3].stride == (2, 2) and convolutions[-1].out_channels == 1024
    linear = [m for m in yolo.modules() if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linear] == [4096, 7 * 7 * 30]
    leaky = [m for m in yolo.modules() if isinstance(m, torch.nn.LeakyReLU)]
    assert len(leaky) == 25 and {m.negative_slope for m in leaky} == {0.1}  # all but the last layer
    fast = papers.build_model("fast_yolo", device="meta")
    assert len(_convolutions(fast)) == 9
    assert [c.out_channels for c in _convolutions(fast)][:6] == [16, 32, 64, 128, 256, 512]


def test_darknet19_is_table_6_19_convolutions_5_poolings_with_batch_norm():
    model = papers.build_model("darknet19", device="meta")
    convolutions = _convolutions(model)
    assert len(convolutions) == 19
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model.modules()) == 5
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 18
    stage6 = [model.get_submodule(f"stage6.{i}.conv") for i in range(5)]
    assert [c.out_channels for c in stage6] == [1024, 512, 1024, 512, 1024]
    assert [c.kernel_size[0] for c in stage6] == [3, 1, 3, 1, 3]
    assert model.get_submodule("classifier").out_channels == 1000


def test_darknet53_is_table_1_52_convolutions_in_residual_stages_of_1_2_8_8_4_and_a_fc_layer():
    model = papers.build_model("darknet53", device="meta")
    assert len(_convolutions(model)) == 52
    assert sum(isinstance(m, torch.nn.Linear) for m in model.modules()) == 1
    flat = papers.expand_variant("darknet53")
    adds = [n.name for n in flat.nodes if n.name.endswith(".add")]
    per_stage = [sum(name.startswith(f"stage{s}.") for name in adds) for s in range(1, 6)]
    assert per_stage == [1, 2, 8, 8, 4]
    # Darknet's count, 2 operations per multiply-add: Darknet-19's 5.58 billion at 224 scales to the
    # 7.29 billion YOLOv3's Table 2 gives it at 256
    assert round(2 * papers.measure("darknet19", image_size=256).macs / 1e9, 2) == 7.29


def test_yolov2_passes_the_26x26x512_map_through_reorg_into_the_last_3x3_and_any_size_divisible_by_32():
    torch.manual_seed(0)
    model = papers.build_model("yolov2_voc", image_size=96).eval()
    seen = {}
    model.get_submodule("conv3.conv").register_forward_hook(lambda m, i, o: seen.update(conv3=i[0].shape))
    with torch.no_grad():
        out = model(torch.rand(1, 3, 96, 96))
    assert out.shape == (1, 125, 3, 3)
    assert seen["conv3"] == (1, 2048 + 1024, 3, 3)  # 512 · 2² reorganised channels, then conv2's 1024
    cfg = papers.build_model("yolov2_voc_darknet", device="meta")
    assert cfg.get_submodule("conv3.conv").in_channels == 64 * 4 + 1024


def test_yolov3_upsamples_twice_and_concatenates_the_26_and_52_stages():
    model = papers.build_model("yolov3_416", device="meta")
    assert model.get_submodule("head2.conv1.conv").in_channels == 256 + 512
    assert model.get_submodule("head3.conv1.conv").in_channels == 128 + 256
    assert [model.get_submodule(f"detect{s}").out_channels for s in (1, 2, 3)] == [255] * 3
    coco = papers.build_model("yolov3_416", device="meta", num_classes=20)
    assert coco.get_submodule("detect1").out_channels == 3 * 25


# --- YOLO v1's loss and decoding -------------------------------------------------------------


def _v1_output() -> torch.Tensor:
    """A 2 × 2 grid, B = 2, C = 2: rows of B × (x, y, √w, √h, confidence) then 2 class probabilities."""
    out = torch.zeros(1, 2, 2, 12)
    out[0, 0, 0, :5] = torch.tensor([0.5, 0.5, 0.2, 0.2, 0.8])  # a tiny box: low IoU
    out[0, 0, 0, 5:10] = torch.tensor([0.4, 0.6, 0.6, 0.6, 0.3])  # the responsible one
    out[0, 0, 0, 10:] = torch.tensor([0.7, 0.1])
    out[0, 1, 1, 4] = 0.4  # a confidence where there is no object
    out[0, 1, 0, 10:] = torch.tensor([0.9, 0.9])  # class probabilities of an empty cell: not penalised
    return out


def test_yolo_v1_loss_equals_equation_3_computed_by_hand():
    truth = {"boxes": torch.tensor([[10.0, 10.0, 40.0, 50.0]]), "labels": torch.tensor([1])}
    loss = yolo_v1_loss(_v1_output(), [truth], (100, 100))
    # the object: centre (0.25, 0.3), size 0.3 × 0.4 of the image, in cell (0, 0) at offset (0.5, 0.6)
    # predictor 1's box: centre (0.2, 0.3), 0.36 × 0.36: overlap 0.28 · 0.36, union 0.12 + 0.1296 − it
    iou = 0.28 * 0.36 / (0.12 + 0.1296 - 0.28 * 0.36)
    coordinates = 5 * ((0.4 - 0.5) ** 2 + (0.6 - 0.6) ** 2)
    sizes = 5 * ((0.6 - math.sqrt(0.3)) ** 2 + (0.6 - math.sqrt(0.4)) ** 2)
    confidence = (0.3 - iou) ** 2
    classes = (0.7 - 0.0) ** 2 + (0.1 - 1.0) ** 2
    no_object = 0.5 * (0.8**2 + 0.4**2)  # predictor 0 of the object's cell and cell (1, 1)
    expected = coordinates + sizes + confidence + classes + no_object
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    plain = yolo_v1_loss(_v1_output(), [truth], (100, 100), rescore=False)
    assert plain.item() == pytest.approx(expected - confidence + (0.3 - 1.0) ** 2, rel=1e-6)


def test_yolo_v1_loss_gives_gradients_only_where_equation_3_has_terms():
    out = _v1_output().requires_grad_()
    truth = {"boxes": torch.tensor([[10.0, 10.0, 40.0, 50.0]]), "labels": torch.tensor([1])}
    yolo_v1_loss(out, [truth], (100, 100)).backward()
    assert out.grad[0, 1, 0].abs().sum() == 0  # an empty cell's classes and zero confidences
    assert out.grad[0, 0, 0, :4].abs().sum() == 0  # a predictor not responsible: confidence only
    assert out.grad[0, 0, 0, 4] == pytest.approx(2 * 0.5 * 0.8)


def test_decoding_yolo_v1_scores_each_class_by_probability_times_confidence():
    out = torch.zeros(1, 2, 2, 12)
    out[0, 1, 0, :5] = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.9])
    out[0, 1, 0, 10:] = torch.tensor([0.2, 0.8])
    (found,) = decode_yolo_v1(out, (100, 200), score_thresh=0.5)
    # cell (row 1, column 0) of a 2 × 2 grid on 200 × 100 pixels; w = 0.5² of the width
    torch.testing.assert_close(found["boxes"], torch.tensor([[25.0, 62.5, 75.0, 87.5]]))
    assert found["labels"].tolist() == [1] and found["scores"].item() == pytest.approx(0.72)
    (every,) = decode_yolo_v1(out, (100, 200), score_thresh=0.1)
    assert sorted(every["labels"].tolist()) == [0, 1]


def test_the_grid_op_reshapes_the_last_layer_into_s_by_s_rows():
    flat = torch.arange(2 * 7 * 7 * 30, dtype=torch.float32).reshape(2, -1)
    grid = yolo_v1_grid(flat, 7)
    assert grid.shape == (2, 7, 7, 30) and grid[1, 0, 1, 0] == 7 * 7 * 30 + 30
    with pytest.raises(ValueError, match="7 × 7 grid"):
        yolo_v1_grid(torch.zeros(1, 100), 7)


def test_the_grid_op_reads_darknets_detection_layout_into_cell_rows():
    # S = 2, B = 2, C = 3: 4 · 3 class probabilities, 4 · 2 confidences, 4 · 2 · 4 coordinates
    flat = torch.arange(4 * 13, dtype=torch.float32).unsqueeze(0)
    grid = yolo_v1_grid(flat, 2, boxes=2, layout="darknet")
    cell = 3  # row 1, column 1
    probabilities = [cell * 3 + k for k in range(3)]
    confidences = [12 + cell * 2 + b for b in range(2)]
    boxes = [[20 + (cell * 2 + b) * 4 + k for k in range(4)] for b in range(2)]
    row = boxes[0] + [confidences[0]] + boxes[1] + [confidences[1]] + probabilities
    assert grid[0, 1, 1].tolist() == row


# --- YOLOv2 and YOLOv3 decoding --------------------------------------------------------------


def test_decoding_yolov2_puts_sigmoid_offsets_in_the_cell_and_scales_the_priors_by_exp():
    anchors = [[1.0, 2.0], [3.0, 1.5]]  # in cells of the map
    raw = torch.full((1, 2 * (5 + 3), 2, 2), -20.0)  # nothing anywhere
    # anchor 1 at row 0, column 1: tx = ty = 0 (σ = ½), tw = log 2, objectness and class 2 sure
    block = slice(8, 16)
    raw[0, block, 0, 1] = torch.tensor([0.0, 0.0, math.log(2.0), 0.0, 20.0, -20.0, -20.0, 20.0])
    (found,) = decode_yolo_v2(raw, anchors, (64, 64), score_thresh=0.5)
    # stride 32: centre ((1 + ½) · 32, (0 + ½) · 32) = (48, 16); size (3 · 2 · 32, 1.5 · 32) = 192 × 48,
    # clipped to the image
    torch.testing.assert_close(found["boxes"], torch.tensor([[0.0, 0.0, 64.0, 40.0]]))
    assert found["labels"].tolist() == [2] and found["scores"].item() == pytest.approx(1.0, abs=1e-6)
    neutral = decode_yolo_v2(torch.zeros(1, 16, 2, 2), anchors, (64, 64), score_thresh=0.0)[0]
    assert neutral["scores"].max().item() == pytest.approx(0.5 / 3)  # softmax of equal logits · σ(0)


def test_decoding_yolov3_scores_classes_independently_so_a_box_may_carry_two_labels():
    anchors = [[[10.0, 13.0]], [[30.0, 61.0]]]
    coarse, fine = torch.full((1, 1 * 7, 1, 1), -20.0), torch.full((1, 1 * 7, 2, 2), -20.0)
    coarse[0, :, 0, 0] = torch.tensor([0.0, 0.0, 0.0, 0.0, 20.0, 20.0, 20.0])  # both classes sure
    (found,) = decode_yolov3([coarse, fine], anchors, (32, 32), score_thresh=0.5)
    assert sorted(found["labels"].tolist()) == [0, 1]
    torch.testing.assert_close(found["boxes"][0], torch.tensor([11.0, 9.5, 21.0, 22.5]))
    neutral = decode_yolov3(
        [torch.zeros(1, 7, 1, 1), torch.zeros(1, 7, 2, 2)], anchors, (32, 32), score_thresh=0
    )
    assert len(neutral[0]["scores"]) > 0 and neutral[0]["scores"].max().item() == pytest.approx(0.25)


def test_decoding_suppresses_duplicates_of_one_class():
    out = torch.zeros(1, 2, 2, 12)
    out[0, 0, 0, :10] = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.9, 0.5, 0.5, 0.5, 0.5, 0.8])  # one box twice
    out[0, 0, 0, 10:] = torch.tensor([1.0, 0.0])
    (found,) = decode_yolo_v1(out, (100, 100), score_thresh=0.5)
    assert found["scores"].tolist() == pytest.approx([0.9])


def test_a_built_yolov3s_maps_decode_end_to_end():
    torch.manual_seed(0)
    model = papers.build_model("yolov3_416", image_size=64, num_classes=3).eval()
    with torch.no_grad():
        maps = model(torch.rand(1, 3, 64, 64))
    params = papers.get_spec("yolov3").graphs["yolov3"].params
    detections = decode_yolov3([maps[0], maps[1], maps[2]], params["anchors"], (64, 64), score_thresh=0.0)
    assert maps[3].shape == (1, 3 * (4 + 16 + 64), 8)
    assert detections[0]["boxes"].shape[1] == 4 and len(detections[0]["boxes"]) <= 100


# --- YOLO9000's WordTree ---------------------------------------------------------------------

# animal, object; animal's dog, cat; dog's terrier, husky (parents first, siblings consecutive)
TREE = [-1, -1, 0, 0, 2, 2]


def test_wordtree_takes_a_softmax_per_set_of_siblings_and_multiplies_down_the_path():
    logits = torch.tensor([[math.log(3.0), 0.0, math.log(4.0), 0.0, 0.0, math.log(2.0)]])
    conditional = wordtree_softmax(logits, TREE)
    torch.testing.assert_close(conditional, torch.tensor([[0.75, 0.25, 0.8, 0.2, 1 / 3, 2 / 3]]))
    absolute = wordtree_probabilities(conditional, TREE)
    # Pr(husky) = Pr(husky | dog) · Pr(dog | animal) · Pr(animal)
    torch.testing.assert_close(absolute, torch.tensor([[0.75, 0.25, 0.6, 0.15, 0.2, 0.4]]))


def test_yolo9000s_head_scores_tree_nodes_by_their_path_probability():
    raw = torch.full((1, 5 + len(TREE), 1, 1), 0.0)
    raw[0, 4] = 20.0  # an object, surely
    (found,) = decode_yolo_v2(raw, [[1.0, 1.0]], (32, 32), score_thresh=0.2, tree=TREE)
    # equal logits: animal and object ½ each, dog and cat ¼, terrier and husky ⅛
    assert sorted(found["labels"].tolist()) == [0, 1, 2, 3]
    assert sorted(found["scores"].tolist()) == pytest.approx([0.25, 0.25, 0.5, 0.5], abs=1e-6)
    assert papers.build_model("yolo9000", device="meta").get_submodule("detector").out_channels == 28269


@pytest.mark.parametrize(
    ("parents", "message"),
    [([0, -1], "come before it"), ([-1, 0, -1, 0], "consecutive"), ([-1], "for a tree")],
)
def test_a_tree_whose_siblings_or_parents_are_out_of_order_is_refused(parents, message):
    with pytest.raises(ValueError, match=message):
        wordtree_softmax(torch.zeros(1, 2 if len(parents) == 1 else len(parents)), parents)


# --- anchors ---------------------------------------------------------------------------------


def test_kmeans_with_the_iou_distance_recovers_synthetic_box_shapes():
    rng = np.random.default_rng(0)
    shapes = np.array([[20.0, 40.0], [100.0, 60.0], [250.0, 300.0]])
    sizes = np.concatenate([s * rng.uniform(0.9, 1.1, size=(200, 2)) for s in shapes])
    centroids, mean_iou = kmeans_anchors(sizes, 3, seed=1)
    np.testing.assert_allclose(centroids, shapes, rtol=0.03)
    assert mean_iou > 0.85
    # the distance is 1 − IoU of centred boxes, not Euclidean
    assert centred_iou(np.array([[2.0, 2.0]]), np.array([[1.0, 4.0]]))[0, 0] == pytest.approx(2 / 6)


@pytest.mark.parametrize(
    ("sizes", "message"),
    [
        (np.ones((4, 3)), "pairs"),
        (np.array([[1.0, 2.0], [-1.0, 2.0]]), "positive"),
        (np.ones((9, 2)), "distinct"),
    ],
)
def test_kmeans_refuses_what_is_not_k_distinct_positive_pairs(sizes, message):
    with pytest.raises(ValueError, match=message):
        kmeans_anchors(sizes, 3)


# --- the authors' Darknet cfg files, built by the registry's importer --------------------------


def _conv(filters: int, size: int = 3, stride: int = 1, *, bn: bool = True) -> str:
    norm = "batch_normalize=1\n" if bn else ""
    act = "leaky" if bn else "linear"
    return (
        f"[convolutional]\n{norm}filters={filters}\nsize={size}\nstride={stride}\npad=1\nactivation={act}\n"
    )


def _darknet19_body() -> list[str]:
    layers = []
    for stage in [[32], [64], [128, 64, 128], [256, 128, 256], [512, 256, 512, 256, 512]]:
        layers += [_conv(f, 3 if i % 2 == 0 else 1) for i, f in enumerate(stage)]
        layers.append("[maxpool]\nsize=2\nstride=2\n")
    return layers + [_conv(f, 3 if i % 2 == 0 else 1) for i, f in enumerate([1024, 512, 1024, 512, 1024])]


def _yolo_voc_cfg(size: int, *, reduced: bool = True) -> str:
    """The authors' cfg/yolo-voc.cfg (YOLOv2 on VOC, with its 64-filter passthrough), compactly; not
    ``reduced``: their yolo-voc.2.0.cfg, the paper's passthrough of all 512 channels."""
    head = [_conv(1024), _conv(1024), "[route]\nlayers=-9\n"]
    head += [_conv(64, 1), "[reorg]\nstride=2\n", "[route]\nlayers=-1,-4\n"] if reduced else []
    head += [] if reduced else ["[reorg]\nstride=2\n", "[route]\nlayers=-1,-3\n"]
    head += [_conv(1024), _conv(125, 1, bn=False)]
    anchors = "1.3221,1.73145,3.19275,4.00944,5.05587,8.09892,9.47112,4.84053,11.2364,10.0071"
    region = f"[region]\nanchors={anchors}\nclasses=20\ncoords=4\nnum=5\n"
    return "\n".join([f"[net]\nwidth={size}\nheight={size}\nchannels=3\n", *_darknet19_body(), *head, region])


def _fast_yolo_cfg(size: int) -> str:
    """The authors' YOLO v1-era cfg/yolo-tiny.cfg: nine convolutions without batch norm, three
    connected layers."""
    plain = "[convolutional]\nfilters={}\nsize=3\nstride=1\npad=1\nactivation=leaky\n"
    layers = []
    for filters in [16, 32, 64, 128, 256, 512]:
        layers += [plain.format(filters), "[maxpool]\nsize=2\nstride=2\n"]
    layers += [plain.format(1024)] * 3
    layers += ["[connected]\noutput=256\nactivation=linear\n", "[connected]\noutput=4096\nactivation=leaky\n"]
    layers += ["[dropout]\nprobability=.5\n", "[connected]\noutput=1470\nactivation=linear\n"]
    layers.append("[detection]\nclasses=20\ncoords=4\nside=7\nnum=2\n")
    return "\n".join([f"[net]\nwidth={size}\nheight={size}\nchannels=3\n", *layers])


def _yolov3_cfg(size: int) -> str:
    """The authors' cfg/yolov3.cfg compactly: Darknet-53 (layers 0-74), then the three heads, whose
    routes name layers 61 and 36 (the last residual blocks at strides 16 and 8)."""
    layers = [_conv(32)]
    for width, blocks in zip([64, 128, 256, 512, 1024], [1, 2, 8, 8, 4], strict=True):
        layers.append(_conv(width, 3, 2))
        for _ in range(blocks):
            layers += [_conv(width // 2, 1), _conv(width), "[shortcut]\nfrom=-3\nactivation=linear\n"]
    anchors = "10,13,16,30,33,23,30,61,62,45,59,119,116,90,156,198,373,326"
    for scale, (filters, mask, earlier) in enumerate(
        [(512, "6,7,8", None), (256, "3,4,5", 61), (128, "0,1,2", 36)]
    ):
        if scale:
            layers += ["[route]\nlayers=-4\n", _conv(filters, 1), "[upsample]\nstride=2\n"]
            layers.append(f"[route]\nlayers=-1,{earlier}\n")
        layers += [
            _conv(filters, 1),
            _conv(2 * filters),
            _conv(filters, 1),
            _conv(2 * filters),
            _conv(filters, 1),
        ]
        layers += [_conv(2 * filters), _conv(255, 1, bn=False)]
        layers.append(f"[yolo]\nmask={mask}\nanchors={anchors}\nclasses=80\nnum=9\n")
    return "\n".join([f"[net]\nwidth={size}\nheight={size}\nchannels=3\n", *layers])


def _copy_darknet_into(ours: torch.nn.Module, variant: str, theirs: torch.nn.Module) -> None:
    """Darknet's convolutional and connected layers in layer order into ours in graph order, batch
    norms with them."""
    flat = papers.expand_variant(variant, image_size=64)
    names = [n.name for n in flat.nodes if n.op in ("conv2d", "linear")]
    layers = [name for name, m in theirs.named_modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    layers.sort(key=lambda name: int(name[5:].split(".")[0]))
    assert len(names) == len(layers)
    for name, layer in zip(names, layers, strict=True):
        mine, source = ours.get_submodule(name), theirs.get_submodule(layer)
        assert mine.weight.shape == source.weight.shape, name
        pairs = [(mine, source)]
        if name.endswith(".conv") and hasattr(theirs.get_submodule(layer.rsplit(".", 1)[0]), "bn"):
            pairs.append((ours.get_submodule(name[:-5] + ".bn"), theirs.get_submodule(layer[:-5] + ".bn")))
        for module, reference in pairs:
            for key, value in reference.state_dict().items():
                module.state_dict()[key].copy_(value)


def _randomised(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    return model.eval()


@pytest.mark.parametrize(
    ("variant", "cfg", "pairs"),
    [
        ("yolov2_voc_darknet", _yolo_voc_cfg, [("output", "region31")]),
        ("yolov2_voc", functools.partial(_yolo_voc_cfg, reduced=False), [("output", "region30")]),
        ("fast_yolo", _fast_yolo_cfg, [("output", "detection20")]),
        ("yolov3_416", _yolov3_cfg, [("scale1", "yolo82"), ("scale2", "yolo94"), ("scale3", "yolo106")]),
    ],
)
def test_the_spec_is_the_authors_darknet_network_weight_for_weight(tmp_path, variant, cfg, pairs):
    torch.manual_seed(0)
    path = tmp_path / f"{variant}.cfg"
    path.write_text(cfg(64))
    theirs = _randomised(darknet_model(path), 1)
    ours = papers.build_model(variant, image_size=64).eval()
    with torch.no_grad():
        _copy_darknet_into(ours, variant, theirs)
        image = torch.rand(1, 3, 64, 64)
        mine, reference = ours(image), theirs(image)
    for name, head in pairs:
        got = mine if isinstance(mine, torch.Tensor) else getattr(mine, name)
        expected = reference if isinstance(reference, torch.Tensor) else getattr(reference, head)
        if expected.dim() == 2:  # YOLO v1's 1470 values, in Darknet's order, as the 7 × 7 × 30 grid
            expected = yolo_v1_grid(expected, 7, layout="darknet")
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_papers_detect_decodes_yolov2_and_scales_the_boxes_back_to_each_image(tmp_path):
    import json

    from click.testing import CliRunner
    from PIL import Image

    from papers.cli import cli
    from papers_plugins.detection.yolo_layers import decode_yolo_v2, yolo_detector

    model = yolo_detector("yolov2_voc", 2, weights=None, options={"image_size": 128, "score_thresh": 0.01})
    image = torch.rand(3, 64, 256)  # resized to 128 × 128: boxes scale by 2 across, 0.5 down
    with torch.no_grad():
        (found,) = model([image])
        resized = torch.nn.functional.interpolate(image[None], size=(128, 128), mode="bilinear")
        anchors = model.decode.keywords["anchors"]
        raw = model.network(resized)
        raw = raw[0] if isinstance(raw, tuple) else raw
        (direct,) = decode_yolo_v2(raw, anchors, (128, 128), score_thresh=0.01)
    assert torch.allclose(found["boxes"], direct["boxes"] * torch.tensor([2.0, 0.5, 2.0, 0.5]))
    assert torch.equal(found["labels"], direct["labels"] + 1) and model.label_names[1] == "aeroplane"
    picture = tmp_path / "scene.png"
    Image.fromarray((np.random.default_rng(0).random((60, 90, 3)) * 255).astype(np.uint8)).save(picture)
    args = ["detect", "yolov2_voc", str(picture), "--json", "-o", "image_size=128", "-o", "score_thresh=0"]
    made = CliRunner().invoke(cli, args)
    assert made.exit_code == 0, made.output
    (result,) = json.loads(made.output)
    assert result["boxes"] and set(result["label_names"]) <= set(model.label_names[1:])
    assert all(0 <= x1 <= x2 <= 90 and 0 <= y1 <= y2 <= 60 for x1, y1, x2, y2 in result["boxes"])
    refused = CliRunner().invoke(cli, ["detect", "darknet19", str(picture)])
    assert refused.exit_code == 2 and "not a detector" in refused.output
