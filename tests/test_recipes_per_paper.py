"""Each ImageNet paper's recipe, as `papers train VARIANT --dry-run` resolves it, against the numbers
the spec cites (its typed fields and the prose quoting the paper). The CIFAR recipes, LeNet-5's and
NiN's are in tests/test_recipes.py."""

from __future__ import annotations

import pytest

from tests.conftest import cited, dry_run


def key_fields(recipe: dict) -> dict:
    """What a paper's training section states: the optimizer, the batch, the schedule, the length,
    the input, the regularisers and the augmentation (names, with their arguments where given)."""
    optimizer = recipe["optimizer"]
    schedule = recipe["schedule"]
    return {
        "optimizer": (optimizer["name"], optimizer["lr"], optimizer["momentum"], optimizer["nesterov"]),
        "rmsprop": (optimizer["alpha"], optimizer["eps"]),
        "batch_size": recipe["batch_size"],
        "weight_decay": recipe["weight_decay"],
        "schedule": {k: v for k, v in schedule.items() if v is not None and k != "patience"},
        "length": (recipe["epochs"], recipe["iterations"]),
        "input_size": recipe["input_size"],
        "dropout": recipe["dropout"],
        "extras": (recipe["label_smoothing"], recipe["grad_clip"], recipe["aux_weight"]),
        "augmentation": [(a["name"], a["args"]) for a in recipe["augmentation"]],
    }


def _needs_a_length(run, variant: str) -> None:
    """The paper gives neither epochs nor iterations: --dry-run says so, and takes --epochs."""
    result = run("train", variant, "--dry-run")
    assert result.exit_code == 2 and "neither epochs nor iterations" in result.stderr


def test_alexnet_trains_as_sections_4_1_and_5(run):
    text = cited("alexnet")
    for quoted in (
        "divided by 10 by hand whenever the validation error stopped improving, three times in all",
        "about 90 passes",
        "the central 256×256 patch",
        "random 224×224 patches and their mirror images",
        "N(0, 0.1)",
    ):
        assert quoted in text
    assert key_fields(dry_run(run, "alexnet")) == {
        "optimizer": ("sgd", 0.01, 0.9, False),  # Section 5: batch 128, momentum 0.9, decay 0.0005
        "rmsprop": (None, None),
        "batch_size": 128,
        "weight_decay": 5.0e-4,
        "schedule": {"name": "plateau", "factor": 0.1, "times": 3, "monitor": "val_error", "unit": "epoch"},
        "length": (90, None),
        "input_size": [224, 224],
        "dropout": 0.5,  # Section 4.2
        "extras": (0.0, None, None),
        "augmentation": [
            ("resize", {"size": 256}),  # Section 2
            ("center_crop", {"size": 256}),
            ("random_crop", {"size": 224}),  # Section 4.1
            ("horizontal_flip", {}),
            ("rgb_shift", {"method": "pca", "std": 0.1}),
            ("mean_subtraction", {}),
        ],
    }


@pytest.mark.parametrize("variant", ["vgg11", "vgg16", "vgg19"])
def test_vgg_trains_as_section_3_1(run, variant):
    assert "scale-jittered models sample S from [256, 512]" in cited("vgg")
    assert key_fields(dry_run(run, variant)) == {
        "optimizer": ("sgd", 0.01, 0.9, False),  # Section 3.1: batch 256, momentum 0.9, L2 5·10⁻⁴
        "rmsprop": (None, None),
        "batch_size": 256,
        "weight_decay": 5.0e-4,
        # divided by 10 when the validation accuracy stopped improving, three times in all
        "schedule": {
            "name": "plateau",
            "factor": 0.1,
            "times": 3,
            "monitor": "val_accuracy",
            "unit": "epoch",
        },
        "length": (74, 370000),  # "after 370K iterations (74 epochs)"
        "input_size": [224, 224],
        "dropout": 0.5,
        "extras": (0.0, None, None),
        "augmentation": [
            ("scale_jitter", {"min": 256, "max": 512}),
            ("random_crop", {"size": 224}),
            ("horizontal_flip", {}),
            ("rgb_shift", {}),
            ("mean_subtraction", {}),
        ],
    }


