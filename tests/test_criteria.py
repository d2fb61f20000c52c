"""Criteria and optimizers are named in a recipe and contributed through hooks: the core's common ones,
LeNet-5's through its plugin, a third party's through an installed package, and an unknown name is
refused in one line naming the field and the known names.

The third-party package is written here and installed as a real one (``pip install --target``); the
CLI runs on it through the runner of ``test_third_party_plugins``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import papers
from papers.errors import PluginError
from papers.hookspecs import hookimpl
from papers.plugins import PluginInfo, PluginManager
from papers.recipe import Criterion, Optimizer, RecipeError, resolve
from papers.registry import Registry, get_registry
from tests import test_third_party_plugins
from tests.conftest import REPO, pip_install, write_package

cli = test_third_party_plugins.papers
"""``cli(*args, plugins=("criteria_demo",))``: ``papers`` in a subprocess with the package on its path."""

CRITERIA_DEMO = '''
"""A third party's criterion and optimizer, each easy to recognise in a run's metrics."""

from papers.hookspecs import hookimpl
from papers.recipe import Criterion, Optimizer


def _negated(output):
    return -output


def _offset_penalty(model, config):
    """LeNet-5's loss plus 100: the same gradients, and a loss no other criterion gives."""
    import torch

    class OffsetPenalty(torch.nn.Module):
        def forward(self, output, labels):
            return torch.nn.functional.cross_entropy(_negated(output), labels) + 100.0

    return OffsetPenalty()


def _tenfold_sgd(parameters, config):
    import torch

    return torch.optim.SGD(parameters, lr=10 * config.optimizer.lr)


@hookimpl
def papers_criteria():
    return [Criterion("offset_penalty", doc="rbf_penalty + 100", scores=_negated, build=_offset_penalty)]


@hookimpl
def papers_optimizers():
    return [Optimizer("tenfold_sgd", _tenfold_sgd, doc="SGD", deviation="runs at ten times the rate")]
