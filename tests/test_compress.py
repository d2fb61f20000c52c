"""``papers compress``: a method variant applied to its base with weights, written as one container,
measured beside the base; and the container's encodings.

The methods are the demo package's (``tests/plugin_packages/methods_demo``): ``narrow`` halves the
widths (a rewrite), ``magnitude`` masks the smallest weights (an apply step).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

import papers
import papers.registry
from papers import compression
from papers.compression import ContainerError, decode_state, encode_state, read_container
from papers.errors import PapersError
from tests.conftest import pip_install
from tests.test_methods import DEMO

REPORT_KEYS = {
    "params_before",
    "params_after",
    "nonzero_before",
    "nonzero_after",
    "bits_per_weight_after",
    "bytes_before",
    "bytes_after",
    "macs_before",
    "macs_after",
    "latency_ms_before",
    "latency_ms_after",
    "latency_device",
    "latency_threads",
    "latency",
    "metric",
    "metric_before",
    "metric_after",
    "theoretical",
}


pytestmark = pytest.mark.usefixtures("one_thread")


def compressed(run, *args: str) -> dict:
    result = run("compress", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def seeded_base(variant: str, **options) -> torch.nn.Module:
    """The base model ``papers compress`` starts from without --weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return papers.build_model(variant, **options).eval()


# -- the report and the files --------------------------------------------------------------------


def test_compress_writes_a_container_the_base_and_a_flat_report(demo, run, tmp_path):
    out = tmp_path / "out"
    report = compressed(run, "magnitude-demo-lenet5-90", "--out", str(out))
    assert set(report) >= REPORT_KEYS
    assert sorted(os.listdir(out)) == ["base.safetensors", "model.safetensors", "report.json"]
    assert json.loads((out / "report.json").read_text()) == report
    assert all(not isinstance(v, dict) for k, v in report.items() if k not in ("theoretical", "options"))
    assert report["bytes_before"] == (out / "base.safetensors").stat().st_size
    assert report["bytes_after"] == (out / "model.safetensors").stat().st_size
    assert report["base"] == "lenet5" and report["methods"][0]["settings"]["sparsity"] == 0.9
    assert report["params_after"] == report["params_before"] == 60_000, "a mask is no smaller tensor"
    assert report["macs_after"] == report["macs_before"], "dense kernels do every multiply-add"
    assert report["nonzero_after"] < 0.15 * report["params_after"]
    assert report["latency_device"].startswith("cpu") and report["latency_threads"] == 1
    assert [t["batch"] for t in report["latency"]] == [8] and report["latency"][0]["ms_after"] > 0
    assert report["metric"] == "top1_accuracy" and report["metric_before"] is report["metric_after"] is None
    assert report["theoretical"]["macs_nonzero_after"] < report["macs_after"]


def test_masked_weights_are_stored_sparsely_so_the_bytes_drop(demo, run, tmp_path):
    report = compressed(run, "magnitude-demo-lenet5-90", "--out", str(tmp_path))
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as handle:
        metadata = handle.metadata()
        gaps = handle.get_tensor("c5.conv.weight#gaps")
        entries = handle.get_tensor("c5.conv.weight#entries")
    encoding = json.loads(metadata["encoding"])["c5.conv.weight"]
    # 10% kept: a byte per kept value (the gap before it, 8 bits for a convolution, as Han et al.
    # store them) takes less than a bit per weight (48,000 bits = 6,000 bytes)
    assert encoding["kind"] == "relative" and encoding["shape"] == [120, 16, 5, 5] and encoding["bits"] == 8
    kept = 48_000 - int(0.9 * 48_000)
    assert gaps.dtype == torch.uint8 and gaps.numel() == entries.numel() == encoding["entries"] < 6_000
    assert int(torch.count_nonzero(entries)) == kept
    assert metadata["format"] == "papers.compressed" and metadata["variant"] == "magnitude-demo-lenet5-90"
    assert report["bytes_after"] < report["bytes_before"] / 5
    assert 4 < report["bits_per_weight_after"] < 6 and report["bits_per_weight_before"] == 32


