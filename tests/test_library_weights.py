"""Library models and their weights: ``reference_model`` builds what our default graph loads strictly,
and ``--weights torchvision:NAME`` / ``timm:NAME`` start a run from the library's pretrained weights,
read through the library's own code from a temporary torch.hub cache (nothing is downloaded)."""

from __future__ import annotations

import json
import re
import urllib.error

import pytest
import torch
from safetensors.torch import load_file

import papers
from papers.evaluate import WeightsError
from papers.pretrained import is_library_weights, library_state_dict
from papers.registry import get_registry
from papers.train import train

pytestmark = pytest.mark.usefixtures("one_thread")
torchvision = pytest.importorskip("torchvision")

# A file name as torchvision's and timm's weight URLs end: torch.hub caches them under it.
RESNET18_FILE = "resnet18-f37072fd.pth"
RESNET34_FILE = "resnet34-b627a593.pth"
SERESNET50_FILE = "se_resnet50-ce0d4300.pth"
STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch.hub cache in TORCH_HOME, and no network: a download fails as offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("offline (test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return folder


def _cache(folder, name: str, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    state = model.state_dict()
    torch.save(state, folder / name)
    return state


# -- reference_model --------------------------------------------------------------------------


def test_googlenets_reference_loads_strictly_into_our_default_graph():
    reference = papers.reference_model("googlenet.torchvision")
    assert not any(key.startswith("aux") for key in reference.state_dict())
    papers.build_model("googlenet.torchvision").load_state_dict(reference.state_dict(), strict=True)
    with_heads = papers.reference_model("googlenet.torchvision", aux_logits=True)  # kwargs still win
    assert any(key.startswith("aux1.") for key in with_heads.state_dict())


def _one_per_paper() -> list[str]:
    """Each classification paper's smallest referenced variant (by the first number in its id), and
    every one whose first comparison builds the library's model with keyword arguments (the defaults
    that differ from ours)."""
    registry = get_registry()
    chosen: dict[str, list[str]] = {}
    for variant_id in sorted(registry.variants, key=lambda v: (int(re.search(r"\d+|$", v)[0] or 0), v)):
        entry, variant = registry.variant(variant_id)
        if variant.reference is None or "classification" not in entry.spec.topics:
            continue
        picked = chosen.setdefault(entry.spec.id, [])
        if not picked or (variant.equivalence and variant.equivalence[0].kwargs):
            picked.append(variant_id)
    return sorted(v for group in chosen.values() for v in group)


@pytest.mark.parametrize("variant", _one_per_paper())
def test_a_reference_has_our_default_graphs_state_dict_names_and_shapes(variant):
    library = get_registry().variant(variant)[1].reference.partition(":")[0]
    pytest.importorskip(library)
    with torch.device("meta"):
        reference = papers.reference_model(variant)
    ours = papers.build_model(variant, device="meta")
    shapes = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in ours.state_dict().items()}


def test_faster_rcnns_reference_has_our_graphs_names_with_trainable_batch_norms():
    with torch.device("meta"):
        reference = papers.reference_model("fasterrcnn_resnet50_fpn")
    ours = papers.build_model("fasterrcnn_resnet50_fpn", norm="batchnorm2d", device="meta")
    shapes = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in ours.state_dict().items()}


def test_the_papers_with_references_are_all_in_the_loop():
    chosen = _one_per_paper()
    assert {"googlenet.torchvision", "inception_v3", "resnet18", "alexnet.torchvision"} <= set(chosen)
    assert len({get_registry().variant(v)[0].spec.id for v in chosen}) >= 9


# -- pretrained weights by library name ------------------------------------------------------------


def test_a_library_name_is_weights_unless_a_file_has_that_name(tmp_path, monkeypatch):
    assert is_library_weights("torchvision:resnet18") and is_library_weights("timm:resnet50.a1_in1k")
    assert not is_library_weights("resnet18.pth") and not is_library_weights("keras:resnet18")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "torchvision:resnet18").write_bytes(b"")
    assert not is_library_weights("torchvision:resnet18")


