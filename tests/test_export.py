"""`papers export`: a classification variant of every family to ONNX, run by onnxruntime, compared with torch.

Inputs are small (``image_size``) so that the whole file takes well under a minute; VGG's classifier
does not shrink with the input (7×7 adaptive pooling, two 4096-wide layers), so its convolutions are
narrowed instead. The TorchScript exporter is used where it works (it is several times faster); the
dynamo-based one, the default, where it does not (LeNet-5's connection table, VGG's pooling at 32×32).
"""

from __future__ import annotations

import json
import os

import pytest

pytest.importorskip("onnx", reason="papers export needs onnx (pip install -e '.[export]')")
pytest.importorskip("onnxruntime", reason="papers export needs onnxruntime (pip install -e '.[export]')")

import papers
from papers.export import TOLERANCE, export_onnx

SMALL = {"image_size": 64, "num_classes": 10}
CASES = {  # one classification variant per paper of the registry
    "lenet": ("lenet5", {}, "dynamo"),
    "alexnet": ("alexnet", SMALL, "torchscript"),
    "nin": ("nin_cifar10", {}, "torchscript"),
    "vgg": ("vgg11", {"image_size": 32, "widths": [8, 16, 16, 16, 16], "num_classes": 10}, "dynamo"),
    "googlenet": ("googlenet", SMALL, "torchscript"),
    "bn-inception": ("bn_inception", SMALL, "torchscript"),
    "inception-v3": ("inception_v3", {"image_size": 75, "num_classes": 10}, "torchscript"),
    "inception-v4": ("inception_resnet_v1", {"image_size": 75, "num_classes": 10}, "torchscript"),
    "resnet": ("resnet18", SMALL, "torchscript"),
    "preact-resnet": ("preact_resnet110", {}, "torchscript"),
    "wide-resnet": ("wrn_16_4", {}, "torchscript"),
    "resnext": ("resnext50_32x4d", SMALL, "torchscript"),
    "senet": ("seresnet50", SMALL, "torchscript"),
    "densenet": ("densenet_40_12", {}, "torchscript"),
}


def _needs(exporter: str) -> None:
    if exporter == "dynamo":
        pytest.importorskip(
            "onnxscript", reason="the dynamo exporter needs onnxscript (pip install -e '.[export]')"
        )


def test_every_classification_paper_has_an_export_case():
    assert {spec.id for spec in papers.list_papers(topic="classification")} <= set(CASES)


@pytest.mark.parametrize("paper", sorted(CASES))
def test_onnxruntime_agrees_with_torch_on_the_exported_model(paper, tmp_path):
    variant, options, exporter = CASES[paper]
    _needs(exporter)
    out = tmp_path / f"{variant}.onnx"
    report = export_onnx(variant, out, exporter=exporter, **options)
    assert report.passed and report.written, report
    assert report.relative_difference <= TOLERANCE
    assert report.max_abs_reference > 0
    assert out.stat().st_size == report.bytes
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary file left beside it


def test_the_cli_reports_the_difference_and_writes_the_file(run, tmp_path):
    out = tmp_path / "resnet20.onnx"
    result = run("export", "resnet20", "--out", str(out), "--exporter", "torchscript", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["passed"] and report["relative_difference"] <= report["tolerance"] == 1e-4
    assert report["inputs"] == {"image": [1, 3, 32, 32]} and report["outputs"] == [[1, 10]]
    assert out.stat().st_size == report["bytes"]
    plain = run("export", "resnet20", "--out", str(out), "--exporter", "torchscript", "--force")
    assert plain.exit_code == 0, plain.stderr
    assert plain.stdout.startswith("✓ onnxruntime vs torch: max |a - b| = ")


def test_an_existing_out_is_refused_in_one_line_and_left_as_it_was(run, tmp_path):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"mine")
    result = run("export", "resnet20", "--out", str(out))
    assert result.exit_code == 2
    assert result.stderr.strip() == f"papers: error: {out}: exists; pass --force to overwrite it"
    assert out.read_bytes() == b"mine"
    assert sorted(os.listdir(tmp_path)) == ["model.onnx"]


def test_an_unknown_variant_and_a_missing_folder_are_one_line_and_exit_2(run, tmp_path):
    unknown = run("export", "resnet5O", "--out", str(tmp_path / "x.onnx"))
    missing = run("export", "resnet20", "--out", str(tmp_path / "no" / "x.onnx"))
    for result in (unknown, missing):
        assert result.exit_code == 2
        assert len(result.stderr.strip().splitlines()) == 1
    assert os.listdir(tmp_path) == []


def test_an_exporter_failure_is_one_line_naming_the_op_and_nothing_is_written(run, tmp_path):
    result = run("export", "lenet5", "--out", str(tmp_path / "lenet5.onnx"), "--exporter", "torchscript")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "index_add" in lines[0] and lines[0].endswith("try --exporter dynamo")
    assert os.listdir(tmp_path) == []


def test_weights_from_a_file_are_the_ones_exported(run, tmp_path):
    import numpy as np
    import onnxruntime
    import torch

    weights = tmp_path / "w.safetensors"
    assert run("build", "resnet20", "--out", str(weights)).exit_code == 0
    out = tmp_path / "resnet20.onnx"
    report = export_onnx("resnet20", out, weights=weights, exporter="torchscript", seed=3)
    assert report.passed and report.weights == str(weights)
    model = papers.build_model("resnet20").eval()
    from safetensors.torch import load_file

    model.load_state_dict(load_file(weights))
    x = torch.randn(1, 3, 32, 32)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.abs(got - expected).max() <= TOLERANCE * np.abs(expected).max()