def test_the_container_decodes_to_the_weights_the_method_left(demo, run, tmp_path):
    compressed(run, "magnitude-demo-lenet5-90", "--out", str(tmp_path))
    from papers_methods_demo.methods import MAGNITUDE, MagnitudeSettings

    from papers.methods import MethodContext

    base = seeded_base("lenet5")
    base_file = {k: v for k, v in papers.evaluate.load_weights(tmp_path / "base.safetensors").items()}
    assert all(torch.equal(base_file[k], v) for k, v in base.state_dict().items())
    masked = MAGNITUDE.apply(
        base, MagnitudeSettings(sparsity=0.9), MethodContext(papers.expand_variant("lenet5"))
    )
    state, _ = read_container(tmp_path / "model.safetensors")
    assert state.keys() == masked.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in masked.state_dict().items())
    model = papers.load_compressed(tmp_path / "model.safetensors").eval()
    images = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(images), masked(images))


def test_a_rewrite_removes_parameters_and_multiply_adds_for_real(demo, run, tmp_path):
    report = compressed(run, "narrow-demo-resnet20", "-o", "image_size=16", "--out", str(tmp_path))
    assert (report["params_before"], report["params_after"]) == (269_722, 68_050)
    assert report["macs_after"] < report["macs_before"] / 3.9
    assert report["bytes_after"] < report["bytes_before"] / 3.5
    assert report["bits_per_weight_after"] == 32, "nothing encoded: the tensors are smaller"
    assert report["options"] == {"image_size": 16}
    model = papers.load_compressed(tmp_path / "model.safetensors")
    assert model.get_submodule("layer1.0.conv1").weight.shape == (8, 8, 3, 3)


def test_a_rewritten_model_keeps_the_first_channels_of_each_layer(demo, run, tmp_path):
    compressed(run, "narrow-demo-resnet20", "-o", "image_size=16", "--out", str(tmp_path))
    base = seeded_base("resnet20", image_size=16).state_dict()
    state, _ = read_container(tmp_path / "model.safetensors")
    assert torch.equal(state["layer2.0.conv1.weight"], base["layer2.0.conv1.weight"][:16, :8])
    assert torch.equal(state["fc.weight"], base["fc.weight"][:, :32])
    assert torch.equal(state["fc.bias"], base["fc.bias"])


def test_methods_run_in_order_a_rewrite_then_a_mask(demo, run, tmp_path):
    report = compressed(run, "magnitude-demo-resnet20-narrow", "-o", "image_size=16", "--out", str(tmp_path))
    assert report["params_after"] == 68_050 and report["macs_after"] < report["macs_before"] / 3.9
    assert 0.45 < report["nonzero_after"] / report["params_after"] < 0.55
    assert report["theoretical"]["speedup_nonzero"] > 7


def test_data_gives_top1_before_and_after(demo, run, tmp_path):
    report = compressed(run, "magnitude-demo-lenet5-90", "--data", "builtin:digits", "--out", str(tmp_path))
    assert report["metric"] == "top1_accuracy" and report["options"] == {"num_classes": 10}
    assert 0 <= report["metric_before"] <= 100 and 0 <= report["metric_after"] <= 100
    assert report["metric_change"] == pytest.approx(
        report["metric_after"] - report["metric_before"], abs=1e-3
    )


def test_given_weights_are_the_base(demo, run, tmp_path):
    weights = tmp_path / "lenet5.safetensors"
    assert run("build", "lenet5", "--out", str(weights)).exit_code == 0
    report = compressed(
        run, "magnitude-demo-lenet5-90", "--weights", str(weights), "--out", str(tmp_path / "o")
    )
    assert report["weights"] == str(weights)
    given_state = papers.evaluate.load_weights(weights)
    written = papers.evaluate.load_weights(tmp_path / "o" / "base.safetensors")
    assert all(torch.equal(given_state[k], v) for k, v in written.items())


