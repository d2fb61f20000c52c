"""Recipes per variant, as the papers trained them: what `papers train VARIANT --dry-run` gives, the
schedules the papers state, the length of training, the held-out view at 32×32, and `--threads`."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

import papers
from papers.errors import SpecError
from papers.evaluate import evaluate, protocol_transform
from papers.load import read_yaml
from papers.recipe import RecipeError, TrainConfig, make_optimizer, make_scheduler, resolve
from papers.registry import get_registry
from papers.spec import validate_spec
from papers.train import train
from tests.conftest import REPO, cited, dry_run

SPECS = REPO / "specs" / "classification"
QUICK = {"batch_size": 64, "optimizer": {"name": "sgd", "lr": 0.001, "momentum": 0.9}, "epochs": 1}


pytestmark = pytest.mark.usefixtures("one_thread")


def key_fields(recipe: dict) -> dict:
    crop = next((a["args"] for a in recipe["augmentation"] if a["name"] == "random_crop"), None)
    return {
        "lr": recipe["optimizer"]["lr"],
        "momentum": recipe["optimizer"]["momentum"],
        "nesterov": recipe["optimizer"]["nesterov"],
        "batch_size": recipe["batch_size"],
        "weight_decay": recipe["weight_decay"],
        "schedule": (
            recipe["schedule"]["name"],
            recipe["schedule"]["milestones"],
            recipe["schedule"]["factor"],
        ),
        "unit": recipe["schedule"]["unit"],
        "length": (recipe["epochs"], recipe["iterations"]),
        "input_size": recipe["input_size"],
        "crop": crop,
        "flip": any(a["name"] == "horizontal_flip" for a in recipe["augmentation"]),
    }


# -- recipes per variant: each paper's CIFAR recipe, its ImageNet networks kept apart ------------


@pytest.mark.parametrize("variant", ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110"])
def test_resnet_cifar_networks_train_as_section_4_2(run, variant):
    text = cited("resnet")
    for quoted in (
        "batch 128",
        "0.1 divided by 10 at 32k and 48k iterations",
        "stopped at 64k",
        "weight decay 0.0001",
        "momentum 0.9",
        "4 pixels padded",
        "random 32×32 crop or its flip",
    ):
        assert quoted in text
    assert key_fields(dry_run(run, variant)) == {
        "lr": 0.1,
        "momentum": 0.9,
        "nesterov": False,
        "batch_size": 128,
        "weight_decay": 1.0e-4,
        "schedule": ("multistep", [32000, 48000], 0.1),
        "unit": "iteration",
        "length": (None, 64000),
        "input_size": [32, 32],
        "crop": {"size": 32, "padding": 4},
        "flip": True,
    }


def test_resnet_imagenet_networks_keep_the_imagenet_recipe(run):
    recipe = key_fields(dry_run(run, "resnet50"))
    assert (recipe["batch_size"], recipe["length"], recipe["input_size"]) == (256, (None, 600000), [224, 224])


@pytest.mark.parametrize("variant", ["densenet_40_12", "densenet_bc_100_12", "densenet_bc_190_40"])
def test_densenet_cifar_networks_train_300_epochs_at_batch_64(run, variant):
    text = cited("densenet")
    for quoted in ("batch size 64 for 300 (CIFAR)", "0.1 divided by 10 at 50% and 75%", "Nesterov momentum"):
        assert quoted in text
    recipe = key_fields(dry_run(run, variant))
    assert recipe | {"crop": None} == {
        "lr": 0.1,
        "momentum": 0.9,
        "nesterov": True,
        "batch_size": 64,
        "weight_decay": 1.0e-4,
        "schedule": ("multistep", [150, 225], 0.1),  # 50% and 75% of 300 epochs
        "unit": "epoch",
        "length": (300, None),
        "input_size": [32, 32],
        "crop": None,
        "flip": True,
    }
    assert recipe["crop"]["size"] == 32
    densenet121 = key_fields(dry_run(run, "densenet121"))
    assert (densenet121["length"], densenet121["input_size"]) == ((90, None), [224, 224])


@pytest.mark.parametrize("variant", ["preact_resnet110", "preact_resnet164", "preact_resnet1001"])
def test_preact_cifar_networks_follow_the_appendix(variant):
    spec = get_registry().paper(variant).spec
    assert "The CIFAR recipe; otherwise the hyperparameters of the original ResNet paper" in cited(spec.id)
    recipe = key_fields(resolve(spec, variant=variant).model_dump(mode="json"))
    assert recipe | {"crop": None} == {
        "lr": 0.1,
        "momentum": 0.9,
        "nesterov": False,
        "batch_size": 128,
        "weight_decay": 1.0e-4,
        "schedule": ("multistep", [32000, 48000], 0.1),
        "unit": "iteration",
        "length": (None, None),  # the spec cites no stopping point: --dry-run asks for one
        "input_size": [32, 32],
        "crop": None,
        "flip": True,
    }
    assert recipe["crop"] == {"size": 32, "padding": 4}


def test_preact_imagenet_networks_get_the_imagenet_recipe_not_cifars(run):
    spec = get_registry().paper("preact_resnet152").spec
    assert "divided by 10 at 30 and 60 epochs, mini-batch 256" in cited(spec.id)
    for variant in ("preact_resnet152", "preact_resnet200"):
        recipe = key_fields(resolve(spec, variant=variant).model_dump(mode="json"))
        assert recipe["input_size"] == [224, 224] and recipe["batch_size"] == 256
        assert recipe["schedule"] == ("multistep", [30, 60], 0.1) and recipe["unit"] == "epoch"
    recipe = key_fields(dry_run(run, "preact_resnet152", "--epochs", "90"))
    assert recipe["length"] == (90, None)


@pytest.mark.parametrize("variant", ["wrn_16_4", "wrn_28_10", "wrn_40_10"])
def test_wide_resnet_cifar_networks_follow_section_3(run, variant):
    assert key_fields(dry_run(run, variant)) == {
        "lr": 0.1,
        "momentum": 0.9,
        "nesterov": True,
        "batch_size": 128,
        "weight_decay": 5.0e-4,
        "schedule": ("multistep", [60, 120, 160], 0.2),
        "unit": "epoch",
        "length": (200, None),
        "input_size": [32, 32],
        "crop": {"size": 32, "padding": 4, "padding_mode": "reflect"},
        "flip": True,
    }


def test_wide_resnet_imagenet_networks_get_no_cifar_recipe(run):
    spec = get_registry().paper("wide_resnet50_2").spec
    for variant in ("wide_resnet50_2", "wide_resnet101_2"):
        config = resolve(spec, variant=variant)
        assert config.input_size == [224, 224] and config.augmentation == [] and config.dropout is None
    result = run("train", "wide_resnet50_2", "--dry-run")
    assert result.exit_code != 0 and "neither epochs nor iterations" in result.stderr


def test_nin_recipe_is_the_papers(run):
    assert "divided by 10 when the accuracy on the training set stops improving" in cited("nin")
    recipe = dry_run(run, "nin_cifar10", "--epochs", "3")
    assert recipe["batch_size"] == 128
    assert (recipe["schedule"]["name"], recipe["schedule"]["monitor"], recipe["schedule"]["times"]) == (
        "plateau",
        "train_accuracy",
        2,
    )


@pytest.mark.parametrize("stem", sorted(p.stem for p in SPECS.glob("*.yaml")))
def test_every_variants_recipe_resolves(stem):
    entry = next(e for e in get_registry().list() if e.file.endswith(f"{stem}.yaml"))
    for variant in entry.spec.variants:
        assert isinstance(resolve(entry.spec, {"epochs": 1}, variant=variant.id), TrainConfig)


# -- recipes are validated like the rest of a spec ------------------------------------------------


def _resnet_with(recipes: list) -> dict:
    data = copy.deepcopy(read_yaml((SPECS / "resnet.yaml").read_text()))
    data["recipes"] = recipes
    return data


def test_a_recipe_naming_an_unknown_variant_is_refused():
    data = _resnet_with([{"variants": ["resnet21"], "hyperparameters": {"optimizer": {"name": "sgd"}}}])
    with pytest.raises(SpecError, match="no variant 'resnet21'") as error:
        validate_spec(data)
    assert error.value.field == "recipes[0].variants[0]"


def test_a_variant_named_by_two_recipes_is_refused():
    recipe = {"variants": ["resnet20"], "hyperparameters": {"optimizer": {"name": "sgd"}}}
    with pytest.raises(SpecError, match="named by two recipes"):
        validate_spec(_resnet_with([recipe, recipe]))


def test_a_recipe_with_an_unknown_field_is_refused():
    data = _resnet_with(
        [{"variants": ["resnet20"], "hyperparameters": {"optimizer": {"name": "sgd"}, "epoch": 3}}]
    )
    with pytest.raises(SpecError, match="unknown field") as error:
        validate_spec(data)
    assert error.value.field == "recipes[0].hyperparameters.epoch"
    with pytest.raises(SpecError, match="unknown field"):
        validate_spec(
            _resnet_with(
                [{"variants": ["resnet20"], "hyperparameters": {"optimizer": {"name": "sgd"}}, "note": "x"}]
            )
        )


# -- LeNet-5's rates -------------------------------------------------------------------------------


def test_lenet5_follows_the_papers_global_rates_per_pass():
    text = cited("lenet")
    assert "0.0005 for the first two passes, 0.0002 for the next three, 0.0001 for the next three" in text
    assert "0.00005 for the next four, 0.00001 thereafter" in text
    config = resolve(papers.get_spec("lenet"))
    assert config.epochs == 20 and config.optimizer.lr == 5.0e-4
    optimizer = make_optimizer(config, [torch.nn.Parameter(torch.zeros(1))])
    scheduler = make_scheduler(config, optimizer, epochs=20, steps_per_epoch=1)
    rates = []
    for _ in range(20):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [5e-4] * 2 + [2e-4] * 3 + [1e-4] * 3 + [5e-5] * 4 + [1e-5] * 8
    assert rates == pytest.approx(expected, rel=1e-12)


def test_a_piecewise_schedule_is_checked():
    data = copy.deepcopy(read_yaml((SPECS / "lenet.yaml").read_text()))
    data["hyperparameters"]["schedule"]["values"] = [5.0e-4, 2.0e-4]
    with pytest.raises(SpecError, match="2 values for 4 milestones"):
        validate_spec(data)
    data["hyperparameters"]["schedule"]["values"] = [1.0e-3, 2.0e-4, 1.0e-4, 5.0e-5, 1.0e-5]
    with pytest.raises(RecipeError, match="initial rate"):
        resolve(validate_spec(data))


def test_a_piecewise_rate_survives_a_resume(tmp_path):
    overrides = {
        **QUICK,
        "epochs": 3,
        "schedule": {"name": "piecewise", "milestones": [1, 2], "values": [0.001, 0.0005, 0.0001]},
    }
    first = train("lenet5", "builtin:digits", overrides=overrides, out=tmp_path / "run", stop_after=1)
    resumed = train("lenet5", "builtin:digits", resume=tmp_path / "run")
    rates = [m["lr"] for m in first.metrics[:1] + resumed.metrics[1:]]
    assert rates == pytest.approx([0.001, 0.0005, 0.0001])


# -- recipes that say nothing of the length of training --------------------------------------------


@pytest.mark.parametrize("variant", ["preact_resnet110", "googlenet", "nin_cifar10"])
def test_a_recipe_without_epochs_or_iterations_fails_at_dry_run(run, variant):
    result = run("train", variant, "--dry-run")
    assert result.exit_code != 0 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "neither epochs nor iterations" in lines[0] and "--epochs" in lines[0]


def test_a_recipe_without_epochs_or_iterations_fails_before_reading_data(tmp_path):
    with pytest.raises(RecipeError, match="neither epochs nor iterations"):
        train("nin_cifar10", str(tmp_path / "no-such-folder-is-read"), out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


# -- the held-out view at 32×32 --------------------------------------------------------------------


def test_small_inputs_are_tested_on_the_original_view():
    image = torch.rand(3, 32, 32)
    assert torch.equal(protocol_transform("single_crop", (32, 32))(image), image)
    assert torch.equal(protocol_transform("ten_crop", (32, 32))(image)[0], image)
    imagenet = protocol_transform("single_crop", (224, 224))
    assert imagenet.transforms[0].size == [256], "ImageNet sizes keep the resize to size / 0.875"
    assert protocol_transform("single_crop", (32, 32), resize=37)(image).shape == (3, 32, 32)


def _folder(root: Path, size: int = 32) -> list[torch.Tensor]:
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    saved = []
    for split in ("train", "val"):
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True)
            for index in range(2):
                pixels = torch.randint(0, 256, (size, size, 3), dtype=torch.uint8, generator=generator)
                Image.fromarray(pixels.numpy()).save(root / split / label / f"{index}.png")
                if split == "val":
                    saved.append(pixels.permute(2, 0, 1).float() / 255)
    return saved


def test_the_per_epoch_held_out_split_is_the_eval_protocols_view(tmp_path):
    from papers.data import training_data

    saved = _folder(tmp_path)
    config = resolve(papers.get_spec("resnet"), {"augmentation": []}, variant="resnet20")
    data = training_data(str(tmp_path), config, (3, 32, 32))
    held_out = [data.test[i][0] for i in range(len(data.test))]
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(held_out, saved, strict=True)), (
        "the original 32×32 view"
    )


def test_eval_scores_a_32_pixel_model_on_the_original_view(tmp_path):
    saved = _folder(tmp_path / "data")
    model = papers.build_model("resnet20", num_classes=2).eval()
    from safetensors.torch import save_file

    save_file(model.state_dict(), tmp_path / "w.safetensors")
    measured = evaluate("resnet20", tmp_path / "w.safetensors", str(tmp_path / "data"), normalize=None)
    with torch.inference_mode():
        expected = model(torch.stack(saved)).argmax(1)
    labels = torch.tensor([0, 0, 1, 1])
    assert measured["top1_accuracy"] == pytest.approx(100.0 * (expected == labels).float().mean().item())


# -- threads ---------------------------------------------------------------------------------------


def test_threads_are_applied_during_the_run_and_recorded(tmp_path):
    seen = []
    train(
        "lenet5",
        "builtin:digits",
        overrides=QUICK,
        out=tmp_path / "run",
        threads=2,
        progress=False,
        log=lambda _: seen.append(torch.get_num_threads()),
    )
    assert seen and set(seen) == {2}
    assert json.loads((tmp_path / "run" / "recipe.json").read_text())["threads"] == 2
    assert torch.get_num_threads() == 1, "restored after the run"
    measured = evaluate("lenet5", tmp_path / "run" / "model.safetensors", "builtin:digits", threads=2)
    assert measured["threads"] == 2 and torch.get_num_threads() == 1


def test_threads_default_to_torchs_and_the_cli_takes_them(run, tmp_path):
    train("lenet5", "builtin:digits", overrides=QUICK, out=tmp_path / "default", progress=False)
    assert json.loads((tmp_path / "default" / "recipe.json").read_text())["threads"] == 1
    args = ["--data", "builtin:digits", "--batch-size", "64", "--epochs", "1", "-r", "optimizer.name=sgd"]
    result = run("train", "lenet5", *args, "--threads", "3", "--out", str(tmp_path / "cli"))
    assert result.exit_code == 0, result.stderr
    assert json.loads((tmp_path / "cli" / "recipe.json").read_text())["threads"] == 3
    result = run("train", "lenet5", *args, "--threads", "0", "--dry-run")
    assert result.exit_code != 0 and "--threads" in result.stderr
