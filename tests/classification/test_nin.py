"""Network In Network (Lin et al. 2014): mlpconv layers, global average pooling, no fully connected layer."""

from __future__ import annotations

import torch

import papers


def test_builds_on_meta_and_the_static_check_passes():
    model = papers.build_model("nin_cifar10", device="meta")
    assert model(torch.empty(1, 3, 32, 32, device="meta")).shape == (1, 10)
    checks = papers.check("nin")
    assert not [c for c in checks if c.status == "fail"]
    static = [c for c in checks if c.status != "not_measurable"]
    assert [(c.metric, c.status) for c in static] == [("output_shape", "pass")]


def test_forward_on_one_cifar_image_gives_ten_scores():
    torch.manual_seed(0)
    model = papers.build_model("nin_cifar10").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_three_mlpconv_layers_of_one_convolution_and_two_1x1_convolutions_and_no_linear_layer():
    model = papers.build_model("nin_cifar10", device="meta")
    assert not [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    kernels = [m.kernel_size for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert kernels == [(5, 5), (1, 1), (1, 1), (5, 5), (1, 1), (1, 1), (3, 3), (1, 1), (1, 1)]
    relus = [m for m in model.modules() if isinstance(m, torch.nn.ReLU)]
    assert len(relus) == 9  # every layer of each micro network is rectified (equation 2)
    drops = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(drops) == 2  # after all but the last mlpconv layer


def test_max_pooling_halves_the_resolution_twice():
    m = papers.measure("nin_cifar10")
    assert m.node_shapes["pool1"] == [1, 96, 16, 16]
    assert m.node_shapes["pool2"] == [1, 192, 8, 8]


def test_scores_are_the_averages_of_the_last_class_maps():
    torch.manual_seed(0)
    model = papers.build_model("nin_cifar10").eval()
    maps = papers.build_model("nin_cifar10", features=["stage3"]).eval()
    maps.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        class_maps = maps(x)["stage3"]
        assert class_maps.shape == (2, 10, 8, 8)
        assert torch.allclose(model(x), class_maps.mean((2, 3)), atol=1e-6)


def test_feature_stages():
    model = papers.build_model("nin_cifar10", features=["stage1", "stage2", "stage3"], device="meta")
    out = model(torch.empty(1, 3, 32, 32, device="meta"))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "stage1": (1, 96, 16, 16),
        "stage2": (1, 192, 8, 8),
        "stage3": (1, 10, 8, 8),
    }


def test_num_classes_sets_the_number_of_class_maps():
    model = papers.build_model("nin_cifar10", num_classes=100, device="meta")
    assert model.get_submodule("cccp6").out_channels == 100
    assert model(torch.empty(1, 3, 32, 32, device="meta")).shape == (1, 100)
