"""Segmenters and detectors trained data-parallel under torchrun: two CPU processes (gloo), each taking
every other image of each batch, their gradients averaged, the val split scored in shares. What a
user relies on: the run ends, one folder is written, the two processes' models stay one model, and
the val figures in ``metrics.json`` are those of the weights saved (``papers eval`` gives them)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from papers.shapes import ShapesConfig, write
from tests.test_task_runs import _plain_registry, plain  # noqa: F401 (fixtures)
from tests.test_train_segmentation import _plain

SCRIPT = """
import json, sys
from papers.train import train

variant, data, out, options, overrides = sys.argv[1:6]
train(variant, data, out=out, options=json.loads(options), overrides=json.loads(overrides), threads=1)
"""


def _torchrun(tmp_path: Path, *args: str, ok: bool = True, env: dict | None = None) -> list[str]:
    """``args`` (a script or ``-m papers ...``) under torchrun with two processes; each rank's output
    (stdout and stderr), kept so a failure says why."""
    logs = tmp_path / "logs"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    torchrun += ["--log-dir", str(logs), "--redirects", "3"]
    done = subprocess.run(
        [*torchrun, *args],
        env={**(env or os.environ), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    ranks = [f.read_text() for f in sorted(logs.rglob("*.log"))]
    if ok:
        assert done.returncode == 0, done.stderr[-2000:] + "\n" + "\n".join(r[-3000:] for r in ranks)
    else:
        assert done.returncode != 0
    return ranks


def _train(tmp_path: Path, *args: str) -> None:
    """``papers.train.train(*args)`` under torchrun with two processes."""
    script = tmp_path / "train_two.py"
    script.write_text(SCRIPT)
    _torchrun(tmp_path, str(script), *args)


def _metrics(folder: Path) -> list[dict]:
    return json.loads((folder / "metrics.json").read_text())


def test_a_segmenter_trains_on_two_processes_and_its_saved_weights_score_what_it_reported(run, tmp_path):
    data = _plain(tmp_path / "data", n=7)  # batches of 4 and 3: every share but one of 2 images
    out = tmp_path / "two"
    overrides = {"epochs": 2, "batch_size": 4, "crop": 32}
    _train(tmp_path, "segnet_basic", str(data), str(out), "{}", json.dumps(overrides))
    rows = _metrics(out)
    assert [row["epoch"] for row in rows] == [1, 2] and all("val_miou" in row for row in rows)
    assert not list(out.glob(".*.tmp")), "no temporary left behind"
    weights = str(out / "model.safetensors")
    evaluated = run("eval", "segnet_basic", "--weights", weights, "--data", str(data), "--json")
    assert evaluated.exit_code == 0, evaluated.stderr
    measured = json.loads(evaluated.stdout)
    for key in ("miou", "pixel_acc", "mean_acc", "fwiou"):  # shares of one confusion matrix, summed
        assert measured[key] == pytest.approx(100 * rows[-1][f"val_{key}"], abs=1e-9), key


def test_a_batch_that_does_not_split_over_the_processes_is_refused_in_one_line(tmp_path):
    data = _plain(tmp_path / "data", n=4)
    command = ["-m", "papers", "train", "segnet_basic", "--data", str(data), "--batch-size", "3"]
    ranks = _torchrun(tmp_path, *command, "--out", str(tmp_path / "run"), ok=False)
    said = [line for rank in ranks for line in rank.splitlines() if line.strip()]
    assert said and all("batch_size 3 does not split evenly over 2 processes" in line for line in said)
    assert not (tmp_path / "run").exists()


TINY = """
import sys
from pathlib import Path

import papers.registry
from papers.train import train
from tests.test_task_runs import VARIANT, _registry_with

data, out, registry = sys.argv[1:4]
papers.registry._current = _registry_with(Path(registry), None)
train(VARIANT, data, out=out, overrides={"epochs": 2, "lr": 0.005}, threads=1)
"""


@pytest.mark.usefixtures("plain")
def test_a_detector_on_two_processes_matches_one_and_scores_its_saved_weights(run, tmp_path):
    """The tiny detector (no batch norm, no dropout; its losses means over images) on two processes,
    one image each, takes the same steps as one process on batches of two: the flips are drawn alike
    and each process's gradient is its image's."""
    from tests.test_task_runs import VARIANT

    # scenes of one size: a batch of two is then not padded, and its images see what one alone does
    config = ShapesConfig(seed=3, images=13, min_size=128, max_size=128)  # 8 to train, 3 to score
    shapes = write(tmp_path / "shapes", config).parent.parent
    script = tmp_path / "tiny_two.py"
    script.write_text(TINY)
    (tmp_path / "registry").mkdir()
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    _torchrun(
        tmp_path, str(script), str(shapes), str(tmp_path / "two"), str(tmp_path / "registry"), env=environment
    )
    one = run(
        "train",
        VARIANT,
        "--data",
        str(shapes),
        "--epochs",
        "2",
        "-r",
        "lr=0.005",
        "--out",
        str(tmp_path / "one"),
    )
    assert one.exit_code == 0, one.stderr
    two_rows, one_rows = _metrics(tmp_path / "two"), _metrics(tmp_path / "one")
    for ours, theirs in zip(two_rows, one_rows, strict=True):
        assert ours["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-4)
        assert ours["val_voc07_map"] == pytest.approx(theirs["val_voc07_map"], abs=1e-6)
    assert two_rows[-1]["val_voc07_map"] > 0  # a figure the sharing could get wrong
    two, one_weights = (load_file(str(tmp_path / f / "model.safetensors")) for f in ("two", "one"))
    assert all(torch.allclose(two[k], one_weights[k], rtol=1e-4, atol=1e-6) for k in one_weights)
    weights = str(tmp_path / "two" / "model.safetensors")
    evaluated = run("eval", VARIANT, "--weights", weights, "--data", str(shapes), "--split", "val", "--json")
    assert evaluated.exit_code == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["voc07_map"] == pytest.approx(two_rows[-1]["val_voc07_map"], abs=1e-6)


def test_a_plugins_own_detector_trains_on_two_processes(tmp_path):
    """YOLOv3 (a plugin's own detector, its network inside the model DistributedDataParallel wraps),
    narrow and at 128 pixels, channels-last."""
    from papers_plugins.detection import yolov3

    shapes = write(tmp_path / "shapes", ShapesConfig(seed=3, images=12)).parent.parent
    out = tmp_path / "two"
    overrides = {"epochs": 1, "lr": 0.001, "grad_clip": 10.0, "channels_last": True}
    options = {**yolov3.PROXY_OPTIONS, "image_size": 128, "anchors": yolov3.anchors_at(128)}
    _train(tmp_path, "yolov3_416", str(shapes), str(out), json.dumps(options), json.dumps(overrides))
    (row,) = _metrics(out)
    assert math.isfinite(row["train_loss"]) and 0.0 <= row["val_voc07_map"] <= 100.0
    assert json.loads((out / "recipe.json").read_text())["options"]["image_size"] == 128
