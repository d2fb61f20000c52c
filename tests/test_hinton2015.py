"""Hinton, Vinyals and Dean 2015 (``hinton2015``): the soft-target loss at temperature T with its T²
scaling and the weight alpha against the labels; the student (a method variant's base) distilled from
the teacher its settings name; a teacher whose classes or input are not the student's refused in one
line; the criterion refusing a model without a teacher; the topics; a smoke of the MNIST proxy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import yaml

import papers
import papers.registry
from papers.errors import PapersError
from papers.methods import MethodContext, variant_steps
from papers.recipe import RecipeError, get_criterion
from papers.registry import Registry
from papers_plugins.compression import distillation
from tests.conftest import REPO
from tests.test_han2015 import registry_with

SPEC = REPO / "specs" / "compression" / "hinton2015.yaml"

pytestmark = pytest.mark.usefixtures("one_thread")


# -- the loss ---------------------------------------------------------------------------------------


def written_out(student, teacher, labels, temperature, alpha):
    """Section 2's objective written out: the cross-entropy to the teacher's soft targets, less their
    entropy, times T², weighted against the labels' cross-entropy."""
    p_teacher = torch.softmax(teacher / temperature, -1)
    log_student = torch.log_softmax(student / temperature, -1)
    soft = (p_teacher * (torch.log(p_teacher) - log_student)).sum(-1).mean()
    hard = -torch.log_softmax(student, -1)[torch.arange(len(labels)), labels].mean()
    return alpha * temperature**2 * soft + (1 - alpha) * hard


@pytest.mark.parametrize(("temperature", "alpha"), [(1.0, 1.0), (20.0, 0.9), (4.0, 0.5), (3.0, 0.0)])
def test_the_soft_target_loss_is_the_papers_weighted_objective(temperature, alpha):
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(8, 10, generator=generator), 3 * torch.randn(8, 10, generator=generator)
    labels = torch.randint(0, 10, (8,), generator=generator)
    loss = distillation.soft_target_loss(student, teacher, labels, temperature, alpha)
    assert loss.item() == pytest.approx(
        written_out(student, teacher, labels, temperature, alpha).item(), rel=1e-5
    )


def test_the_t_squared_scaling_keeps_the_soft_gradients_scale_as_t_grows():
    """At high T the soft gradient is (z_s - z_t) / (N T²) without the T² (Section 2.1); with it, the
    gradients at T = 20 and T = 80 are nearly the same, and both approach logit matching."""
    generator = torch.Generator().manual_seed(1)
    teacher = torch.randn(4, 10, generator=generator)
    teacher -= teacher.mean(-1, keepdim=True)
    gradients = []
    for temperature in (20.0, 80.0):
        student = torch.randn(4, 10, generator=torch.Generator().manual_seed(2))
        student -= student.mean(-1, keepdim=True)
        student.requires_grad_(True)
        distillation.soft_target_loss(
            student, teacher, torch.zeros(4, dtype=torch.long), temperature, 1.0
        ).backward()
        gradients.append(student.grad)
    assert torch.allclose(gradients[0], gradients[1], rtol=0.05, atol=2e-3)
    matching = (student.detach() - teacher) / (10 * 4)  # N = 10 classes, mean over 4 images
    assert torch.allclose(gradients[1], matching, rtol=0.05, atol=2e-3)


def test_the_criterion_refuses_a_model_without_its_teacher():
    criterion = get_criterion("soft_targets")
    with pytest.raises(RecipeError) as refused:
        criterion.build(papers.build_model("lenet300_100"), None)
    assert "needs a distillation method variant" in refused.value.message


# -- the student and its teacher --------------------------------------------------------------------


def test_the_method_variant_distils_its_base_from_the_teacher_it_names():
    (step,) = variant_steps("hinton2015-mlp_800")
    assert step.method.name == "knowledge_distillation"
    assert (step.settings.teacher, step.settings.temperature) == ("mlp_1200_dropout", 20.0)
    assert papers.measure("hinton2015-mlp_800").params == papers.measure("mlp_800").params == 1_276_810
    assert papers.measure("mlp_1200_dropout").params == 2_395_210


def test_distilling_moves_the_student_towards_the_teacher_and_leaves_the_teacher_alone():
    flat_student, flat_teacher = (
        papers.expand_variant("lenet300_100"),
        papers.expand_variant("mlp_1200_dropout"),
    )
    torch.manual_seed(0)
    student, teacher = papers.build_model("lenet300_100"), papers.build_model("mlp_1200_dropout").eval()
    images = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    labels = torch.randint(0, 10, (64,), generator=torch.Generator().manual_seed(4))
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}

    def gap():
        with torch.no_grad():
            return F.kl_div(
                F.log_softmax(student.eval()(images) / 4, -1), F.log_softmax(teacher(images) / 4, -1),
                log_target=True, reduction="batchmean",
            ).item()  # fmt: skip

    before = gap()
    settings = distillation.SoftTargetSettings(
        teacher="mlp_1200_dropout", temperature=4.0, alpha=1.0, epochs=30, lr=0.05
    )
    distillation.distil_into(
        student, teacher, flat_student, flat_teacher, settings, distillation.SOFT_TARGETS,
        lambda: [(images, labels)],
    )  # fmt: skip
    assert gap() < 0.5 * before
    assert all(torch.equal(teacher.state_dict()[k], v) for k, v in teacher_before.items())