def test_a_run_starts_from_torchvisions_pretrained_weights_in_the_cache(hub, tmp_path):
    torch.manual_seed(5)  # weights unlike the run's own initialisation (seed 0)
    cached = _cache(hub, RESNET18_FILE, torchvision.models.resnet18(num_classes=10))
    overrides = {
        "iterations": 1,
        "batch_size": 8,
        "input_size": [32, 32],
        "augmentation": [],
        "optimizer": {"name": "sgd", "lr": 1e-12},
        "weight_decay": 0.0,
    }
    folder = tmp_path / "run"
    weights = "torchvision:resnet18"
    train(
        "resnet18",
        "builtin:digits",
        overrides=overrides,
        out=folder,
        weights=weights,
        progress=False,
        log=print,
    )
    ended = load_file(folder / "model.safetensors")
    learned = [k for k in cached if not k.endswith(STATISTICS)]
    assert learned and all(torch.allclose(ended[k], cached[k], atol=1e-9) for k in learned)
    assert json.loads((folder / "recipe.json").read_text())["weights"] == "torchvision:resnet18"


def test_timms_pretrained_weights_come_through_timms_own_loader(hub):
    timm = pytest.importorskip("timm")
    torch.manual_seed(7)
    cached = _cache(hub, SERESNET50_FILE, timm.create_model("legacy_seresnet50"))
    state = library_state_dict("timm:legacy_seresnet50")
    assert state.keys() == cached.keys() and all(torch.equal(state[k], v) for k, v in cached.items())
    ours = papers.build_model("seresnet50", device="meta").state_dict()  # the variant it loads into
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in state.items()}


def test_a_named_weights_tag_is_torchvisions_or_one_line_naming_the_ones_it_has(hub):
    with pytest.raises(WeightsError, match="has no weights 'IMAGENET9'; it has IMAGENET1K_V1"):
        library_state_dict("torchvision:resnet18.IMAGENET9")
    torch.manual_seed(0)
    cached = _cache(hub, RESNET18_FILE, torchvision.models.resnet18())
    assert library_state_dict("torchvision:resnet18.IMAGENET1K_V1").keys() == cached.keys()


def _train_line(run, tmp_path, weights: str):
    folder = tmp_path / "run"
    small = ("-r", "input_size=[32, 32]")  # the digits at 32×32, not 224×224
    result = run(
        "train", "resnet18", "--data", "builtin:digits", *small, "--weights", weights, "--out", str(folder)
    )
    assert result.exit_code == 2 and result.stdout == ""
    assert not folder.exists()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--weights" in lines[0], result.stderr
    return lines[0]


def test_an_unknown_uncached_or_unfitting_library_name_is_one_line_naming_weights(hub, run, tmp_path):
    assert "torchvision has no pretrained 'resnet7'" in _train_line(run, tmp_path, "torchvision:resnet7")
    line = _train_line(run, tmp_path, "torchvision:resnet18")
    assert f"not in torch.hub's cache ({hub / RESNET18_FILE}) and the download failed" in line
    assert "offline (test)" in line
    _cache(hub, RESNET34_FILE, torchvision.models.resnet34(num_classes=10))
    line = _train_line(run, tmp_path, "torchvision:resnet34")
    assert "do not fit" in line and "its reference is torchvision:resnet18" in line


def test_a_damaged_cache_file_is_one_line_naming_it(hub):
    (hub / RESNET18_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match=f"cannot read the cached {hub / RESNET18_FILE}") as caught:
        library_state_dict("torchvision:resnet18")
    assert caught.value.field == "--weights"


def test_eval_scores_torchvisions_pretrained_weights_as_it_scores_their_file(hub, run, tmp_path, monkeypatch):
    import papers.evaluate

    normalised = []
    check = papers.evaluate._check_normalize
    monkeypatch.setattr(
        papers.evaluate,
        "_check_normalize",
        lambda given, *rest: normalised.append(given) or check(given, *rest),
    )
    torch.manual_seed(5)
    state = _cache(hub, RESNET18_FILE, torchvision.models.resnet18(num_classes=10))
    torch.save(state, tmp_path / "resnet18.pth")
    args = ("--data", "builtin:digits", "-o", "image_size=32", "--json")
    named = run("eval", "resnet18", "--weights", "torchvision:resnet18", *args)
    assert named.exit_code == 0, named.stderr
    from_file = run("eval", "resnet18", "--weights", str(tmp_path / "resnet18.pth"), *args)
    keys = ("top1_accuracy", "top5_accuracy", "images")
    assert [json.loads(named.stdout)[k] for k in keys] == [json.loads(from_file.stdout)[k] for k in keys]
    assert normalised == [papers.evaluate.IMAGENET] * 2  # the library's weights expect ImageNet's statistics
    refused = run("eval", "resnet18", "--weights", "torchvision:resnet34", *args)
    assert refused.exit_code == 2 and "--weights" in refused.stderr and "resnet34" in refused.stderr