def test_the_human_summary_shows_before_and_after(demo, run, tmp_path):
    result = run("compress", "magnitude-demo-lenet5-90", "--out", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    assert "bytes on disk" in result.stdout and "non-zero" in result.stdout and "fewer bytes" in result.stdout


# -- bad input: one line, exit 2, nothing written ------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope-lenet5"], "no variant 'nope-lenet5'"),
        (["lenet5"], "'lenet5' is not a method variant"),
        (["magnitude-demo-lenet5-90", "--weights", "missing.safetensors"], "no such weights file"),
        (["magnitude-demo-lenet5-90", "--weights", "wrong.safetensors"], "weights do not fit the model"),
        (["magnitude-demo-lenet5-90", "--data", "builtin:mnist"], "unknown built-in data"),
        (["magnitude-demo-lenet5-90", "--data", "no/such/folder"], "no such data folder"),
        (["magnitude-demo-lenet5-90", "--device", "tpu"], "unknown device 'tpu'"),
        (["magnitude-demo-lenet5-90", "-o", "width=3"], "has no parameter 'width'"),
        (["narrow-demo-resnet20", "-o", "image_size=ten"], "takes an integer"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(args, message, demo, run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_file({"fc.weight": torch.zeros(2, 2)}, "wrong.safetensors")
    result = run("compress", *args, "--out", "out")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("papers: error: ")
    assert message in result.stderr
    assert not (tmp_path / "out").exists()


def test_an_out_folder_that_holds_files_needs_force(demo, run, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = run("compress", "magnitude-demo-lenet5-90", "--out", str(tmp_path))
    assert result.exit_code == 2 and "is not empty; pass --force" in result.stderr
    assert os.listdir(tmp_path) == ["notes.txt"]
    assert run("compress", "magnitude-demo-lenet5-90", "--out", str(tmp_path), "--force").exit_code == 0
    assert sorted(os.listdir(tmp_path)) == [
        "base.safetensors",
        "model.safetensors",
        "notes.txt",
        "report.json",
    ]
    (tmp_path / "file").write_text("")
    assert (
        "is not a folder"
        in run("compress", "magnitude-demo-lenet5-90", "--out", str(tmp_path / "file")).stderr
    )


def test_a_method_whose_apply_fails_is_one_error_naming_it(demo, tmp_path, monkeypatch):
    def fails(model, settings, context):
        raise RuntimeError("out of patience")

    origin, method = demo.methods["magnitude"]
    monkeypatch.setitem(demo.methods, "magnitude", (origin, dataclasses.replace(method, apply=fails)))
    with pytest.raises(PapersError) as caught:
        papers.compress("magnitude-demo-lenet5-90", out=tmp_path / "out")
    expected = f"method 'magnitude' ({origin}): apply failed: RuntimeError: out of patience"
    assert caught.value.message == expected and caught.value.field == "variants[0].methods[0]"
    assert not (tmp_path / "out").exists()


# -- the container's encodings -------------------------------------------------------------------


def round_trip(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, encoding = encode_state(state)
    decoded = decode_state(tensors, json.loads(json.dumps(encoding)))
    assert decoded.keys() == state.keys()
    for name, tensor in state.items():
        assert decoded[name].dtype == tensor.dtype and torch.equal(decoded[name], tensor), name
    return tensors, encoding


def test_few_distinct_values_are_a_codebook_of_packed_indices():
    levels = torch.tensor([-0.5, -0.25, 0.125, 0.25, 1.0])
    weight = levels[torch.randint(0, 5, (64, 64))]
    tensors, encoding = round_trip({"w": weight})
    assert encoding["w"]["kind"] == "codebook" and encoding["w"]["bits"] == 3
    assert tensors["w#indices"].dtype == torch.uint8 and tensors["w#indices"].numel() == 64 * 64 * 3 // 8


def test_a_sparse_tensor_of_few_values_is_a_bitmask_over_a_codebook():
    weight = torch.zeros(4096)
    weight[::10] = torch.tensor([0.5, -0.5])[torch.randint(0, 2, (410,))]
    _, encoding = round_trip({"w": weight})
    assert encoding["w"]["kind"] == "bitmask" and encoding["w"]["values"]["kind"] == "codebook"
    assert encoding["w"]["values"]["bits"] == 1


def test_dense_random_weights_small_tensors_and_integers_stay_as_they_are():
    state = {"w": torch.randn(256, 256), "b": torch.zeros(4), "n": torch.tensor(7)}
    tensors, encoding = round_trip(state)
    assert {e["kind"] for e in encoding.values()} == {"dense"} and set(tensors) == set(state)


@given(
    st.integers(1, 3000),
    st.floats(0, 1),
    st.integers(1, 300),
    st.sampled_from([torch.float32, torch.float16, torch.float64]),
)
def test_every_encoding_is_lossless(count, density, levels, dtype):
    generator = torch.Generator().manual_seed(count * 7 + levels)
    values = torch.randn(levels, generator=generator).to(dtype)
    tensor = values[torch.randint(0, levels, (count,), generator=generator)]
    tensor[torch.rand(count, generator=generator) > density] = 0
    round_trip({"t": tensor.reshape(1, -1)})


def test_packing_crosses_chunk_boundaries(monkeypatch):
    monkeypatch.setattr(compression, "_CHUNK", 64)
    weight = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])[torch.randint(0, 5, (1001,))]
    round_trip({"w": weight})


def test_a_file_that_is_not_a_container_or_is_damaged_is_refused_in_one_line(tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(3)}, str(plain))
    with pytest.raises(ContainerError, match="not a compressed model written by papers compress"):
        read_container(plain)
    tensors, encoding = encode_state({"w": torch.zeros(4096)})
    encoding["w"]["shape"] = [8192]
    damaged = tmp_path / "damaged.safetensors"
    save_file(
        tensors, str(damaged), metadata={"format": "papers.compressed", "encoding": json.dumps(encoding)}
    )
    with pytest.raises(ContainerError, match="damaged: ValueError"):
        read_container(damaged)
    (tmp_path / "cut.safetensors").write_bytes(damaged.read_bytes()[:100])
    with pytest.raises(ContainerError, match="cannot read"):
        read_container(tmp_path / "cut.safetensors")


# -- installed as a package ------------------------------------------------------------------------


def test_an_installed_plugin_contributes_methods_and_compress_runs_on_them(tmp_path):
    target = tmp_path / "site"
    pip_install(DEMO, target)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PAPERS_")}
    environment.update(
        PYTHONPATH=str(target),
        PAPERS_CACHE_DIR=str(tmp_path / "cache"),
        PAPERS_STRICT_PLUGINS="1",
        OMP_NUM_THREADS="1",
    )

    def papers_cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "papers", *args],
            capture_output=True,
            text=True,
            env=environment,
            cwd=tmp_path,
        )

    plugins = json.loads(papers_cli("plugins", "--json").stdout)
    demo_plugin = next(p for p in plugins if p["name"] == "methods_demo")
    assert demo_plugin["contributes"]["methods"] == ["narrow", "magnitude"]
    assert demo_plugin["hooks"] == ["papers_methods", "papers_specs"]
    quiet = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from papers.registry import get_registry; get_registry(); "
            "print('torch' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        env=environment,
    )
    assert quiet.stdout.strip() == "False", "discovering methods imports no torch"
    result = papers_cli("compress", "magnitude-demo-lenet5-90", "--out", "out", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["bytes_after"] == Path(tmp_path, "out", "model.safetensors").stat().st_size
    assert report["latency_threads"] == 1
