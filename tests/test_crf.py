"""The fully connected CRF: the exact mean field by hand, our permutohedral lattice against it and
against pydensecrf2 (the authors' code), and `papers segment --crf`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from papers.cli import cli
from papers.crf import dense_crf, exact_mean_field, pydensecrf_mean_field
from papers.errors import PapersError
from papers.lattice import Lattice
from papers.spec import DenseCRF


def _scene(size: int = 12, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    probabilities = rng.dirichlet(np.ones(classes), size=(size, size)).transpose(2, 0, 1)
    return image, probabilities.astype(np.float32)


def test_one_exact_step_is_the_mean_field_update_by_hand():
    image = np.array([[[0, 0, 0], [10, 0, 0]]], dtype=np.uint8)  # two pixels, 1 px and 10 levels apart
    p = np.array([[[0.7, 0.2]], [[0.3, 0.8]]], dtype=np.float32)  # 2 classes × 1 × 2
    settings = DenseCRF(
        appearance_weight=2.0, appearance_xy=1.0, appearance_rgb=10.0, smoothness_weight=1.0, iterations=1
    )
    k = 1.0 * math.exp(-1 / (2 * 9)) + 2.0 * math.exp(-1 / 2 - 100 / 200)
    expected = []
    for i, j in ((0, 1), (1, 0)):
        energy = [math.log(p[c, 0, i]) + k * p[c, 0, j] for c in range(2)]
        total = sum(math.exp(e) for e in energy)
        expected.append([math.exp(e) / total for e in energy])
    q = exact_mean_field(image, p, settings)
    assert np.abs(q[:, 0, :].T - np.array(expected)).max() <= 1e-6


def test_the_lattice_stays_within_its_stated_tolerance_of_the_exact_mean_field():
    weak = DenseCRF(
        appearance_weight=0.15, appearance_xy=5, appearance_rgb=13, smoothness_weight=0.1, iterations=3
    )
    for seed in range(3):
        image, p = _scene(seed=seed)
        exact, lattice = exact_mean_field(image, p, weak), dense_crf(image, p, weak)
        assert np.abs(exact - p).max() > 0.1  # the CRF moves the distributions
        assert np.abs(lattice - exact).max() <= 0.1  # measured: at most 0.074 over 20 seeds
        assert np.abs(lattice - exact).mean() <= 0.02  # measured: at most 0.016
        assert np.allclose(lattice.sum(0), 1.0, atol=1e-5)


@pytest.mark.parametrize("iterations, tolerance", [(1, 1e-5), (10, 2e-3)])
def test_our_lattice_gives_the_authors_mean_field(iterations, tolerance):
    pytest.importorskip("pydensecrf.densecrf")
    settings = DenseCRF(iterations=iterations)  # DeepLab's strong weights: w1 = 5, w2 = 3
    for seed in range(3):
        image, p = _scene(size=40, classes=5, seed=seed)
        ours, theirs = dense_crf(image, p, settings), pydensecrf_mean_field(image, p, settings)
        assert np.abs(ours - p).max() > 0.3  # the CRF moves the distributions
        # measured over 10 seeds: 3.8e-6 after one step (float rounding), 8.0e-4 after ten (amplified)
        assert np.abs(ours - theirs).max() <= tolerance


def test_the_lattice_filters_each_class_on_its_own_whatever_their_number():
    generator = torch.Generator().manual_seed(0)
    lattice = Lattice(torch.rand(300, 5, generator=generator) * 4)
    values = torch.rand(300, 40, generator=generator)  # 40: the general loop; 8: the unrolled one
    whole = lattice.filter(values)
    for block in range(0, 40, 8):
        assert torch.allclose(lattice.filter(values[:, block : block + 8]), whole[:, block : block + 8])
    assert torch.allclose(lattice.filter(values[:, :3]), whole[:, :3])  # padded to 8 inside
    assert (whole > 0).all()  # every point reaches itself


def test_the_filter_adds_its_scaled_result_to_out():
    generator = torch.Generator().manual_seed(1)
    lattice = Lattice(torch.rand(200, 2, generator=generator) * 6)
    values = torch.rand(200, 8, generator=generator)
    out = torch.ones(200, 8)
    assert lattice.filter(values, out=out, scale=2.5) is out
    assert torch.allclose(out, 1 + 2.5 * lattice.filter(values), atol=1e-6)


def test_a_far_point_changes_no_other_points_sums_whatever_the_keys_span():
    generator = torch.Generator().manual_seed(2)
    features = torch.rand(50, 5, generator=generator) * 3
    values = torch.rand(51, 8, generator=generator)
    near = Lattice(features).filter(values[:50])
    # a point 10^6 standard deviations away: keys too wide for 64 bits, packed in 128
    both = Lattice(torch.cat([features, torch.full((1, 5), 1e6)])).filter(values)
    assert torch.equal(both[:50], near)
    assert torch.allclose(both[50], both[50, 0] / values[50, 0] * values[50])  # it reaches only itself


def test_a_noisy_label_inside_a_uniform_region_takes_its_neighbours_label():
    image = np.full((16, 16, 3), 120, dtype=np.uint8)
    image[:, 8:] = 20  # two regions of different colour
    p = np.zeros((2, 16, 16), dtype=np.float32)
    p[0, :, :8], p[1, :, :8] = 0.8, 0.2
    p[0, :, 8:], p[1, :, 8:] = 0.2, 0.8
    p[:, 4, 3] = (0.35, 0.65)  # one wrong pixel in the left region
    settings = DenseCRF()  # DeepLab's w2 = 3, θγ = 3, 10 iterations; the registry's w1, θα, θβ
    for refine in (dense_crf, exact_mean_field):
        labels = refine(image, p, settings).argmax(0)
        assert labels[4, 3] == 0
        assert (labels[:, :8] == 0).all() and (labels[:, 8:] == 1).all()  # the colour edge holds


def test_bad_inputs_and_settings_are_refused():
    image, p = _scene()
    with pytest.raises(PapersError, match="C×H×W"):
        dense_crf(image, p[:, :5], DenseCRF())
    with pytest.raises(PapersError, match="uint8"):
        dense_crf(image.astype(np.float32), p, DenseCRF())
    with pytest.raises(PapersError, match="O\\(N²\\)"):
        exact_mean_field(np.zeros((70, 70, 3), np.uint8), np.full((2, 70, 70), 0.5, np.float32), DenseCRF())
    with pytest.raises(ValueError, match="appearance_xy"):
        DenseCRF(appearance_xy=-1.0)
    with pytest.raises(PapersError, match="standard deviations are too small"):
        dense_crf(image, p, DenseCRF(appearance_rgb=1e-7))
    with pytest.raises(PapersError, match="144 × C values, not \\(12, 3\\)"):
        Lattice(torch.zeros(144, 2)).filter(torch.zeros(12, 3))


def test_papers_segment_crf_refines_a_deeplab_variant_and_refuses_others(tmp_path):
    picture = tmp_path / "scene.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(picture)
    runner = CliRunner()
    made = runner.invoke(cli, ["segment", "deeplab_v1_largefov", str(picture), "--crf", "--json"])
    assert made.exit_code == 0, made.output
    (result,) = json.loads(made.output)
    assert sum(result["histogram"].values()) == 48 * 48
    refused = runner.invoke(cli, ["segment", "fcn32s", str(picture), "--crf"])
    assert refused.exit_code == 2
    assert "--crf: fcn32s's paper runs no CRF" in refused.output