def test_googlenet_trains_as_sections_5_and_6(run):
    text = cited("googlenet")
    for quoted in (
        "dropout 0.7 in the auxiliary classifiers",
        "8%-100% of the area, aspect ratio 3/4 to 4/3",
    ):
        assert quoted in text
    _needs_a_length(run, "googlenet")
    recipe = dry_run(run, "googlenet", "--epochs", "1")
    assert key_fields(recipe) == {
        "optimizer": ("sgd", 0.001, 0.9, False),  # Section 6: momentum 0.9; no learning rate given
        "rmsprop": (None, None),
        "batch_size": 32,  # not given
        "weight_decay": 0.0,
        "schedule": {"name": "step", "factor": 0.96, "step_size": 8, "unit": "epoch"},  # 4% every 8 epochs
        "length": (1, None),
        "input_size": [224, 224],
        "dropout": 0.4,  # Section 5: 40% before the classifier
        "extras": (0.0, None, 0.3),  # Section 5: auxiliary losses weighted 0.3
        "augmentation": [
            ("random_resized_crop", {"area": [0.08, 1.0], "aspect_ratio": [0.75, 1.3333]}),
            ("color_jitter", {"method": "Howard photometric distortions"}),
            ("mean_subtraction", {}),
        ],
    }
    deviations = " ".join(recipe["deviations"])
    assert "optimizer.lr: not given by the paper" in deviations
    assert "batch_size: not given by the paper" in deviations


def test_bn_inception_trains_as_bn_x30_of_section_4_2(run):
    text = cited("bn-inception")
    assert "initial learning rate 0.045, 30 times the 0.0015 of the baseline Inception" in text
    assert "SGD with momentum (value not given)" in text
    _needs_a_length(run, "bn_inception")
    recipe = dry_run(run, "bn_inception", "--epochs", "1")
    assert key_fields(recipe) == {
        "optimizer": ("sgd", 0.045, 0.0, False),
        "rmsprop": (None, None),
        "batch_size": 32,  # Section 4.2: mini-batch size 32
        "weight_decay": 0.0,
        "schedule": {"name": "constant", "unit": "epoch"},  # an exponential decay without its rate
        "length": (1, None),
        "input_size": [224, 224],
        "dropout": None,  # Section 4.2.1: dropout removed
        "extras": (0.0, None, None),
        "augmentation": [],
    }
    deviations = " ".join(recipe["deviations"])
    for said in ("exponential decay without a factor", "momentum 0", "weight decay"):
        assert said in deviations


def test_inception_v3_trains_as_sections_7_and_8(run):
    text = cited("inception-v3")
    for quoted in ("Batch size 32 on each of 50 replicas", "100 epochs", "RMSProp decay 0.9 and ε = 1.0"):
        assert quoted in text
    assert "Gradient clipping at threshold 2.0" in text and "ε = 0.1" in text
    recipe = dry_run(run, "inception_v3")
    assert key_fields(recipe) == {
        "optimizer": ("rmsprop", 0.045, 0.0, False),  # Section 8: 0.045, RMSProp decay 0.9, ε 1.0
        "rmsprop": (0.9, 1.0),
        "batch_size": 32,
        "weight_decay": 0.0,
        "schedule": {
            "name": "exponential",
            "factor": 0.94,
            "step_size": 2,
            "unit": "epoch",
        },  # 0.94 / 2 epochs
        "length": (100, None),
        "input_size": [299, 299],
        "dropout": None,
        "extras": (0.1, 2.0, None),  # Section 7: label smoothing 0.1; Section 8: clipping at 2.0
        "augmentation": [],
    }
    assert any("outside the square root" in d for d in recipe["deviations"])


@pytest.mark.parametrize("variant", ["inception_v4", "inception_resnet_v2"])
def test_inception_v4_and_inception_resnet_train_as_section_4(run, variant):
    text = cited("inception-v4")
    assert "RMSProp decay 0.9 and ε = 1.0" in text and "keeps 0.8 of the pooled features" in text
    _needs_a_length(run, variant)
    recipe = dry_run(run, variant, "--epochs", "1")
    assert key_fields(recipe) == {
        "optimizer": ("rmsprop", 0.045, 0.0, False),  # Section 4: 0.045, decayed 0.94 every 2 epochs
        "rmsprop": (0.9, 1.0),
        "batch_size": 32,  # not given
        "weight_decay": 0.0,
        "schedule": {"name": "exponential", "factor": 0.94, "step_size": 2, "unit": "epoch"},
        "length": (1, None),
        "input_size": [299, 299],  # Figures 9 and 15
        "dropout": 0.2,  # keep 0.8
        "extras": (0.0, None, None),
        "augmentation": [],
    }
    assert "batch_size: not given by the paper; 32" in recipe["deviations"]


