"""What the papers do beyond a plain recipe (warm-up, auxiliary losses, label smoothing, gradient
clipping, an average of the weights), deviations written from the recipe that runs, results files
that carry their conditions, and the training features users expect (start from weights, gradient
accumulation, bf16, mixup/cutmix, best and last-k checkpoints, metrics.csv, the progress line,
extending a finished run). Tiny runs: LeNet-5 on the digits, one thread."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

import papers
from papers.recipe import RecipeError, TrainConfig, make_loss, resolve
from papers.train import RunError, _batch_mixer, _Loop, _Progress, train
from tests.conftest import cited, dry_run

QUICK = {
    "batch_size": 64,
    "optimizer": {"name": "sgd", "lr": 0.001},
    "weight_decay": 0.0,
    "schedule": {"name": "constant"},
    "epochs": 2,
}
QUIET = {"log": lambda _: None, "progress": False}


pytestmark = pytest.mark.usefixtures("one_thread")


# -- deviations are those of the recipe that runs ------------------------------------------------


def test_a_run_overridden_to_multistep_does_not_record_the_plateaus_deviation():
    spec = papers.get_spec("resnet")
    plateau = "plateau is checked once per epoch"
    assert any(plateau in d for d in resolve(spec, variant="resnet50").deviations)
    overridden = resolve(
        spec, {"schedule": {"name": "multistep", "milestones": [30, 60]}, "epochs": 90}, variant="resnet50"
    )
    assert overridden.schedule.name == "multistep"
    assert not any(plateau in d for d in overridden.deviations)


def test_a_value_given_by_an_override_is_not_listed_as_the_papers_default():
    spec = papers.get_spec("googlenet")
    assert any(
        d.startswith("batch_size:") for d in resolve(spec, {"epochs": 1}, variant="googlenet").deviations
    )
    given = resolve(spec, {"epochs": 1, "batch_size": 64}, variant="googlenet")
    assert not any(d.startswith("batch_size:") for d in given.deviations)


# -- what the papers do, as typed fields the paper's recipe turns on ----------------------------


def test_resnet110_warms_up_at_0_01_until_the_training_error_is_below_80_percent(run):
    assert "ResNet-110 warms up at learning rate 0.01 until the training error is below 80%" in cited(
        "resnet"
    )
    recipe = dry_run(run, "resnet110")
    assert recipe["warmup"] == {"lr": 0.01, "epochs": None, "iterations": None, "until_train_error": 80.0}
    assert recipe["optimizer"]["lr"] == 0.1
    assert dry_run(run, "resnet56")["warmup"] is None


@pytest.mark.parametrize(
    ("warmup", "rates"),
    [
        ({"lr": 0.0001, "until_train_error": 100.0}, [0.0001, 0.001]),  # ends within the first epoch
        ({"lr": 0.0001, "until_train_error": 0.001}, [0.0001, 0.0001]),  # never reached
        ({"lr": 0.0001, "iterations": 5}, [0.0001, 0.001]),
        ({"lr": 0.0001, "epochs": 1}, [0.0001, 0.001]),
    ],
)
def test_a_warmup_runs_at_its_rate_until_it_ends(warmup, rates):
    result = train("lenet5", "builtin:digits", overrides={**QUICK, "warmup": warmup}, **QUIET)
    assert [m["lr"] for m in result.metrics] == pytest.approx(rates)


def test_a_warmup_by_error_survives_a_resume(tmp_path):
    overrides = {**QUICK, "epochs": 3, "warmup": {"lr": 0.0001, "until_train_error": 100.0}}
    whole = train("lenet5", "builtin:digits", overrides=overrides, **QUIET)
    train("lenet5", "builtin:digits", overrides=overrides, out=tmp_path / "run", stop_after=1, **QUIET)
    resumed = train("lenet5", resume=tmp_path / "run", **QUIET)
    assert [m["lr"] for m in resumed.metrics] == [m["lr"] for m in whole.metrics]
    assert resumed.metrics[-1]["train_loss"] == pytest.approx(whole.metrics[-1]["train_loss"], rel=1e-6)


def test_googlenet_trains_its_auxiliary_heads_at_weight_0_3(run):
    assert "auxiliary losses weighted 0.3" in cited("googlenet")
    recipe = dry_run(run, "googlenet", "--epochs", "1")
    assert recipe["aux_weight"] == 0.3
    assert not any(d.startswith("aux_weight") for d in recipe["deviations"])
    from papers.train import _build_options

    config = TrainConfig.model_validate(recipe)
    assert _build_options(papers.get_spec("googlenet"), "googlenet", config, 10)["aux_logits"] is True


def test_the_auxiliary_losses_are_added_with_their_weight():
    config = TrainConfig.model_validate(
        {"optimizer": {"name": "sgd", "lr": 0.1}, "batch_size": 2, "aux_weight": 0.3}
    )
    loop = SimpleNamespace(config=config, loss=make_loss(config, None))
    logits, aux1, aux2 = (torch.randn(4, 10) for _ in range(3))
    labels = torch.tensor([0, 1, 2, 3])
    ce = torch.nn.functional.cross_entropy
    expected = ce(logits, labels) + 0.3 * (ce(aux1, labels) + ce(aux2, labels))
    assert _Loop._loss_of(loop, (logits, aux1, aux2), labels) == pytest.approx(float(expected))


def test_a_model_with_auxiliary_heads_that_the_recipe_does_not_train_says_so(run):
    recipe = dry_run(run, "inception_v3")
    assert any(d.startswith("aux_weight: not set") for d in recipe["deviations"])
    given = dry_run(run, "inception_v3", "-r", "aux_weight=0.4")
    assert not any(d.startswith("aux_weight") for d in given["deviations"])


def test_inception_v3_smooths_labels_clips_gradients_and_says_what_it_cannot_follow(run):
    assert "label-smoothed targets (ε = 0.1" in cited("inception_v3")
    assert "Gradient clipping at threshold 2.0" in cited("inception_v3")
    recipe = dry_run(run, "inception_v3")
    assert recipe["label_smoothing"] == 0.1 and recipe["grad_clip"] == 2.0
    deviations = " ".join(recipe["deviations"])
    assert "TensorFlow's RMSProp adds it inside" in deviations
    assert "ema_decay: the paper evaluates an average of the weights" in deviations
    averaged = dry_run(run, "inception_v3", "-r", "ema_decay=0.9999")
    assert "ema_decay:" not in " ".join(averaged["deviations"])


def test_label_smoothing_reaches_the_loss():
    config = TrainConfig.model_validate(
        {"optimizer": {"name": "sgd", "lr": 0.1}, "batch_size": 2, "label_smoothing": 0.1}
    )
    logits, labels = torch.randn(4, 10), torch.tensor([0, 1, 2, 3])
    expected = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.1)
    assert float(make_loss(config, None)(logits, labels)) == pytest.approx(float(expected))


def test_a_criterion_with_its_own_loss_refuses_label_smoothing_and_mixing(monkeypatch):
    from papers.recipe import Criterion
    from papers.registry import get_registry

    own = Criterion("own_loss", build=lambda model, config: torch.nn.MSELoss())
    monkeypatch.setitem(get_registry().criteria, "own_loss", ("test", own))
    for field in ("label_smoothing", "mixup_alpha"):
        with pytest.raises(RecipeError, match=f"{field} needs the cross_entropy criterion"):
            resolve(papers.get_spec("lenet"), {"criterion": "own_loss", field: 0.1})
    assert resolve(papers.get_spec("lenet"), {"label_smoothing": 0.1}).label_smoothing == 0.1


def _initial_weights(folder: Path) -> dict:
    record = json.loads((folder / "recipe.json").read_text())
    torch.manual_seed(record["recipe"]["seed"])
    return papers.build_model("lenet5", **record["options"]).state_dict()


def test_gradient_clipping_bounds_each_step(tmp_path):
    train(
        "lenet5", "builtin:digits", overrides={**QUICK, "grad_clip": 1e-9}, out=tmp_path / "clipped", **QUIET
    )
    train("lenet5", "builtin:digits", overrides=QUICK, out=tmp_path / "free", **QUIET)
    initial = _initial_weights(tmp_path / "clipped")
    for name, (clipped, _free) in {
        k: (
            load_file(tmp_path / "clipped" / "model.safetensors")[k],
            load_file(tmp_path / "free" / "model.safetensors")[k],
        )
        for k in initial
    }.items():
        assert torch.allclose(clipped, initial[name], atol=1e-9), name
    assert any(
        not torch.allclose(free, initial[k], atol=1e-6)
        for k, free in load_file(tmp_path / "free" / "model.safetensors").items()
    )


def test_an_average_of_the_weights_is_evaluated_saved_and_resumed(tmp_path):
    overrides = {**QUICK, "epochs": 3, "ema_decay": 0.5, "keep_last": 3}
    whole = train("lenet5", "builtin:digits", overrides=overrides, **QUIET)
    folder = tmp_path / "run"
    train("lenet5", "builtin:digits", overrides=overrides, out=folder, stop_after=1, **QUIET)
    resumed = train("lenet5", resume=folder, **QUIET)
    drop = ("seconds", "images_per_second")
    assert [{k: v for k, v in m.items() if k not in drop} for m in resumed.metrics] == [
        {k: v for k, v in m.items() if k not in drop} for m in whole.metrics
    ]
    final = load_file(folder / "model.safetensors")
    assert final.keys() == load_file(folder / "checkpoints" / "epoch-0003.ema.safetensors").keys()
    raw = load_file(folder / "checkpoints" / "epoch-0003.safetensors")
    assert all(
        torch.equal(final[k], v)
        for k, v in load_file(folder / "checkpoints" / "epoch-0003.ema.safetensors").items()
    )
    assert any(not torch.equal(final[k], raw[k]) for k in raw)


# -- results files: conditions, the weights as given, the size of the data ---------------------


def test_eval_records_conditions_the_weights_path_and_warns_about_the_datas_size(tmp_path, run):
    weights = tmp_path / "sub" / "lenet5.safetensors"
    weights.parent.mkdir()
    assert run("build", "lenet5", "--out", str(weights)).exit_code == 0
    out = tmp_path / "results.json"
    args = ["eval", "lenet5", "--weights", str(weights), "--data", "builtin:digits", "--out", str(out)]
    result = run(
        *args,
        "--dataset",
        "CIFAR-10",
        "--split",
        "test",
        "--condition",
        "crop=32",
        "--condition",
        "dropout=0.3",
    )
    assert result.exit_code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert warnings == [
        "papers: warning: CIFAR-10 test has 10,000 images of 10 classes; this data has 359 of 10"
    ]
    rows = json.loads(out.read_text())["results"]
    assert {r["metric"] for r in rows} == {"top1_accuracy", "top5_accuracy"}
    for row in rows:
        assert row["conditions"] == {"crop": 32, "dropout": 0.3}
        assert row["weights"] == str(weights)
        assert (row["images"], row["classes"]) == (359, 10)
    assert run(*args, "--condition", "crop").exit_code == 2


def test_a_measurement_with_the_rows_conditions_answers_it():
    from papers.results import Measured, answer
    from papers.spec import Result

    result = Result(
        variant="wrn_28_10",
        metric="top1_error",
        value=3.89,
        unit="percent",
        dataset="CIFAR-10",
        split="test",
        conditions={"dropout": 0.3},
        source="Table 6",
    )
    plain = Measured(
        variant="wrn_28_10", metric="top1_accuracy", value=96.0, dataset="CIFAR-10", split="test"
    )
    assert answer(result, [plain]) is None
    assert answer(result, [plain.model_copy(update={"conditions": {"dropout": 0.3}})]) == pytest.approx(4.0)


# -- training features ---------------------------------------------------------------------------


def test_a_run_starts_from_the_weights_given(tmp_path, run):
    train("lenet5", "builtin:digits", overrides=QUICK, out=tmp_path / "first", **QUIET)
    start = tmp_path / "first" / "model.safetensors"
    tiny = {**QUICK, "epochs": 1, "optimizer": {"name": "sgd", "lr": 1e-12}}
    train("lenet5", "builtin:digits", overrides=tiny, out=tmp_path / "second", weights=start, **QUIET)
    began, ended = load_file(start), load_file(tmp_path / "second" / "model.safetensors")
    assert all(torch.allclose(ended[k], v, atol=1e-9) for k, v in began.items())
    assert json.loads((tmp_path / "second" / "recipe.json").read_text())["weights"] == str(start)
    wrong = tmp_path / "wrong.safetensors"
    assert run("build", "lenet5", "-o", "num_classes=3", "--out", str(wrong)).exit_code == 0
    refused = run(
        "train",
        "lenet5",
        "--data",
        "builtin:digits",
        "--weights",
        str(wrong),
        "--out",
        str(tmp_path / "third"),
        "--epochs",
        "1",
    )
    assert refused.exit_code == 2 and "do not fit" in refused.stderr


def test_gradient_accumulation_takes_the_same_steps(tmp_path):
    train("lenet5", "builtin:digits", overrides=QUICK, out=tmp_path / "one", **QUIET)
    train(
        "lenet5",
        "builtin:digits",
        overrides={**QUICK, "accumulation_steps": 4},
        out=tmp_path / "four",
        **QUIET,
    )
    one, four = (
        load_file(tmp_path / "one" / "model.safetensors"),
        load_file(tmp_path / "four" / "model.safetensors"),
    )
    assert all(torch.allclose(one[k], four[k], atol=1e-5) for k in one)
    assert json.loads((tmp_path / "four" / "recipe.json").read_text())["recipe"]["accumulation_steps"] == 4
    with pytest.raises(RecipeError, match="equal parts"):
        train("lenet5", "builtin:digits", overrides={**QUICK, "accumulation_steps": 5}, **QUIET)


def test_bf16_autocasts_the_forward_pass_on_cpu(monkeypatch):
    import papers.api

    seen = []
    build = papers.api.build_model

    def recording(*args, **kwargs):
        model = build(*args, **kwargs)
        model.register_forward_pre_hook(
            lambda module, inputs: seen.append(
                (module.training, torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"))
            )
        )
        return model

    monkeypatch.setattr(papers.api, "build_model", recording)
    result = train("lenet5", "builtin:digits", overrides={**QUICK, "epochs": 1, "precision": "bf16"}, **QUIET)
    assert result.record.recipe.precision == "bf16"
    assert {(enabled, dtype) for training, enabled, dtype in seen if training} == {(True, torch.bfloat16)}
    with pytest.raises(RecipeError, match="fp16 autocast needs a GPU"):
        train("lenet5", "builtin:digits", overrides={**QUICK, "precision": "fp16"}, **QUIET)


def test_mixup_and_cutmix_mix_each_batch_into_class_probabilities():
    config = TrainConfig.model_validate(
        {"optimizer": {"name": "sgd", "lr": 0.1}, "batch_size": 8, "mixup_alpha": 0.2, "cutmix_alpha": 1.0}
    )
    mix = _batch_mixer(config, 10)
    torch.manual_seed(0)
    images, labels = torch.rand(8, 1, 16, 16), torch.arange(8)
    _, targets = mix(images, labels)
    assert targets.shape == (8, 10) and torch.allclose(targets.sum(-1), torch.ones(8))
    assert (targets.max(-1).values < 1).any()
    assert _batch_mixer(config.model_copy(update={"mixup_alpha": 0.0, "cutmix_alpha": 0.0}), 10) is None
    cross_entropy = {
        **QUICK,
        "epochs": 1,
        "criterion": "cross_entropy",
        "mixup_alpha": 0.2,
        "cutmix_alpha": 1.0,
    }
    result = train("lenet5", "builtin:digits", overrides=cross_entropy, **QUIET)
    assert result.finished and result.record.recipe.mixup_alpha == 0.2


def test_the_last_k_checkpoints_the_best_weights_and_a_csv_are_kept(tmp_path):
    folder = tmp_path / "run"
    result = train(
        "lenet5", "builtin:digits", overrides={**QUICK, "epochs": 3, "keep_last": 2}, out=folder, **QUIET
    )
    kept = sorted(
        p.name for p in (folder / "checkpoints").glob("epoch-*.safetensors") if "optimizer" not in p.name
    )
    assert kept == ["epoch-0002.safetensors", "epoch-0003.safetensors"]
    tops = [m["val_top1"] for m in result.metrics]
    best = tops.index(max(tops)) + 1
    if best >= 2:
        saved = load_file(folder / "checkpoints" / f"epoch-{best:04d}.safetensors")
        assert all(torch.equal(v, saved[k]) for k, v in load_file(folder / "best.safetensors").items())
    assert (folder / "best.safetensors").is_file()
    rows = (folder / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",")[:5] == ["epoch", "step", "lr", "train_loss", "train_accuracy"]
    assert "images_per_second" in rows[0] and len(rows) == 4


def test_the_progress_line_shows_images_per_second_and_an_eta(monkeypatch):
    screen = io.StringIO()
    screen.isatty = lambda: True  # type: ignore[method-assign]
    monkeypatch.setattr("sys.stderr", screen)
    bar = _Progress(4, "epoch 1/1", True)
    bar.update(0.5, 64)
    assert "img/s" in screen.getvalue() and "ETA 0:00:0" in screen.getvalue()


def test_a_finished_run_is_extended_by_resuming_with_more_epochs(tmp_path, run):
    folder = tmp_path / "run"
    train("lenet5", "builtin:digits", overrides=QUICK, out=folder, **QUIET)
    extended = train("lenet5", resume=folder, overrides={"epochs": 3}, **QUIET)
    assert [m["epoch"] for m in extended.metrics] == [1, 2, 3] and extended.finished
    record = json.loads((folder / "recipe.json").read_text())
    assert record["recipe"]["epochs"] == 3 and record["overrides"]["epochs"] == 3
    with pytest.raises(RunError, match="more epochs than its 3"):
        train("lenet5", resume=folder, overrides={"epochs": 2}, **QUIET)
    with pytest.raises(RunError, match="keeps its recipe"):
        train("lenet5", resume=folder, overrides={"batch_size": 32}, **QUIET)


def test_dry_run_under_torchrun_refuses_a_batch_that_does_not_split_in_one_line(run, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    result = run("train", "lenet5", "--dry-run")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "papers: error: -r batch_size: batch_size 1 does not split evenly over 2 processes"
    ]
    monkeypatch.setenv("RANK", "1")  # the other processes exit quietly
    quiet = run("train", "lenet5", "--dry-run")
    assert quiet.exit_code == 2 and quiet.stderr == ""
    assert run("train", "lenet5", "--dry-run", "--batch-size", "32").exit_code == 0


def test_sync_batchnorm_converts_every_batch_norm_under_many_gpu_processes():
    from papers.train import sync_batchnorm

    model = papers.build_model("resnet20")
    on = TrainConfig.model_validate(
        {"optimizer": {"name": "sgd", "lr": 0.1}, "batch_size": 2, "sync_batchnorm": True}
    )
    norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    names = set(model.state_dict())
    converted = sync_batchnorm(model, on, 2, "cuda")
    assert sum(isinstance(m, torch.nn.SyncBatchNorm) for m in converted.modules()) == norms > 0
    assert set(converted.state_dict()) == names
    assert sync_batchnorm(model, on, 1, "cpu") is model
    with pytest.raises(RecipeError, match="sync_batchnorm needs GPUs"):
        sync_batchnorm(papers.build_model("resnet20"), on, 2, "cpu")


def test_rand_augment_is_an_augmentation_name():
    from papers.recipe import train_transform

    config = TrainConfig.model_validate(
        {
            "optimizer": {"name": "sgd", "lr": 0.1},
            "batch_size": 2,
            "augmentation": [{"name": "rand_augment", "args": {"num_ops": 2, "magnitude": 9}}],
        }
    )
    transform = train_transform(config, (32, 32))
    assert any(type(t).__name__ == "RandAugment" for t in transform.transforms)
    torch.manual_seed(0)
    assert transform(torch.rand(3, 32, 32)).shape == (3, 32, 32)
    with pytest.raises(ValueError, match="magnitude lies in"):
        TrainConfig.model_validate(
            {**config.model_dump(), "augmentation": [{"name": "rand_augment", "args": {"magnitude": 40}}]}
        )


def test_every_nth_step_is_logged_to_steps_csv_and_a_resume_repeats_none(tmp_path):
    folder = tmp_path / "run"
    overrides = {**QUICK, "log_steps": 5}
    train("lenet5", "builtin:digits", overrides=overrides, out=folder, stop_after=1, **QUIET)
    train("lenet5", resume=folder, **QUIET)
    rows = (folder / "steps.csv").read_text().splitlines()
    assert rows[0] == "step,epoch,lr,loss"
    steps = [int(row.split(",")[0]) for row in rows[1:]]
    assert steps == list(range(5, 45, 5))  # 22 steps an epoch, 2 epochs
    assert json.loads((folder / "recipe.json").read_text())["recipe"]["log_steps"] == 5


def test_tensorboard_gets_each_epochs_and_each_logged_steps_scalars_once_across_a_resume(tmp_path):
    pytest.importorskip("torch.utils.tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = tmp_path / "run"
    overrides = {**QUICK, "log_steps": 10}
    train("lenet5", "builtin:digits", overrides=overrides, out=folder, stop_after=1, **QUIET)
    result = train("lenet5", resume=folder, **QUIET)
    assert json.loads((folder / "recipe.json").read_text())["tensorboard"] == "tensorboard"
    events = EventAccumulator(str(folder / "tensorboard"))
    events.Reload()
    for name in ("val_top1", "train_loss", "lr", "images_per_second"):
        scalars = events.Scalars(f"epoch/{name}")
        assert [s.step for s in scalars] == [1, 2]
        assert [s.value for s in scalars] == pytest.approx([m[name] for m in result.metrics], rel=1e-6)
    steps = [row.split(",") for row in (folder / "steps.csv").read_text().splitlines()[1:]]
    assert [s.step for s in events.Scalars("step/loss")] == [int(row[0]) for row in steps] == [10, 20, 30, 40]
    assert [s.value for s in events.Scalars("step/loss")] == pytest.approx(
        [float(r[3]) for r in steps], rel=1e-6
    )


def test_without_tensorboard_a_run_writes_no_events_and_says_nothing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if it were not installed
    said: list[str] = []
    folder = tmp_path / "run"
    train(
        "lenet5",
        "builtin:digits",
        overrides={**QUICK, "epochs": 1},
        out=folder,
        log=said.append,
        progress=False,
    )
    assert not (folder / "tensorboard").exists()
    assert json.loads((folder / "recipe.json").read_text())["tensorboard"] is None
    assert len(said) == 1 and said[0].startswith("epoch 1/1")
