"""Attention transfer (``attention_transfer``): the activation-based attention map Σ_c |A_c|^p, the
ℓ2 distance of ℓ2-normalised maps weighted by β/2 beside the cross-entropy, the WRN teacher/student
pairs of the WRN spec's graph, paired maps of different sizes refused in one line, and a smoke of the
MNIST proxy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import yaml

import papers
import papers.registry
from papers.methods import variant_steps
from papers.registry import Registry
from papers_plugins.compression import attention, distillation
from tests.conftest import REPO
from tests.test_han2015 import registry_with

SPEC = REPO / "specs" / "compression" / "attention_transfer.yaml"

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_attention_map_sums_the_squared_activations_over_channels():
    activation = torch.tensor([[[[1.0, -2.0]], [[3.0, 0.0]]]])  # N=1, C=2, H=1, W=2
    assert attention.attention_map(activation).tolist() == [[10.0, 4.0]]
    assert attention.attention_map(activation, p=1).tolist() == [[4.0, 2.0]]


def test_the_loss_compares_normalised_maps_so_scale_and_channel_count_do_not_matter():
    generator = torch.Generator().manual_seed(0)
    teacher = torch.randn(4, 32, 8, 8, generator=generator)
    assert attention.attention_loss(3 * teacher, teacher).item() == pytest.approx(0.0, abs=1e-6)
    narrower = teacher[:, :16] * 0  # channels may differ; a map of zeros is as far as it gets
    q = F.normalize(attention.attention_map(teacher), dim=1)
    assert attention.attention_loss(narrower, teacher).item() == pytest.approx(q.norm(dim=1).mean().item())
    other = torch.randn(4, 16, 8, 8, generator=generator)
    expected = (
        (
            F.normalize(other.pow(2).sum(1).flatten(1), dim=1)
            - F.normalize(teacher.pow(2).sum(1).flatten(1), dim=1)
        )
        .norm(dim=1)
        .mean()
    )
    assert attention.attention_loss(other, teacher).item() == pytest.approx(expected.item(), rel=1e-6)


def test_the_criterion_adds_beta_over_two_times_the_layers_distances_to_the_cross_entropy():
    student_flat, teacher_flat = (
        papers.expand_variant("wrn_10_1_16px"),
        papers.expand_variant("wrn_10_2_16px"),
    )
    torch.manual_seed(0)
    student, teacher = papers.build_model("wrn_10_1_16px"), papers.build_model("wrn_10_2_16px").eval()
    (step,) = variant_steps("attention_transfer-wrn_10_1_16px")
    pairs = attention.resolved_pairs(student_flat, teacher_flat, step.settings)
    assert pairs == [
        ("layer1.0.add", "layer1.0.add"),
        ("layer2.0.add", "layer2.0.add"),
        ("layer3.0.add", "layer3.0.add"),
    ]
    images, labels = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    net_s = distillation.tapped(student_flat, [s for s, _ in pairs])
    net_s.load_state_dict(student.state_dict())
    net_t = distillation.tapped(teacher_flat, [t for _, t in pairs])
    net_t.load_state_dict(teacher.state_dict())
    distiller = distillation.Distiller(
        net_s, net_t, student_flat, teacher_flat, attention._Resolved(step.settings, pairs)
    )
    loss = attention.ATTENTION.build(distiller, None)(distiller(images), labels)
    with torch.no_grad():
        s_out, t_out = net_s(images), net_t(images)
    expected = F.cross_entropy(s_out["fc"], labels) + step.settings.beta / 2 * sum(
        attention.attention_loss(s_out[a], t_out[b]) for a, b in pairs
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_the_wrn_pairs_come_from_the_wrn_specs_graph():
    assert papers.measure("wrn_16_1").params == papers.measure("wrn_16_4", k=1).params
    assert papers.measure("wrn_40_2").params == papers.measure("wrn_40_4", k=2).params
    teachers = {v: variant_steps(v)[0].settings.teacher for v in (
        "attention_transfer-wrn_16_1-wrn_16_2", "attention_transfer-wrn_16_1-wrn_40_1",
        "attention_transfer-wrn_16_2-wrn_40_2",
    )}  # fmt: skip
    assert sorted(teachers.values()) == ["wrn_16_2", "wrn_40_1", "wrn_40_2"]


def spec_with(tmp_path, **settings) -> object:
    spec = yaml.safe_load(SPEC.read_text())
    spec["id"] = "looks"
    spec["graphs"] = {}
    base = {**spec["variants"][6], "id": "looks-wrn_16_1"}
    base["methods"][0]["settings"].update(settings)
    spec["variants"] = [base]
    path = tmp_path / "looks.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"teacher_layers": ["layer2", "layer2", "layer3"]},
            "the student's 'layer1' gives 32×32 maps and the teacher's 'layer2' 16×16",
        ),
        ({"layers": ["layer1", "fc", "layer3"]}, "'fc' of the student gives [10], not a map of channels"),
        ({"layers": ["layer9"]}, "the student has no node, group or feature stage 'layer9'"),
        (
            {"teacher": "lenet5_caffe"},
            "settings.teacher 'lenet5_caffe' takes [1, 28, 28] and the student [3, 32, 32]",
        ),
    ],
)
def test_pairs_that_cannot_be_compared_are_one_line_and_exit_2(settings, message, tmp_path, monkeypatch, run):
    path = spec_with(tmp_path, **settings)
    monkeypatch.setattr(Registry, "discover", classmethod(lambda cls: registry_with(path)))
    monkeypatch.setattr(papers.registry, "_current", None)
    result = run("build", "looks-wrn_16_1")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and str(path) in result.stderr
    assert message in result.stderr


@pytest.mark.parametrize("topic", ["distillation", "compression"])
def test_papers_list_by_topic_lists_the_paper(topic, run):
    assert "attention_transfer" in run("list", "--topic", topic).stdout


def test_the_proxy_compares_the_same_student_alone_and_taught():
    measured = distillation.compare_alone_and_distilled(
        "attention_transfer-wrn_10_1_16px", attention.attention_distil, seeds=(0,), epochs=1,
        teacher_epochs=1, limit=64,
    )  # fmt: skip
    assert len(measured["alone"]) == len(measured["distilled"]) == 1
    assert all(
        0 <= value <= 100 for value in (*measured["alone"], *measured["distilled"], measured["teacher"])
    )
