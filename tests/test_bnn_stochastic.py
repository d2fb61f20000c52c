"""BNN's stochastic binarization (Courbariaux, Hubara et al. 2016, Section 1.1, eq. 2): its mean is the
hard sigmoid mapped to [-1, 1], its gradient the sign's straight-through estimator, its draws repeat
with a seed, it runs in training mode only; the ``quantize_qnn`` setting puts it in the binary layers
and is refused where the activations are not binary."""

from __future__ import annotations

import pytest
import torch

import papers
from papers.errors import SpecError
from papers.methods import MethodContext
from papers_plugins.compression import low_bit
from papers_plugins.compression.binary import (
    BinaryConv2d,
    BinaryLinear,
    hard_sigmoid,
    sign_ste,
    stochastic_sign_ste,
)

pytestmark = pytest.mark.usefixtures("one_thread")

VARIANT = "binarized_nn-lenet5_caffe-stochastic"


def test_the_mean_of_many_draws_is_the_hard_sigmoid_mapped_to_minus_one_one():
    values = torch.linspace(-2, 2, 41)
    draws = 20_000
    samples = stochastic_sign_ste(values.expand(draws, -1), torch.Generator().manual_seed(0))
    assert set(samples.unique().tolist()) == {-1.0, 1.0}
    # the mean of 20,000 draws of ±1 has a standard deviation of at most 1/sqrt(20,000) ≈ 0.007:
    # 0.03 is over four of them
    torch.testing.assert_close(samples.mean(0), 2 * hard_sigmoid(values) - 1, rtol=0, atol=0.03)
    assert (samples[:, values >= 1] == 1).all() and (samples[:, values <= -1] == -1).all()


def test_the_gradient_is_the_signs_straight_through_estimator():
    values = torch.linspace(-2, 2, 41)
    stochastic, deterministic = values.clone().requires_grad_(), values.clone().requires_grad_()
    upstream = torch.randn(41, generator=torch.Generator().manual_seed(1))
    (stochastic_sign_ste(stochastic) * upstream).sum().backward()
    (sign_ste(deterministic) * upstream).sum().backward()
    assert torch.equal(stochastic.grad, deterministic.grad)
    assert torch.equal(stochastic.grad, upstream * (values.abs() <= 1))


def test_the_draws_repeat_with_a_seed_and_differ_without():
    values = torch.randn(1000, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(3)
    first = stochastic_sign_ste(values)
    torch.manual_seed(3)
    again = stochastic_sign_ste(values)
    assert torch.equal(first, again)
    assert not torch.equal(first, stochastic_sign_ste(values))
    seeded = [stochastic_sign_ste(values, torch.Generator().manual_seed(4)) for _ in range(2)]
    assert torch.equal(*seeded)


@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        (
            lambda **kw: BinaryConv2d(4, 6, 3, padding=1, inputs="binary", weight_scale=False, **kw),
            (2, 4, 5, 5),
        ),
        (lambda **kw: BinaryLinear(16, 6, inputs="binary", weight_scale=False, **kw), (3, 16)),
    ],
    ids=["conv", "linear"],
)
def test_a_stochastic_layer_draws_in_training_mode_and_is_the_sign_in_eval_mode(layer, shape):
    torch.manual_seed(5)
    stochastic = layer(stochastic=True, input_scale=False)
    plain = layer(input_scale=False)
    plain.load_state_dict(stochastic.state_dict())
    inputs = 0.5 * torch.randn(shape, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        stochastic.eval(), plain.eval()
        assert torch.equal(stochastic(inputs), plain(inputs))
        assert torch.equal(stochastic(inputs), stochastic(inputs))
        stochastic.train()
        torch.manual_seed(7)
        drawn = stochastic(inputs)
        assert not torch.equal(drawn, stochastic(inputs))
        torch.manual_seed(7)
        assert torch.equal(drawn, stochastic(inputs))


def test_the_setting_puts_stochastic_binary_layers_in_the_rewrite():
    flat = papers.expand_variant(VARIANT)
    binary = {node.name: node.args.get("stochastic") for node in flat.nodes if node.op.startswith("binary_")}
    assert binary == {"conv2": True, "fc1": True}
    model = papers.build_model(VARIANT)
    assert model.conv2.stochastic and model.fc1.stochastic


def test_stochastic_binarization_of_k_bit_activations_is_refused_naming_the_setting():
    settings = low_bit.QnnSettings(weight_bits=1, activation_bits=2, stochastic=True)
    with pytest.raises(SpecError, match="stochastic binarization is of binary activations") as caught:
        low_bit.qnn_rewrite(papers.expand_variant("lenet5_caffe"), settings)
    assert caught.value.field == "settings.stochastic"


def test_training_with_stochastic_inputs_moves_the_weights_and_leaves_a_deterministic_model(monkeypatch):
    images, labels = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    monkeypatch.setattr(
        "papers_plugins.compression.pruning.training_split", lambda data, shape: (images, labels)
    )
    model = papers.build_model(VARIANT)
    start = model.conv2.weight.detach().clone()
    settings = low_bit.QnnSettings(weight_bits=1, activation_bits=1, stochastic=True, epochs=1, batch_size=32)
    low_bit.quantize_apply(model, settings, MethodContext(flat=papers.expand_variant(VARIANT), data="x"))
    assert not torch.equal(start, model.conv2.weight) and torch.isfinite(model.conv2.weight).all()
    assert not model.training
    with torch.no_grad():
        assert torch.equal(model(images[:8]), model(images[:8]))
