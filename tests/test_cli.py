"""The command line: the JSON shapes scripts rely on, exit statuses, and clean refusals."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from tests.conftest import VGG_SPEC, minimal_spec, write_spec


def test_list_json_has_the_fields_scripts_use(run):
    result = run("list", "--json")
    assert result.exit_code == 0
    papers = json.loads(result.stdout)
    vgg = next(p for p in papers if p["id"] == "vgg")
    assert {"id", "title", "year", "topic", "variants"} <= set(vgg)
    assert vgg["topic"] == "classification" and "vgg16" in vgg["variants"]


def test_list_filters_by_topic(run):
    assert "vgg" in run("list", "--topic", "classification").stdout
    detection = {p["id"] for p in json.loads(run("list", "--topic", "detection", "--json").stdout)}
    assert {"fpn", "faster_rcnn", "sppnet", "fast_rcnn"} <= detection and "vgg" not in detection
    segmentation = {p["id"] for p in json.loads(run("list", "--topic", "segmentation", "--json").stdout)}
    assert {"fcn", "segnet", "dilated_conv", "deeplab_v1", "deeplab_v2", "deeplabv3"} <= segmentation


def test_list_does_not_import_torch():
    code = (
        "import sys; from papers.cli import cli; cli(['list'], standalone_mode=False); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("False")


def test_show_prints_citation_recipe_variants_and_results(run):
    result = run("show", "vgg")
    assert result.exit_code == 0
    for text in (
        "Very Deep Convolutional Networks",
        "Simonyan",
        "arXiv:1409.1556",
        "vgg16_bn",
        "Table 3",
        "momentum",
    ):
        assert text in result.stdout


def test_show_accepts_a_variant_id_for_its_paper(run):
    assert json.loads(run("show", "vgg16", "--json").stdout)["id"] == "vgg"


def test_build_json_reports_params_macs_and_output_shape(run):
    result = run("build", "vgg16", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["params"] == 138_357_544
    assert data["macs"] == 15_470_264_320
    assert data["output_shape"] == [1, 1000]
    assert data["layers"][0] == {
        "name": "features.0",
        "op": "conv2d",
        "output_shape": [1, 64, 224, 224],
        "params": 1792,
        "macs": 86_704_128,
    }


def test_build_summary_table_and_options(run):
    result = run("build", "vgg11", "-o", "num_classes=10", "-o", "image_size=32")
    assert result.exit_code == 0
    assert "classifier.6" in result.stdout and "[1, 10]" in result.stdout


def test_build_out_writes_safetensors(run, tmp_path):
    out = tmp_path / "tiny.safetensors"
    result = run("build", "vgg11", "-o", "num_classes=10", "--out", str(out))
    assert result.exit_code == 0, result.stderr
    weights = load_file(out)
    assert weights["classifier.6.weight"].shape == (10, 4096)
    assert list(tmp_path.iterdir()) == [out], "no temporary file left behind"


def test_check_json_and_exit_status(run):
    result = run("check", "vgg", "--json")
    assert result.exit_code == 0
    checks = json.loads(result.stdout)
    assert {"paper", "variant", "metric", "reported", "measured", "status"} <= set(checks[0])
    assert {c["status"] for c in checks} == {"pass", "not_measurable"}
    table = run("check", "vgg").stdout
    assert "✓" in table and "12 passed, 0 failed" in table


def test_check_all_and_variant_narrowing(run):
    assert run("check", "--all", "--json").exit_code == 0
    checks = json.loads(run("check", "vgg", "--variant", "vgg19", "--json").stdout)
    assert {c["variant"] for c in checks} == {"vgg19"}


def test_failed_check_exits_1(tmp_path, monkeypatch, fresh_registry, run):
    data = minimal_spec()
    data["results"] = [
        {"variant": "tiny8", "metric": "params", "value": 999.0, "unit": "count", "source": "T1"}
    ]
    spec_file = write_spec(tmp_path / "tiny.yaml", data)
    from papers import hookspecs
    from papers.plugins import PluginInfo
    from papers.registry import get_registry

    class Plugin:
        @hookspecs.hookimpl
        def papers_specs(self):
            return [spec_file]

    registry = get_registry()
    registry.manager.register(Plugin(), PluginInfo("tiny", "tests", "0", "tests"))
    registry._add_spec(registry.manager.plugins["tiny"], spec_file)
    result = run("check", "tiny")
    assert result.exit_code == 1
    assert "✗" in result.stdout


def test_validate_accepts_a_good_spec(run):
    result = run("validate", str(VGG_SPEC))
    assert result.exit_code == 0 and "ok" in result.stdout


def test_schema_is_json_schema(run):
    schema = json.loads(run("schema").stdout)
    assert schema["title"] == "Spec" and "variants" in schema["properties"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["build", "vgg17"], "no variant 'vgg17'; did you mean"),
        (["build", "vgg"], "'vgg' is a paper; name one of its variants"),
        (["show", "resnet9000"], "no paper or variant 'resnet9000'"),
        (["build", "vgg16", "-o", "depth=3"], "no parameter 'depth'"),
        (["build", "vgg16", "-o", "num_classes"], "not KEY=VALUE"),
        (["build", "vgg16", "-o", "num_classes=ten"], "num_classes"),
        (["build", "retinanet_r50_fpn", "-o", "focal_alpha=1.5"], "focal_alpha"),
        (["build", "retinanet_r50_fpn", "-o", "score_thresh=2"], "score_thresh"),
        (["build", "vgg16", "--out", "weights.pt"], ".safetensors"),
        (["check"], "name a paper or variant, or pass --all"),
        (
            ["check", "vgg", "--variant", "resnet50"],
            "--variant: 'resnet50' is a variant of 'resnet', not of 'vgg'",
        ),
        (["check", "vgg", "--variant", "nosuch"], "--variant: no variant 'nosuch'"),
        (["list", "--topic", "nosuch"], "--topic: unknown topic 'nosuch'; known: classification"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(run, args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run(*args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert list(tmp_path.iterdir()) == []