def test_the_apply_step_trains_the_teacher_then_the_student_on_the_data():
    (step,) = variant_steps("hinton2015-lenet300_100")
    settings = step.settings.model_copy(update={"epochs": 1, "teacher_epochs": 1, "batch_size": 256})
    torch.manual_seed(0)
    model = papers.build_model("lenet300_100")
    before = model.fc1.weight.detach().clone()
    context = MethodContext(flat=papers.expand_variant("lenet300_100"), data="builtin:mnist5k")
    out = step.method.apply(model, settings, context)
    assert out is model and not torch.equal(before, model.fc1.weight)


def test_distillation_without_data_is_refused():
    (step,) = variant_steps("hinton2015-lenet300_100")
    context = MethodContext(flat=papers.expand_variant("lenet300_100"))
    with pytest.raises(PapersError, match="give --data"):
        step.method.apply(papers.build_model("lenet300_100"), step.settings, context)


# -- a teacher that does not fit: one line, exit 2 ----------------------------------------------------


def spec_with_teacher(tmp_path, teacher_args: dict, teacher: str = "teacher_mlp") -> object:
    spec = yaml.safe_load(SPEC.read_text())
    spec.update(id="distil", results=[])
    spec["variants"] = [
        {"id": "teacher_mlp", "name": "t", "graph": "mlp", "args": teacher_args},
        {"id": "student_mlp", "name": "s", "graph": "mlp", "args": {"hidden": 30}},
        {
            "id": "distil-student_mlp",
            "name": "d",
            "base": "student_mlp",
            "methods": [
                {
                    "name": "knowledge_distillation",
                    "settings": {"teacher": teacher, "temperature": 2.0, "alpha": 0.5},
                }
            ],
        },
    ]
    path = tmp_path / "distil.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("args", "teacher", "message"),
    [
        ({"hidden": 50, "num_classes": 5}, "teacher_mlp", "gives 5 classes and the student 10"),
        ({"hidden": 50}, "lenet5", "takes [1, 32, 32] and the student [1, 28, 28]"),
        ({"hidden": 50}, "no_such_net", "settings.teacher: no variant 'no_such_net'"),
    ],
)
def test_a_teacher_that_does_not_fit_the_student_is_one_line_and_exit_2(
    args, teacher, message, tmp_path, monkeypatch, run
):
    path = spec_with_teacher(tmp_path, args, teacher)
    monkeypatch.setattr(Registry, "discover", classmethod(lambda cls: registry_with(path)))
    monkeypatch.setattr(papers.registry, "_current", None)
    result = run("build", "distil-student_mlp")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("papers: error: ")
    assert str(path) in result.stderr and "variants[2].methods[0]" in result.stderr
    assert message in result.stderr


def test_a_teacher_with_the_students_classes_is_accepted(tmp_path, monkeypatch, run):
    path = spec_with_teacher(tmp_path, {"hidden": 50})
    monkeypatch.setattr(Registry, "discover", classmethod(lambda cls: registry_with(path)))
    monkeypatch.setattr(papers.registry, "_current", None)
    assert run("build", "distil-student_mlp").exit_code == 0


# -- topics and the proxy ----------------------------------------------------------------------------


@pytest.mark.parametrize("topic", ["distillation", "compression"])
def test_papers_list_by_topic_lists_the_paper(topic, run):
    result = run("list", "--topic", topic)
    assert result.exit_code == 0 and "hinton2015" in result.stdout


def test_the_proxy_compares_the_same_student_alone_and_distilled():
    measured = distillation.compare_alone_and_distilled(
        "hinton2015-lenet300_100", distillation.soft_target_distil, seeds=(0, 1), epochs=1,
        teacher_epochs=1, limit=300,
    )  # fmt: skip
    assert len(measured["alone"]) == len(measured["distilled"]) == 2
    assert measured["alone_mean"] == pytest.approx(sum(measured["alone"]) / 2, abs=1e-3)
    assert all(
        0 <= value <= 100 for value in (*measured["alone"], *measured["distilled"], measured["teacher"])
    )


def test_the_proxy_is_registered_as_a_check_of_the_paper():
    checks = [
        c for c in papers.registry.get_registry().checks.values() if c[1].variant.startswith("hinton2015")
    ]
    assert [c[1].name for c in checks] == ["hinton2015-lenet300_100-mnist5k"]
