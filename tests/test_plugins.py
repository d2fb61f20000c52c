"""Plugins: the built-ins load through entry points like any other; a plugin can add specs and ops."""

from __future__ import annotations

import json

import pytest
import torch

import papers
from papers import hookspecs
from papers.ops import Op
from papers.plugins import PluginInfo, PluginManager
from papers.registry import Registry, get_registry
from tests.conftest import REPO, minimal_spec, write_spec


def test_builtin_papers_come_from_the_papers_entry_point_group(fresh_registry):
    info = get_registry().manager.plugins["vgg"]
    assert info.distribution == "papers"
    assert info.module == "papers_plugins.classification.vgg"
    assert info.contributes == {"specs": ["vgg"]}
    assert info.hooks == ["papers_specs"]


def test_a_plugin_object_contributes_a_spec_and_an_op(tmp_path):
    data = minimal_spec()
    data["graphs"]["net"]["nodes"].insert(2, {"name": "gain", "op": "hardtanh"})
    spec_file = write_spec(tmp_path / "tiny.yaml", data)

    class TinyPlugin:
        @hookspecs.hookimpl
        def papers_specs(self):
            return [spec_file]

        @hookspecs.hookimpl
        def papers_ops(self):
            return [Op("hardtanh", "torch.nn:Hardtanh", doc="a stand-in paper layer")]

    manager = PluginManager()
    manager.register(TinyPlugin(), PluginInfo("tiny", "tiny-paper", "1.0", "tests"))
    registry = Registry(manager)
    assert list(registry.papers) == ["tiny"]
    assert registry.catalogue.origin("hardtanh") == "tiny (tiny-paper)"
    assert manager.plugins["tiny"].contributes == {"ops": ["hardtanh"], "specs": ["tiny"]}


def test_disabling_a_plugin_by_name(monkeypatch, fresh_registry, run):
    monkeypatch.setenv("PAPERS_DISABLE_PLUGINS", "vgg")
    ids = [p["id"] for p in json.loads(run("list", "--json").stdout)]
    assert "vgg" not in ids and "resnet" in ids


def test_plugins_command_lists_the_builtins(run):
    plugins = json.loads(run("plugins", "--json").stdout)
    vgg = next(p for p in plugins if p["name"] == "vgg")
    assert vgg["distribution"] == "papers" and vgg["error"] is None


def test_build_model_by_id_gives_an_initialised_module():
    model = papers.build_model("vgg11", num_classes=7, image_size=32)
    assert isinstance(model, torch.nn.Module)
    assert model.training
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 7)


def test_get_spec_and_list_papers():
    assert papers.get_spec("vgg16").id == "vgg"
    classification = [s.id for s in papers.list_papers(topic="classification")]
    assert len(classification) == 14 and "vgg" in classification
    years = [s.citation.year for s in papers.list_papers()]
    assert years == sorted(years), "oldest first"
    with pytest.raises(papers.UnknownIdError):
        papers.get_spec("nope")


def test_every_hook_is_typed_and_documented_in_the_readme():
    readme = (REPO / "README.md").read_text()
    hooks = [f for name, f in vars(hookspecs).items() if hasattr(f, "papers_spec")]
    assert {f.__name__ for f in hooks} == {"papers_specs", "papers_ops", "papers_checks"}
    for hook in hooks:
        assert hook.__doc__ and hook.__annotations__.get("return"), hook.__name__
        assert f"### `{hook.__name__}()`" in readme, f"{hook.__name__} is not documented in the README"