@pytest.mark.parametrize("variant", ["resnext50_32x4d", "resnext101_32x4d"])
def test_resnext_trains_as_section_4(run, variant):
    text = cited("resnext")
    assert "divided by 10 three times" in text and "mini-batch 256 on 8 GPUs" in text
    _needs_a_length(run, variant)
    assert key_fields(dry_run(run, variant, "--epochs", "1")) == {
        "optimizer": ("sgd", 0.1, 0.9, False),  # Section 4: lr 0.1, momentum 0.9, weight decay 0.0001
        "rmsprop": (None, None),
        "batch_size": 256,
        "weight_decay": 1.0e-4,
        "schedule": {"name": "step", "factor": 0.1, "times": 3, "unit": "epoch"},
        "length": (1, None),
        "input_size": [224, 224],
        "dropout": None,
        "extras": (0.0, None, None),
        "augmentation": [("random_resized_crop", {"size": 224})],  # scale and aspect-ratio augmentation
    }


SENET_AUGMENTATION = [
    ("random_resized_crop", {"size": 224}),
    ("horizontal_flip", {}),
    ("mean_subtraction", {}),
]


@pytest.mark.parametrize("variant", ["seresnet50", "seresnext50_32x4d", "seresnet152"])
def test_se_networks_train_as_section_5_1(run, variant):
    assert key_fields(dry_run(run, variant)) == {
        "optimizer": ("sgd", 0.6, 0.9, False),  # Section 5.1: momentum 0.9, batch 1024, lr 0.6
        "rmsprop": (None, None),
        "batch_size": 1024,
        "weight_decay": 0.0,
        "schedule": {"name": "step", "factor": 0.1, "step_size": 30, "unit": "epoch"},  # /10 every 30 epochs
        "length": (100, None),
        "input_size": [224, 224],
        "dropout": None,
        "extras": (0.0, None, None),
        "augmentation": SENET_AUGMENTATION,
    }


def test_senet154_trains_with_the_appendixs_batch_and_rate(run):
    assert "batch 2048 on 64 GPUs and initial learning rate 1.0" in cited("senet")
    recipe = dry_run(run, "senet154")
    assert key_fields(recipe) == {
        "optimizer": ("sgd", 1.0, 0.9, False),  # Appendix: batch 2048, initial learning rate 1.0
        "rmsprop": (None, None),
        "batch_size": 2048,
        "weight_decay": 0.0,
        "schedule": {"name": "step", "factor": 0.1, "step_size": 30, "unit": "epoch"},
        "length": (100, None),
        "input_size": [224, 224],
        "dropout": 0.2,  # Appendix: dropout 0.2 before the classifier
        "extras": (0.0, None, None),
        "augmentation": SENET_AUGMENTATION,
    }
    deviations = " ".join(recipe["deviations"])
    assert "label smoothing: the Appendix uses it without giving ε" in deviations
    assert "batch normalisation frozen" in deviations


@pytest.mark.parametrize("variant", ["densenet121", "densenet169", "densenet201", "densenet161"])
def test_densenet_imagenet_networks_train_as_section_4_2(run, variant):
    assert "Nesterov momentum" in cited("densenet")
    assert key_fields(dry_run(run, variant)) == {
        "optimizer": ("sgd", 0.1, 0.9, True),  # Section 4.2: Nesterov momentum 0.9, weight decay 1e-4
        "rmsprop": (None, None),
        "batch_size": 256,  # ImageNet: 90 epochs, batch 256, /10 at epochs 30 and 60
        "weight_decay": 1.0e-4,
        "schedule": {"name": "multistep", "milestones": [30, 60], "factor": 0.1, "unit": "epoch"},
        "length": (90, None),
        "input_size": [224, 224],
        "dropout": None,
        "extras": (0.0, None, None),
        "augmentation": [],  # fb.resnet.torch's, which the paper refers to without listing
    }
