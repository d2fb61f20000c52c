"""`papers train` / `papers eval` refuse damaged run folders, decompression bombs, batches larger than
the machine, one-class data and impossible augmentations with one line and exit status 2, writing
and deleting nothing; an interrupted run offers --resume only when it has a checkpoint; temporaries
a killed writer left are cleaned up."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import papers
from papers.errors import PapersError
from papers.train import train

QUICK = {"batch_size": 64, "optimizer": {"name": "sgd", "lr": 0.001, "momentum": 0.9}, "epochs": 3}


pytestmark = pytest.mark.usefixtures("one_thread")


def contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(result, *named: str, message: str) -> None:
    assert result.exit_code == 2, result.stdout + result.stderr
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("papers: error: ") and "Traceback" not in result.stderr
    for name in named:
        assert name in result.stderr, result.stderr
    assert message in result.stderr, result.stderr


def png(width: int, height: int, pixels: bytes | None = None) -> bytes:
    """A greyscale PNG; without ``pixels``, only a header claiming ``width`` × ``height`` (a bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = zlib.compress(pixels if pixels is not None else b"")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def small_png() -> bytes:
    return png(4, 4, b"".join(b"\x00" + bytes(range(i, i + 4)) for i in range(4)))


# -- damaged run folders on --resume ------------------------------------------------------------


@pytest.fixture(scope="module")
def good_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("good") / "run"
    torch.set_num_threads(1)
    train("lenet5", "builtin:digits", overrides=QUICK, out=folder, stop_after=1, log=lambda _: None)
    assert (folder / "checkpoints" / "last.json").is_file()
    return folder


@pytest.fixture
def run_folder(good_run: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "runs" / "r4"
    shutil.copytree(good_run, folder)
    return folder


def _pointer(folder: Path) -> dict:
    return json.loads((folder / "checkpoints" / "last.json").read_text())


def _truncate_weights(folder: Path) -> tuple[str, str]:
    path = folder / "checkpoints" / _pointer(folder)["weights"]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return str(path), "damaged checkpoint"


def _truncate_optimizer(folder: Path) -> tuple[str, str]:
    path = folder / "checkpoints" / _pointer(folder)["optimizer"]
    path.write_bytes(path.read_bytes()[:20])
    return str(path), "damaged checkpoint"


def _weights_missing_a_key(folder: Path) -> tuple[str, str]:
    path = folder / "checkpoints" / _pointer(folder)["weights"]
    tensors = load_file(path)
    name = sorted(tensors)[0]
    del tensors[name]
    save_file(tensors, str(path))
    return str(path), f"missing: {name}"


def _weights_of_another_shape(folder: Path) -> tuple[str, str]:
    path = folder / "checkpoints" / _pointer(folder)["weights"]
    save_file(papers.build_model("lenet5", num_classes=4).state_dict(), str(path))
    return str(path), "shape mismatch: output.centers (4, 84) vs (10, 84)"


def _state_missing_a_key(folder: Path) -> tuple[str, str]:
    path = folder / "checkpoints" / _pointer(folder)["state"]
    state = json.loads(path.read_text())
    del state["step"]
    path.write_text(json.dumps(state))
    return str(path), "step: Field required"


def _pointer_to(name: str, key: str = "state") -> callable:
    def damage(folder: Path) -> tuple[str, str]:
        last = folder / "checkpoints" / "last.json"
        last.write_text(json.dumps({**_pointer(folder), key: name}))
        return str(last), "outside the run folder"

    return damage


def _pointer_outside_to_a_valid_state(folder: Path) -> tuple[str, str]:
    """A state file outside the run folder that reading would accept: it must not be opened at all."""
    state = folder / "checkpoints" / _pointer(folder)["state"]
    shutil.copy(state, folder.parent.parent / "outside.json")
    return _pointer_to("../../../outside.json")(folder)


def _pointer_not_json(folder: Path) -> tuple[str, str]:
    last = folder / "checkpoints" / "last.json"
    last.write_text('{"epoch": 1, "weights": ')
    return str(last), "damaged checkpoint pointer"


DAMAGE = {
    "truncated-weights": _truncate_weights,
    "truncated-optimizer": _truncate_optimizer,
    "weights-missing-a-key": _weights_missing_a_key,
    "weights-of-another-shape": _weights_of_another_shape,
    "state-missing-a-key": _state_missing_a_key,
    "pointer-to-etc-passwd": _pointer_to("../../../../etc/passwd"),
    "pointer-to-an-absolute-path": _pointer_to("/etc/passwd", key="weights"),
    "pointer-outside-to-a-valid-state": _pointer_outside_to_a_valid_state,
    "pointer-not-json": _pointer_not_json,
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_resume_refuses_a_damaged_run_folder(run, run_folder, case):
    named, message = DAMAGE[case](run_folder)
    before = contents(run_folder.parent.parent)
    result = run("train", "lenet5", "--resume", str(run_folder))
    refused(result, named, message=message)
    assert contents(run_folder.parent.parent) == before, "nothing written or deleted"
    with pytest.raises(PapersError, match=message.replace("(", r"\(").replace(")", r"\)")):
        train("lenet5", resume=run_folder, log=lambda _: None)
    assert contents(run_folder.parent.parent) == before


def test_resume_removes_the_temporaries_of_a_killed_writer(run_folder):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    dead = int(gone.stdout)
    stale = [
        run_folder / f".recipe.json.tmp-{dead}",
        run_folder / "checkpoints" / f".epoch-0002.safetensors.tmp-{dead}",
    ]
    live = run_folder / "checkpoints" / f".epoch-0002.json.tmp-{os.getppid()}"
    for path in [*stale, live]:
        path.write_bytes(b"half a file")
    resumed = train("lenet5", resume=run_folder, stop_after=1, log=lambda _: None)
    assert resumed.final["epoch"] == 2
    assert not any(path.exists() for path in stale) and live.exists()


def test_a_folder_holding_only_dead_temporaries_is_started_in(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    folder = tmp_path / "run"
    folder.mkdir()
    stale = folder / f".recipe.json.tmp-{int(gone.stdout)}"
    stale.write_bytes(b"{")
    train("lenet5", "builtin:digits", overrides=QUICK, out=folder, stop_after=1, log=lambda _: None)
    assert not stale.exists() and (folder / "checkpoints" / "last.json").exists()


# -- interrupts -----------------------------------------------------------------------------------


def test_an_interrupt_before_the_first_checkpoint_offers_no_resume(run, tmp_path, monkeypatch):
    import papers.train

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(papers.train._Loop, "_epoch", interrupted)
    folder = tmp_path / "r4"
    result = run("train", "lenet5", "--data", "builtin:digits", "--out", str(folder), "-r", "batch_size=64")
    assert result.exit_code == 130
    assert "--resume" not in result.stderr and "nothing to resume" in result.stderr
    assert not folder.exists(), "the folder it made is removed"


def test_an_interrupt_after_a_checkpoint_offers_resume(run, tmp_path, monkeypatch):
    import papers.train

    epoch = papers.train._Loop._epoch
    calls = []

    def interrupted_in_the_second_epoch(self):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        epoch(self)

    monkeypatch.setattr(papers.train._Loop, "_epoch", interrupted_in_the_second_epoch)
    folder = tmp_path / "r4"
    args = ["train", "lenet5", "--data", "builtin:digits", "--out", str(folder), "-r", "batch_size=64"]
    result = run(*args, "--epochs", "3")
    assert result.exit_code == 130
    assert result.stderr.splitlines()[-1].endswith(f"--resume {folder}")


# -- data -----------------------------------------------------------------------------------------


def _bomb_folder(root: Path, split: str) -> Path:
    for name in ("cat", "dog"):
        (root / split / name).mkdir(parents=True)
        (root / split / name / "0.png").write_bytes(small_png())
    bomb = root / split / "dog" / "1.png"
    bomb.write_bytes(png(20000, 20000))  # 4e8 pixels claimed: more than twice Image.MAX_IMAGE_PIXELS
    return bomb


def test_training_refuses_a_decompression_bomb(run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bomb = _bomb_folder(tmp_path / "data", "train")
    before = contents(tmp_path)
    result = run("train", "lenet5", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"))
    refused(result, str(bomb), message="decompression bomb")
    assert contents(tmp_path) == before and not (tmp_path / "run").exists()


@pytest.mark.parametrize("workers", ["0", "1"])
def test_evaluation_refuses_a_decompression_bomb(run, tmp_path, workers):
    bomb = _bomb_folder(tmp_path / "data", "val")
    weights = tmp_path / "lenet5.safetensors"
    save_file(papers.build_model("lenet5", num_classes=2).state_dict(), str(weights))
    args = [
        "eval",
        "lenet5",
        "--weights",
        str(weights),
        "--data",
        str(tmp_path / "data"),
        "--workers",
        workers,
    ]
    refused(run(*args), str(bomb), message="decompression bomb")


def test_a_warning_before_a_refusal_does_not_add_lines(run, tmp_path, monkeypatch):
    """Pillow warns of an image of more than Image.MAX_IMAGE_PIXELS (less than twice as many) before
    finding it truncated: the warning, which would print as two more lines, is dropped."""
    import warnings

    from PIL import Image

    def printed(message, category, filename, lineno, file=None, line=None):  # as outside pytest
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    monkeypatch.setattr(warnings, "showwarning", printed)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    for name in ("cat", "dog"):
        (tmp_path / "data" / name).mkdir(parents=True)
        (tmp_path / "data" / name / "0.png").write_bytes(small_png())
    large = tmp_path / "data" / "cat" / "1.png"
    large.write_bytes(png(40, 40))  # 1,600 pixels: a warning, then no pixels to decode
    weights = tmp_path / "lenet5.safetensors"
    save_file(papers.build_model("lenet5", num_classes=2).state_dict(), str(weights))
    result = run("eval", "lenet5", "--weights", str(weights), "--data", str(tmp_path / "data"))
    refused(result, str(large), message="image file is truncated")
    assert "DecompressionBombWarning" not in result.stderr
    large.write_bytes(png(40, 40, b"".join(b"\x00" + bytes(40) for _ in range(40))))
    result = run("eval", "lenet5", "--weights", str(weights), "--data", str(tmp_path / "data"))
    assert result.exit_code == 0 and "DecompressionBombWarning" in result.stderr, "shown when not refused"


def test_eval_of_a_torchvision_style_checkpoint_of_a_one_channel_model(run, tmp_path):
    """ImageNet's statistics are for three channels: a one-channel model's .pth is not normalised."""
    weights = tmp_path / "good.pth"
    torch.save(papers.build_model("lenet5").state_dict(), weights)
    result = run("eval", "lenet5", "--weights", str(weights), "--data", "builtin:digits", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["images"] == 359 and result.stderr == ""


def test_a_normalisation_with_the_wrong_channels_is_refused(tmp_path):
    from papers.evaluate import evaluate

    weights = tmp_path / "lenet5.safetensors"
    save_file(papers.build_model("lenet5").state_dict(), str(weights))
    three = {"mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]}
    with pytest.raises(PapersError, match="3 means and 3 standard deviations; the model takes 1 channels"):
        evaluate("lenet5", weights, "builtin:digits", normalize=three)


def test_one_class_is_refused_naming_the_folder(run, tmp_path):
    (tmp_path / "data" / "train" / "cat").mkdir(parents=True)
    (tmp_path / "data" / "train" / "cat" / "0.png").write_bytes(small_png())
    result = run("train", "lenet5", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"))
    refused(result, str(tmp_path / "data" / "train"), message="needs at least two")
    assert not (tmp_path / "run").exists()


# -- memory ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "named", "message"),
    [
        (
            ["train", "vgg11", "--data", "builtin:digits", "-r", "input_size=[20000, 20000]"],
            "-r input_size",
            "TB",
        ),
        (
            ["train", "vgg11", "--data", "builtin:digits", "--batch-size", "100000"],
            "-r batch_size",
            "a batch of",
        ),
        (
            ["eval", "vgg11", "--data", "builtin:digits", "-o", "image_size=20000"],
            "--batch-size",
            "a batch of",
        ),
        (
            ["eval", "vgg11", "--data", "builtin:digits", "-o", "image_size=8000", "--batch-size", "1"],
            "-o image_size",
            "builtin:digits at 3×8000×8000",
        ),
        (
            ["eval", "vgg11", "--data", "DIR", "--resize", "100000"],
            "--resize",
            "an image resized to 100000×100000",
        ),
    ],
)
def test_a_batch_larger_than_the_machine_is_refused_before_allocating(run, tmp_path, args, named, message):
    if "DIR" in args:
        for name in ("cat", "dog"):
            (tmp_path / "data" / name).mkdir(parents=True)
            (tmp_path / "data" / name / "0.png").write_bytes(small_png())
        args = [str(tmp_path / "data") if a == "DIR" else a for a in args]
    if args[0] == "eval":
        save_file({"x": torch.zeros(1)}, str(tmp_path / "w.safetensors"))
        args = [*args, "--weights", str(tmp_path / "w.safetensors")]
    else:
        args = [*args, "--out", str(tmp_path / "run")]
    before = contents(tmp_path)
    result = run(*args)
    refused(result, named, message=message)
    assert "of memory" in result.stderr and contents(tmp_path) == before


def test_the_memory_check_is_the_machines(monkeypatch):
    import papers.data

    monkeypatch.setattr(papers.data, "physical_memory", lambda: 1000)
    papers.data.check_memory("a small thing", 500, field="x")
    with pytest.raises(papers.data.DataError, match=r"more than 50% of this machine's 1\.0 KB"):
        papers.data.check_memory("a large thing", 501, field="x")


# -- augmentation arguments -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("augmentation", "message"),
    [
        ("{name: random_crop, args: {size: -5}}", "size must be a positive integer"),
        ("{name: random_crop, args: {size: [32, 0]}}", "size must be a positive integer"),
        ("{name: random_crop, args: {size: 32, padding: -1}}", "padding must be"),
        ("{name: random_crop, args: {size: 32, padding_mode: mirror}}", "padding_mode must be one of"),
        ("{name: resize, args: {size: 0}}", "size must be a positive integer"),
        ("{name: center_crop, args: {size: thirty}}", "size must be a positive integer"),
        ("{name: horizontal_flip, args: {p: 1.5}}", "p is a probability in [0, 1]"),
        ("{name: random_resized_crop, args: {area: [0.5, 2]}}", "area must be [low, high]"),
        ("{name: random_resized_crop, args: {aspect_ratio: [2, 1]}}", "aspect_ratio must be"),
        ("{name: scale_jitter, args: {min: 512, max: 256}}", "min ≤ max"),
        ("{name: rgb_shift, args: {std: -0.1}}", "std must be a number ≥ 0"),
        ("{name: normalize, args: {mean: [0.5]}}", "mean and std are given together"),
        ("{name: normalize, args: {mean: [0.5], std: [0]}}", "std positive numbers"),
        ("{name: normalize, args: {mean: [0.5, 0.5, 0.5], std: [1, 1, 1]}}", "takes 1-channel images"),
    ],
)
def test_impossible_augmentation_arguments_are_refused(run, tmp_path, augmentation, message):
    args = ["train", "lenet5", "--data", "builtin:digits", "--out", str(tmp_path / "run")]
    result = run(*args, "-r", f"augmentation=[{augmentation}]")
    refused(result, "-r augmentation", message=message)
    assert not (tmp_path / "run").exists()


def test_the_papers_augmentations_still_validate():
    from papers.recipe import resolve
    from papers.registry import get_registry

    for entry in get_registry().list():
        if entry.spec.hyperparameters is not None:
            resolve(entry.spec)
