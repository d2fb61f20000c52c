"""FitNets (``fitnets``): the regressor that maps the student's guided layer onto the teacher's hint
(a convolution whose kernel fits the maps, or a linear map), the hint loss, the two stages (hints for
the student up to its guided layer, then distillation of the whole student), a hint that cannot be
regressed refused in one line, and a smoke of the MNIST proxy."""

from __future__ import annotations

import pytest
import torch
import yaml

import papers
import papers.registry
from papers.methods import variant_steps
from papers.registry import Registry
from papers_plugins.compression import distillation, hints
from tests.conftest import REPO
from tests.test_han2015 import registry_with

SPEC = REPO / "specs" / "compression" / "fitnets.yaml"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    ("hint", "guided", "kernel"),
    [([50, 8, 8], [16, 14, 14], (7, 7)), ([50, 8, 8], [16, 8, 8], (1, 1)), ([64, 4, 6], [8, 9, 6], (6, 1))],
)
def test_a_convolutional_regressor_fits_the_guided_map_onto_the_hints(hint, guided, kernel):
    assert hints.regressor_shape(hint, guided) == kernel
    regressor = hints.make_regressor(hint, guided)
    assert regressor.kernel_size == kernel
    assert list(regressor(torch.zeros(2, *guided)).shape) == [2, *hint]


def test_fully_connected_layers_are_regressed_by_a_linear_map():
    regressor = hints.make_regressor([500], [30])
    assert isinstance(regressor, torch.nn.Linear) and list(regressor(torch.zeros(3, 30)).shape) == [3, 500]


@pytest.mark.parametrize(
    ("hint", "guided", "message"),
    [
        ([50, 8, 8], [16, 7, 7], "the guided map 7×7 is smaller than the hint's 8×8"),
        ([500], [16, 7, 7], "a regressor maps a convolutional map onto a convolutional map"),
    ],
)
def test_what_cannot_be_regressed_is_refused_saying_why(hint, guided, message):
    with pytest.raises(ValueError, match=message):
        hints.regressor_shape(hint, guided)


def test_the_hint_loss_is_half_the_squared_distance_per_example():
    hint, regressed = torch.ones(2, 3, 2, 2), torch.zeros(2, 3, 2, 2)
    regressed[0] = 2.0
    assert hints.hint_loss(hint, regressed).item() == pytest.approx((0.5 * 12 + 0.5 * 12) / 2)


def test_the_first_stage_trains_the_student_up_to_its_guided_layer_only():
    student_flat, teacher_flat = papers.expand_variant("thin_cnn"), papers.expand_variant("lenet5_caffe")
    torch.manual_seed(0)
    student, teacher = papers.build_model("thin_cnn"), papers.build_model("lenet5_caffe").eval()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    (step,) = variant_steps("fitnets-thin_cnn")
    settings = step.settings.model_copy(update={"lr": 1e-4})
    regressor = hints.make_regressor([50, 8, 8], [16, 14, 14])
    images = torch.rand(32, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    labels = torch.randint(0, 10, (32,))
    losses = []
    original = hints.hint_loss

    def recorded(hint, regressed):
        loss = original(hint, regressed)
        losses.append(loss.item())
        return loss

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hints, "hint_loss", recorded)
        distillation.distil_into(
            student, teacher, student_flat, teacher_flat, settings, hints.HINTS,
            lambda: [(images, labels)], student_taps=["block2.conv1"], teacher_taps=["conv2"],
            modules={"regressor": regressor}, epochs=8,
        )  # fmt: skip
    changed = {k for k, v in student.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {
        f"block{b}.conv{c}.{p}" for b, c in ((1, 1), (1, 2), (2, 1)) for p in ("weight", "bias")
    }
    assert losses[-1] < losses[0]


def test_both_stages_run_hints_then_distillation(monkeypatch):
    calls = []
    monkeypatch.setattr(
        hints, "distil_into", lambda *args, **kwargs: calls.append((args[5].name, kwargs.get("epochs")))
    )
    (step,) = variant_steps("fitnets-thin_cnn")
    hints.fitnet_train(
        papers.build_model("thin_cnn"), papers.build_model("lenet5_caffe"), papers.expand_variant("thin_cnn"),
        papers.expand_variant("lenet5_caffe"), step.settings, lambda: [],
    )  # fmt: skip
    assert calls == [("fitnet_hints", step.settings.hint_epochs), ("fitnet_kd", None)]


# -- a hint that cannot be regressed: one line, exit 2 ---------------------------------------------


def spec_with(tmp_path, **settings) -> object:
    spec = yaml.safe_load(SPEC.read_text())
    spec["id"] = "hinted"
    spec["variants"] = [{**spec["variants"][1], "id": "hinted-thin_cnn"}]
    spec["variants"][0]["methods"][0]["settings"].update(settings)
    spec["graphs"] = {}
    spec["variants"][0]["base"] = "thin_cnn"
    path = tmp_path / "hinted.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"guided": "block2.pool"}, "the guided map 7×7 is smaller than the hint's 8×8"),
        ({"hint": "fc1"}, "a regressor maps a convolutional map onto a convolutional map"),
        ({"hint": "conv9"}, "settings.hint: the teacher 'lenet5_caffe' has no node or feature stage 'conv9'"),
        (
            {"teacher": "wrn_16_4"},
            "settings.teacher 'wrn_16_4' takes [3, 32, 32] and the student [1, 28, 28]",
        ),
    ],
)
def test_a_hint_that_cannot_be_regressed_is_one_line_and_exit_2(
    settings, message, tmp_path, monkeypatch, run
):
    path = spec_with(tmp_path, **settings)
    monkeypatch.setattr(Registry, "discover", classmethod(lambda cls: registry_with(path)))
    monkeypatch.setattr(papers.registry, "_current", None)
    result = run("build", "hinted-thin_cnn")
    assert result.exit_code == 2 and result.stdout == ""
    assert (
        result.stderr.count("\n") == 1
        and str(path) in result.stderr
        and "variants[0].methods[0]" in result.stderr
    )
    assert message in result.stderr


def test_the_papers_hint_and_guided_layers_are_accepted():
    assert hints.check_hints(
        papers.expand_variant("thin_cnn"), variant_steps("fitnets-thin_cnn")[0].settings
    )[2] == (7, 7)


@pytest.mark.parametrize("topic", ["distillation", "compression"])
def test_papers_list_by_topic_lists_the_paper(topic, run):
    assert "fitnets" in run("list", "--topic", topic).stdout


def test_the_proxy_compares_the_same_student_alone_and_as_a_fitnet():
    measured = distillation.compare_alone_and_distilled(
        "fitnets-thin_cnn",
        hints.fitnet_distil,
        seeds=(0,),
        epochs=1,
        teacher_epochs=1,
        limit=100,
        changes={"hint_epochs": 1},
    )
    assert len(measured["alone"]) == len(measured["distilled"]) == 1
    assert all(
        0 <= value <= 100 for value in (*measured["alone"], *measured["distilled"], measured["teacher"])
    )