'''


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, Path]:
    """The package above, installed into a folder of its own (the runner's ``installed``)."""
    source = write_package(
        tmp_path_factory.mktemp("criteria_demo_source"),
        "papers_criteria_demo",
        "papers-criteria-demo",
        CRITERIA_DEMO,
        entry="criteria_demo",
    )
    target = pip_install(source, tmp_path_factory.mktemp("criteria_demo"))
    return {"criteria_demo": target}


def test_an_installed_plugins_criterion_and_optimizer_train_a_model(cli, tmp_path):
    with_demo = {"plugins": ("criteria_demo",), "PAPERS_STRICT_PLUGINS": "1", "OMP_NUM_THREADS": "1"}
    plugins = json.loads(cli("plugins", "--json", **with_demo).stdout)
    demo = next(p for p in plugins if p["name"] == "criteria_demo")
    assert demo["contributes"] == {"criteria": ["offset_penalty"], "optimizers": ["tenfold_sgd"]}
    folder = tmp_path / "run"
    recipe = ["-r", "criterion=offset_penalty", "-r", "optimizer={name: tenfold_sgd, lr: 0.001}"]
    args = ["train", "lenet5", "--data", "builtin:digits", *recipe, "--epochs", "1", "--batch-size", "64"]
    trained = cli(*args, "--out", str(folder), "--json", **with_demo)
    assert trained.returncode == 0, trained.stderr
    metrics = json.loads(trained.stdout)["metrics"]
    assert metrics["train_loss"] >= 100 and metrics["val_loss"] >= 100, "the plugin's loss, not LeNet-5's"
    assert metrics["lr"] == pytest.approx(0.01), "the plugin's optimizer"
    record = json.loads((folder / "recipe.json").read_text())["recipe"]
    assert "optimizer tenfold_sgd: runs at ten times the rate" in record["deviations"]
    gone = cli("train", "lenet5", "--resume", str(folder), PAPERS_STRICT_PLUGINS="1")
    assert gone.returncode == 2
    assert gone.stderr.splitlines() == [
        f"papers: error: {folder / 'recipe.json'}: recipe.criterion: unknown criterion "
        f"'offset_penalty'; known: {_installed_criteria()}"
    ], "a run whose plugin is gone is refused, not trained with another loss"


def _installed_criteria() -> str:
    """The criteria of the installed plugins (LeNet's rbf_penalty, the distillation papers'...)."""
    names = sorted(get_registry().criteria)
    assert {"cross_entropy", "rbf_penalty"} <= set(names)
    return ", ".join(names)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "criterion=focal",
            "-r criterion: unknown criterion 'focal'; known: {criteria}",
        ),
        (
            "optimizer.name=lamb",
            "-r optimizer.name: unknown optimizer 'lamb'; known: adagrad, adam, adamw, rmsprop, sdlm, sgd",
        ),
    ],
)
def test_an_unknown_name_is_refused_in_one_line_naming_the_field(run, override, message):
    result = run("train", "lenet5", "--data", "builtin:digits", "-r", override, "--dry-run")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"papers: error: {message.format(criteria=_installed_criteria())}"]


def test_an_unknown_name_in_a_spec_is_refused_naming_its_field():
    spec = papers.get_spec("vgg")
    hyperparameters = spec.hyperparameters.model_copy(
        update={"optimizer": spec.hyperparameters.optimizer.model_copy(update={"name": "lamb"})}
    )
    with pytest.raises(RecipeError) as error:
        resolve(spec.model_copy(update={"hyperparameters": hyperparameters}))
    assert error.value.field == "hyperparameters.optimizer.name"
    assert "unknown optimizer 'lamb'; known: " in error.value.message


class _Plugin:
    def __init__(self, criteria=(), optimizers=()):
        self.criteria, self.optimizers = list(criteria), list(optimizers)

    @hookimpl
    def papers_criteria(self):
        return self.criteria

    @hookimpl
    def papers_optimizers(self):
        return self.optimizers


def _sgd(parameters, config):
    raise AssertionError("never built")


@pytest.mark.parametrize(
    ("plugin", "refusal"),
    [
        (_Plugin(criteria=[Criterion("cross_entropy")]), "'cross_entropy' is claimed by both the core"),
        (
            _Plugin(optimizers=[Optimizer("sgd", _sgd)]),
            "'sgd' is claimed by both the core (papers) and p (p-dist)",
        ),
        (_Plugin(criteria=["cross_entropy"]), "papers_criteria() returned str, not papers.recipe.Criterion"),
        (_Plugin(criteria=[Criterion("Focal")]), "criterion name 'Focal' is not lower-case letters"),
        (_Plugin(criteria=[Criterion("focal", scores=3)]), "criterion 'focal': scores is not callable"),
        (_Plugin(optimizers=[Optimizer("lamb", None)]), "optimizer 'lamb': build is not callable"),
        (_Plugin(optimizers=[Optimizer("lamb", _sgd, default_lr=-1.0)]), "default_lr is -1.0"),
    ],
)
def test_a_malformed_or_conflicting_contribution_is_refused(plugin, refusal):
    manager = PluginManager()
    manager.register(plugin, PluginInfo("p", "p-dist", "1", "tests"))
    with pytest.raises(PluginError) as error:  # strict mode: the refusal is raised
        Registry(manager)
    assert refusal in str(error.value)


def test_papers_validate_refuses_a_recipe_naming_an_unknown_optimizer(run, tmp_path):
    import yaml

    data = yaml.safe_load((REPO / "specs" / "classification" / "vgg.yaml").read_text())
    data["hyperparameters"]["optimizer"]["name"] = "lamb"
    path = tmp_path / "vgg.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    result = run("validate", str(path))
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "hyperparameters.optimizer.name: unknown optimizer 'lamb'" in result.stderr
    assert str(path) in result.stderr
