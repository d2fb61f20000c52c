"""SPP-net (He et al. 2014): the pyramid pooling layer against the paper's own pooling rule, the
classifier at any input size, and windows pooled from one conv5 map as a direct crop would pool them."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import papers
from papers_plugins.detection.sppnet_layers import (
    SpatialPyramidPool,
    SpatialPyramidRoIPool,
    project_windows,
    pyramid_bins,
)

LEVELS = (6, 3, 2, 1)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def papers_level(features: torch.Tensor, n: int) -> torch.Tensor:
    """One pyramid level as Section 2.3 implements it: window ⌈a/n⌉, stride ⌊a/n⌋ on an a × a map."""
    a = features.shape[-1]
    return nn.functional.max_pool2d(features, math.ceil(a / n), a // n)


def test_the_pyramid_has_50_bins_and_gives_12800_values_on_zf5_conv5():
    assert pyramid_bins(LEVELS) == 50
    pooled = SpatialPyramidPool(LEVELS)(torch.randn(2, 256, 13, 13))
    assert pooled.shape == (2, 12_800)


def test_each_level_is_the_papers_window_and_stride_on_its_13x13_conv5():
    torch.manual_seed(0)
    features = torch.randn(1, 8, 13, 13)
    for n in LEVELS:
        expected = papers_level(features, n)
        assert expected.shape[-2:] == (n, n)
        assert torch.equal(nn.functional.adaptive_max_pool2d(features, n), expected)
    ours = SpatialPyramidPool(LEVELS)(features)
    assert torch.equal(ours, torch.cat([papers_level(features, n).flatten(1) for n in LEVELS], 1))


def test_the_papers_rule_loses_bins_at_other_sizes_where_adaptive_pooling_keeps_n_by_n():
    # a 10×10 conv5 (a 180×180 image in the paper): window 2, stride 1 gives 9×9 bins for n = 6
    features = torch.randn(1, 4, 10, 10)
    assert papers_level(features, 6).shape[-1] == 9
    assert SpatialPyramidPool(LEVELS)(features).shape == (1, 4 * 50)


def test_the_classifier_runs_at_any_input_size_with_the_same_output_shape():
    shapes = {}
    for size in (180, 224):
        model = papers.build_model("sppnet_zf5", device="meta", image_size=size)
        with torch.no_grad():
            shapes[size] = tuple(model(torch.empty(2, 3, size, size, device="meta")).shape)
    assert shapes == {180: (2, 1000), 224: (2, 1000)}


def test_windows_are_projected_onto_conv5_by_the_appendixs_rule():
    windows = torch.tensor([[0.0, 40, 0, 200, 100], [1.0, 5, 5, 20, 20], [0.0, 0, 0, 300, 300]])
    cells = project_windows(windows, 16, 14, 14)
    # left/top ⌊x/16⌋ + 1, right/bottom ⌈x/16⌉ − 1, inside the 14×14 map, at least one cell wide
    assert cells.tolist() == [
        [0.0, 3, 1, 12, 6],
        [1.0, 1, 1, 1, 1],
        [0.0, 1, 1, 13, 13],
    ]


def test_each_window_is_pooled_from_the_one_map_as_its_crop_would_be():
    torch.manual_seed(0)
    features = torch.randn(2, 6, 14, 14)
    windows = torch.tensor(
        [[0.0, 0, 0, 223, 223], [1.0, 30, 50, 150, 120], [0.0, 100, 10, 130, 200], [1.0, 64, 64, 66, 70]]
    )
    pooled = SpatialPyramidRoIPool(LEVELS, stride=16)(features, windows)
    assert pooled.shape == (4, 6 * 50)
    pyramid = SpatialPyramidPool(LEVELS)
    for row, cell in zip(pooled, project_windows(windows, 16, 14, 14).long().tolist(), strict=True):
        image, x1, y1, x2, y2 = cell
        crop = features[image : image + 1, :, y1 : y2 + 1, x1 : x2 + 1]
        assert torch.equal(row, pyramid(crop)[0])


def test_the_detector_gives_12800_d_windows_fc7_features_and_21_scores_for_any_number_of_windows():
    model = papers.build_model("sppnet_zf5_detector", device="meta", image_size=320)
    windows = torch.zeros(5, 5, device="meta")
    with torch.no_grad():
        features, scores = model(torch.empty(1, 3, 320, 320, device="meta"), windows)
    assert features.shape == (5, 4096) and scores.shape == (5, 21)
    assert model.fc6.in_features == 12_800


def test_bad_pyramid_levels_are_refused():
    with pytest.raises(ValueError, match="positive bin counts"):
        SpatialPyramidPool([6, 0])


def test_papers_detect_runs_the_detector_on_a_proposal_file_and_refuses_the_classifier(tmp_path):
    import json

    import numpy as np
    from click.testing import CliRunner
    from PIL import Image

    from papers.cli import cli

    picture = tmp_path / "scene.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(picture)
    windows = [[10.0, 10.0, 80.0, 85.0], [40.0, 20.0, 115.0, 88.0], [0.0, 0.0, 50.0, 45.0]]
    proposals = tmp_path / "proposals.json"
    proposals.write_text(json.dumps({"scene.png": windows}))
    runner = CliRunner()
    args = ["detect", "sppnet_zf5_detector", str(picture), "--proposals", str(proposals), "--json"]
    made = runner.invoke(cli, [*args, "-o", "box_score_thresh=0", "-o", "min_size=200"])
    assert made.exit_code == 0, made.output
    (result,) = json.loads(made.output)
    # no box regression in SPP-net's detection form: every detection is one of the windows
    assert result["boxes"] and all(
        any(np.allclose(box, window, atol=1e-3) for window in windows) for box in result["boxes"]
    )
    assert min(result["labels"]) >= 1 and max(result["labels"]) <= 20
    # with no score threshold each window survives once per class (3 windows, 20 classes, no overlap
    # kills a window of another class)
    assert len(result["boxes"]) <= 3 * 20 and len(result["boxes"]) >= 20
    refused = runner.invoke(cli, ["detect", "sppnet_zf5", str(picture)])
    assert refused.exit_code == 2 and "not a detector" in refused.output
