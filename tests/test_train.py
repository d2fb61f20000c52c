"""Training and evaluation from a spec's recipe: reproduction, determinism, resume, many processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import papers
from papers.checks import TrainingCheck
from papers.errors import PapersError
from papers.plugins import PluginInfo, PluginManager
from papers.recipe import RecipeError, make_loss, make_optimizer, make_scheduler, resolve, train_transform
from papers.registry import Registry, get_registry
from papers.results import Measured, ResultsFile, read_results
from papers.train import train
from tests.conftest import REPO

# Small, fast and free of randomness other than the seeded shuffle: batch 64 is 22 steps per epoch.
QUICK = {"batch_size": 64, "optimizer": {"name": "sgd", "lr": 0.001, "momentum": 0.9}, "epochs": 2}


pytestmark = pytest.mark.usefixtures("one_thread")


def without_time(metrics: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if k not in ("seconds", "images_per_second")} for m in metrics]


# -- the small-scale reproduction ---------------------------------------------------------------


def test_lenet5_reaches_95_percent_on_digits():  # its time is measured by benchmarks/run.py
    (training,) = get_registry().training_checks("lenet")
    checks = papers.check("lenet5", run=True)
    proxy = next(c for c in checks if c.proxy)
    assert proxy.status == "pass", proxy.reason
    assert proxy.dataset == "MNIST" and proxy.reported == 0.95, "shown beside the paper's MNIST error"
    assert proxy.measured <= 100 - training.min_accuracy
    mnist = [i for i, c in enumerate(checks) if c.dataset == "MNIST" and c.reported == 0.95]
    assert mnist == [mnist[0], mnist[0] + 1], "the proxy row follows the reported row"


def test_training_checks_are_validated_like_other_contributions():
    class Plugin:
        @papers.hookspecs.hookimpl
        def papers_checks(self):
            return [TrainingCheck("x", "nope", "builtin:digits", 90.0, "p"), "not a check"]

    manager = PluginManager()
    manager.register(Plugin(), PluginInfo("p", "p-dist", "1", "tests"))
    with pytest.raises(papers.PluginError, match="names no variant 'nope'"):
        Registry(manager)


# -- the recipe ---------------------------------------------------------------------------------


SPECS = sorted(p.stem for p in (REPO / "specs" / "classification").glob("*.yaml"))


def _paper_id(stem: str) -> str:
    return next(e.spec.id for e in get_registry().list() if e.file.endswith(f"{stem}.yaml"))


def _smallest_size(variant: str) -> dict:
    spec = papers.get_spec(variant)
    if "image_size" not in spec.graphs[spec.variant(variant).graph].params:
        return {}
    for size in (32, 64, 96, 128, 160, 224, 299):
        try:
            papers.measure(variant, image_size=size, num_classes=3)
            return {"image_size": size}
        except PapersError:
            continue
    raise AssertionError(f"{variant} builds at no size tried")


@pytest.mark.parametrize("stem", SPECS)
def test_every_classification_recipe_resolves_and_takes_a_step(stem):
    spec = papers.get_spec(_paper_id(stem))
    assert spec.hyperparameters is not None, "every classification spec gives its recipe"
    config = resolve(spec, {"epochs": 1})
    variant = spec.variants[0].id
    options = _smallest_size(variant)
    torch.manual_seed(0)
    model = papers.build_model(variant, num_classes=3, **options)
    shape = next(iter(papers.expand_variant(variant, num_classes=3, **options).inputs.values()))
    transform = train_transform(config, (shape[1], shape[2]), mean=[0.5] * shape[0], std=[0.25] * shape[0])
    images = torch.stack([transform(torch.rand(shape[0], shape[1] + 8, shape[2] + 8)) for _ in range(2)])
    assert tuple(images.shape[1:]) == tuple(shape)
    optimizer = make_optimizer(config, model.parameters())
    scheduler = make_scheduler(config, optimizer, epochs=1, steps_per_epoch=1)
    before = [p.detach().clone() for p in model.parameters()]
    output = model(images)
    output = output[0] if isinstance(output, tuple) else output
    loss = make_loss(config, model)(output, torch.tensor([0, 1]))
    loss.backward()
    optimizer.step()
    if scheduler is not None and config.schedule.name != "plateau":
        scheduler.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_what_the_paper_leaves_out_is_written_down():
    config = resolve(papers.get_spec("lenet"))
    assert (config.optimizer.name, config.optimizer.lr, config.criterion) == ("sdlm", 5.0e-4, "rbf_penalty")
    optimizer = make_optimizer(config, [torch.nn.Parameter(torch.zeros(1))])
    assert type(optimizer) is torch.optim.SGD, "SDLM runs as SGD, at the paper's global rate"
    assert optimizer.param_groups[0]["lr"] == 5.0e-4
    assert any("Levenberg-Marquardt is not implemented" in d for d in config.deviations)
    digits_check = resolve(papers.get_spec("lenet"), get_registry().checks["lenet5-mnist5k"][1].overrides)
    assert not any("Levenberg-Marquardt" in d for d in digits_check.deviations), "the check runs SGD"
    googlenet = resolve(papers.get_spec("googlenet"))
    assert any(d.startswith("optimizer.lr: not given") for d in googlenet.deviations)


def test_a_schedule_torch_cannot_follow_is_refused_clearly():
    spec = papers.get_spec("alexnet")
    hyperparameters = spec.hyperparameters.model_copy(
        update={"schedule": spec.hyperparameters.schedule.model_copy(update={"monitor": "val_map"})}
    )
    with pytest.raises(RecipeError, match="plateau schedule monitors 'val_map'"):
        resolve(spec.model_copy(update={"hyperparameters": hyperparameters}))


def test_overrides_are_validated_and_recorded(tmp_path):
    config = resolve(
        papers.get_spec("vgg"), {"optimizer.lr": 0.02, "weight_decay": 0, "schedule.name": "cosine"}
    )
    assert (config.optimizer.lr, config.weight_decay, config.schedule.name) == (0.02, 0.0, "cosine")
    with pytest.raises(RecipeError, match="valid integer"):
        resolve(papers.get_spec("vgg"), {"epochs": "ten"})
    with pytest.raises(RecipeError, match="unknown recipe field"):
        resolve(papers.get_spec("vgg"), {"optimiser.lr": 0.1})
    run = train("lenet5", "builtin:digits", overrides={**QUICK, "epochs": 1}, out=tmp_path / "run")
    record = json.loads((tmp_path / "run" / "recipe.json").read_text())
    assert record["overrides"]["batch_size"] == 64 and record["recipe"]["batch_size"] == 64
    assert run.final["epoch"] == 1


# -- determinism, resume, processes ------------------------------------------------------------


def test_the_same_seed_gives_identical_metrics():
    augmented = {**QUICK, "augmentation": [{"name": "random_crop", "args": {"padding": 2}}]}
    first = train("lenet5", "builtin:digits", overrides=augmented, log=lambda _: None)
    second = train("lenet5", "builtin:digits", overrides=augmented, log=lambda _: None)
    assert len(first.metrics) == 2
    assert without_time(first.metrics) == without_time(second.metrics)


def test_an_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path):
    recipe = {**QUICK, "epochs": 3, "optimizer": {"name": "adam", "lr": 0.001}}
    recipe["schedule"] = {"name": "multistep", "milestones": [2], "factor": 0.5}
    whole = train("lenet5", "builtin:digits", overrides=recipe, log=lambda _: None)

    epochs_logged = []

    def interrupt_during_the_second_epoch(line: str) -> None:
        epochs_logged.append(line)
        if len(epochs_logged) == 2:  # before epoch 2's checkpoint is written: epoch 2 is lost
            raise KeyboardInterrupt

    folder = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train("lenet5", "builtin:digits", overrides=recipe, out=folder, log=interrupt_during_the_second_epoch)
    assert json.loads((folder / "checkpoints" / "last.json").read_text())["epoch"] == 1
    assert len(json.loads((folder / "metrics.json").read_text())) == 1
    resumed = train("lenet5", resume=folder, log=lambda _: None)
    assert without_time(resumed.metrics) == without_time(whole.metrics)
    # TensorBoard's event files (protocol buffers), where it is installed, aside
    names = {p.suffix for p in folder.rglob("*") if p.is_file() and "tensorboard" not in p.parts}
    assert names <= {".json", ".safetensors", ".txt", ".csv"}, "nothing pickled"
    weights = load_file(folder / "model.safetensors")
    assert set(weights) == set(papers.build_model("lenet5").state_dict())


def test_a_killed_run_keeps_its_last_checkpoint_and_resumes(tmp_path):
    folder = tmp_path / "run"
    command = [sys.executable, "-m", "papers", "train", "lenet5", "--data", "builtin:digits"]
    command += ["--epochs", "50", "-r", "batch_size=64", "--out", str(folder)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    last = folder / "checkpoints" / "last.json"
    deadline = time.monotonic() + 120
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "--resume" in stderr.splitlines()[-1]
    done = json.loads(last.read_text())["epoch"]
    assert done >= 1 and len(json.loads((folder / "metrics.json").read_text())) == done
    resumed = train("lenet5", resume=folder, stop_after=1, log=lambda _: None)
    assert resumed.final["epoch"] == done + 1


def test_stop_after_leaves_a_run_that_resumes(tmp_path, run):
    folder = tmp_path / "run"
    args = ["train", "lenet5", "--data", "builtin:digits", "--out", str(folder), "-r", "batch_size=64"]
    stopped = run(*args, "--epochs", "2", "--stop-after", "1")
    assert stopped.exit_code == 0 and "--resume" in stopped.stdout
    assert not (folder / "model.safetensors").exists()
    finished = run("train", "lenet5", "--resume", str(folder), "--json")
    assert finished.exit_code == 0
    assert json.loads(finished.stdout)["metrics"]["epoch"] == 2


SHARED = {"batch_size": 32, "optimizer.momentum": 0.9, "epochs": 2}


def test_two_processes_match_one(tmp_path):
    overrides = ["-r", "batch_size=32", "-r", "optimizer.momentum=0.9", "--epochs", "2"]
    command = ["-m", "papers", "train", "lenet5", "--data", "builtin:digits", *overrides]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    logs = tmp_path / "logs"  # each rank's own output, so that a rank's failure says why
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    torchrun += ["--log-dir", str(logs), "--redirects", "3"]
    two = subprocess.run(
        [*torchrun, *command, "--out", str(tmp_path / "two")], env=environment, capture_output=True, text=True
    )
    ranks = "\n".join(f"{f}:\n{f.read_text()[-3000:]}" for f in sorted(logs.rglob("*.log")))
    assert two.returncode == 0, two.stderr[-2000:] + "\n" + ranks
    one = train("lenet5", "builtin:digits", overrides=SHARED, out=tmp_path / "one", log=lambda _: None)
    assert json.loads((tmp_path / "two" / "recipe.json").read_text())["world_size"] == 2
    two_metrics = without_time(json.loads((tmp_path / "two" / "metrics.json").read_text()))
    for a, b in zip(two_metrics, one.metrics, strict=True):
        for key, value in a.items():
            assert value == pytest.approx(b[key], rel=1e-4, abs=1e-4), key
    two_weights = load_file(tmp_path / "two" / "model.safetensors")
    one_weights = load_file(tmp_path / "one" / "model.safetensors")
    scale = max(float(w.abs().max()) for w in one_weights.values())
    difference = max(float((two_weights[k] - one_weights[k]).abs().max()) for k in one_weights)
    assert difference <= 1e-5 * scale, difference
    assert not any((tmp_path / "two").glob("**/*.tmp-*")), "rank 1 wrote nothing, rank 0 left no temporaries"


# -- evaluation and results files ---------------------------------------------------------------


def _folder(root: Path, classes: int = 2, images: int = 3) -> Path:
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(images):
            pixels = (torch.rand(20, 24, 3, generator=generator) * 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(root / f"class{c}" / f"{i}.png")
    return root


@pytest.mark.parametrize("protocol", ["single_crop", "ten_crop"])
def test_eval_reads_a_torchvision_style_checkpoint(tmp_path, run, protocol):
    data = _folder(tmp_path / "val")
    torch.manual_seed(0)
    weights = tmp_path / "resnet18.pth"
    torch.save(papers.build_model("resnet18", num_classes=2, image_size=32).state_dict(), weights)
    out = tmp_path / "results.json"
    args = ["eval", "resnet18", "--weights", str(weights), "--data", str(data), "-o", "image_size=32"]
    result = run(*args, "--protocol", protocol, "--out", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    measured = json.loads(result.stdout)
    assert measured["images"] == 6 and 0 <= measured["top1_accuracy"] <= 100
    assert measured["top5_accuracy"] == 100.0, "two classes: always within the top five"
    assert {m.protocol for m in read_results(out).results} == {protocol}


def test_eval_of_a_trained_run_matches_its_last_epoch(tmp_path, run):
    folder = tmp_path / "run"
    trained = train(
        "lenet5", "builtin:digits", overrides={**QUICK, "epochs": 1}, out=folder, log=lambda _: None
    )
    result = run(
        "eval", "lenet5", "--weights", str(folder / "model.safetensors"), "--data", "builtin:digits", "--json"
    )
    assert json.loads(result.stdout)["top1_accuracy"] == pytest.approx(trained.final["val_top1"])


def test_check_compares_a_results_file_with_the_reported_result(tmp_path, run):
    labels = {"dataset": "ImageNet (ILSVRC-2012)", "split": "val", "protocol": "single_crop"}
    close = Measured(variant="densenet121", metric="top1_accuracy", value=74.98, **labels)
    far = Measured(variant="densenet121", metric="top1_accuracy", value=70.0, **labels)
    for measured, status, exit_code in ((close, "pass", 0), (far, "fail", 1)):
        path = tmp_path / f"{status}.json"
        path.write_text(ResultsFile(results=[measured]).model_dump_json())
        checks = papers.check("densenet121", results=path)
        row = next(c for c in checks if c.metric == "top1_error" and c.protocol == "single_crop")
        assert row.status == status and row.measured == pytest.approx(25.02 if status == "pass" else 30.0)
        assert run("check", "densenet121", "--results", str(path)).exit_code == exit_code
    ten_crop = next(
        c for c in papers.check("densenet121", results=tmp_path / "pass.json") if c.protocol == "ten_crop"
    )
    assert ten_crop.status == "not_measurable", "a single-crop measurement does not answer a 10-crop result"
