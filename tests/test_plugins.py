"""Plugins: the built-ins load through entry points like any other; a plugin can add specs and ops."""

from __future__ import annotations

import json

import pytest
import torch

import papers
from papers import hookspecs
from papers.checks import TrainingCheck
from papers.errors import PluginError
from papers.ops import Op
from papers.plugins import PluginInfo, PluginManager
from papers.registry import Registry, get_registry
from papers.spec import Spec
from tests.conftest import REPO, built_on, minimal_spec, write_spec


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
    monkeypatch.setenv("PAPERS_DISABLE_PLUGINS", ",".join(("vgg", *built_on("vgg"))))
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
    assert {f.__name__ for f in hooks} == {
        "papers_specs",
        "papers_ops",
        "papers_checks",
        "papers_methods",
        "papers_criteria",
        "papers_optimizers",
    }
    for hook in hooks:
        assert hook.__doc__ and hook.__annotations__.get("return"), hook.__name__
        assert f"### `{hook.__name__}()`" in readme, f"{hook.__name__} is not documented in the README"


# -- isolation: what a plugin does or returns never takes the registry down ---------------------------


def _registry(*plugins: tuple[str, object]) -> Registry:
    manager = PluginManager()
    for name, plugin in plugins:
        manager.register(plugin, PluginInfo(name, f"{name}-dist", "1", "tests"))
    return Registry(manager)


def _contributes(path):
    class Plugin:
        @hookspecs.hookimpl
        def papers_specs(self):
            return [path]

    return Plugin()


class Escape(BaseException):
    """Not an Exception: ``except Exception`` lets it through."""


def _raises(error: BaseException):
    class Plugin:
        @hookspecs.hookimpl
        def papers_specs(self):
            raise error

    return Plugin()


@pytest.mark.parametrize(
    ("raised", "reason"),
    [
        (SystemExit(0), "SystemExit: 0"),
        (SystemExit(3), "SystemExit: 3"),
        (Escape("out of the registry"), "Escape: out of the registry"),
        (GeneratorExit(), "GeneratorExit"),
    ],
)
def test_a_hook_that_exits_or_raises_a_base_exception_is_skipped(
    raised, reason, tmp_path, monkeypatch, capsys
):
    tiny = write_spec(tmp_path / "tiny.yaml", minimal_spec())
    with pytest.raises(PluginError, match=r"^plugin p \(p-dist\): papers_specs\(\) failed: ") as caught:
        _registry(("p", _raises(raised)))  # strict mode: one PluginError, the plugin's exception its cause
    assert str(caught.value) == f"plugin p (p-dist): papers_specs() failed: {reason}"
    assert caught.value.__cause__ is raised
    monkeypatch.setenv("PAPERS_STRICT_PLUGINS", "0")
    registry = _registry(("p", _raises(raised)), ("good", _contributes(tiny)))
    assert registry.manager.plugins["p"].error == f"papers_specs() failed: {reason}"
    assert list(registry.papers) == ["tiny"], "the other plugins keep working"
    assert capsys.readouterr().err == f"papers: plugin p (p-dist) skipped: papers_specs() failed: {reason}\n"
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C still stops the program
        _registry(("p", _raises(KeyboardInterrupt())))


def test_hooks_are_called_in_load_order_whatever_order_pluggy_keeps(tmp_path, monkeypatch):
    """``trylast`` puts a hook first in pluggy's list: it must not let a later plugin claim ids first."""
    first = write_spec(tmp_path / "first.yaml", minimal_spec())
    second = write_spec(tmp_path / "second.yaml", {**minimal_spec(), "name": "Second"})

    class Late:
        @hookspecs.hookimpl(trylast=True)
        def papers_specs(self):
            return [second]

    monkeypatch.setenv("PAPERS_STRICT_PLUGINS", "0")
    registry = _registry(("first", _contributes(first)), ("late", Late()))
    assert registry.papers["tiny"].plugin == "first" and registry.papers["tiny"].spec.name == "Tiny"
    [refused] = registry.manager.plugins["late"].refused
    assert "paper id 'tiny' is claimed by both first (first-dist) and late (late-dist)" in refused


def test_a_plugin_name_that_is_taken_is_refused_and_the_first_plugin_kept(tmp_path, monkeypatch):
    tiny = write_spec(tmp_path / "tiny.yaml", minimal_spec())
    other = write_spec(tmp_path / "other.yaml", {**minimal_spec(), "id": "other", "variants": []})
    manager = PluginManager()
    manager.register(_contributes(tiny), PluginInfo("tiny", "first-dist", "1", "tests"))
    with pytest.raises(
        PluginError, match=r"^plugin tiny \(second-dist\): the plugin name 'tiny' is taken by tiny"
    ):
        manager.register(_contributes(other), PluginInfo("tiny", "second-dist", "1", "tests"))
    monkeypatch.setenv("PAPERS_STRICT_PLUGINS", "0")
    manager.register(_contributes(other), PluginInfo("tiny", "second-dist", "1", "tests"))
    registry = Registry(manager)
    assert list(registry.papers) == ["tiny"] and registry.papers["tiny"].distribution == "first-dist"
    assert manager.plugins["tiny"].distribution == "first-dist" and manager.plugins["tiny"].error is None
    second = manager.plugins["second-dist:tiny"]
    assert second.error == "the plugin name 'tiny' is taken by tiny (first-dist)"


class _ExitingName:
    """A Traversable-like object whose ``name`` ends the process when read."""

    @property
    def name(self):
        raise SystemExit(1)

    def read_bytes(self):
        return b""


class _Text:
    name = "text.yaml"

    def read_bytes(self):
        return "id: text"


def test_contributions_that_skipped_validation_or_run_code_when_read_are_refused(tmp_path, monkeypatch):
    tiny = write_spec(tmp_path / "tiny.yaml", minimal_spec())
    constructed = Spec.model_construct(**{**minimal_spec(), "id": "../../x"})
    check = TrainingCheck("c", ["tiny8"], "builtin:digits", 90.0, "p")  # type: ignore[arg-type]

    class Plugin:
        @hookspecs.hookimpl
        def papers_specs(self):
            return [constructed, _Text(), _ExitingName(), tiny]

        @hookspecs.hookimpl
        def papers_ops(self):
            return [Op(["relu"], "torch.nn:ReLU")]  # type: ignore[arg-type]

        @hookspecs.hookimpl
        def papers_checks(self):
            return [check]

    with pytest.raises(PluginError, match=r"^plugin p \(p-dist\): op name is list, not str$"):
        _registry(("p", Plugin()))
    monkeypatch.setenv("PAPERS_STRICT_PLUGINS", "0")
    registry = _registry(("p", Plugin()))
    assert list(registry.papers) == ["tiny"], "what validates is kept"
    assert registry.manager.plugins["p"].refused == [
        "op name is list, not str",
        "<Spec object>: id: String should match pattern '^[a-z][a-z0-9_\\-]*$' (got '../../x')",
        "text.yaml: read_bytes() returned str, not bytes",
        "papers_specs() gave a bad contribution: SystemExit: 1",
        "check variant is list, not str",
    ]


def test_a_spec_object_is_validated_again(monkeypatch):
    """A valid Spec object is accepted as it is; one whose fields were changed after validation
    (pydantic models are frozen, but ``object.__setattr__`` is not stopped) is refused."""
    valid = Spec.model_validate(minimal_spec())
    changed = Spec.model_validate({**minimal_spec(), "id": "changed"})
    object.__setattr__(changed, "variants", "not a list")
    monkeypatch.setenv("PAPERS_STRICT_PLUGINS", "0")
    registry = _registry(("p", _contributes(valid)), ("q", _contributes(changed)))
    assert registry.papers["tiny"].spec == valid and registry.papers["tiny"].file == "<tiny>"
    assert "changed" not in registry.papers
    [refused] = registry.manager.plugins["q"].refused
    assert refused.startswith("<Spec object>: variants:")


def test_messages_are_one_printable_line(monkeypatch, capsys):
    monkeypatch.setenv("PAPERS_STRICT_PLUGINS", "0")
    registry = _registry(("p", _raises(RuntimeError("first \x1b[2J line\nsecond line\n  Traceback..."))))
    assert registry.manager.plugins["p"].error == "papers_specs() failed: RuntimeError: first [2J line"
    assert (
        capsys.readouterr().err
        == "papers: plugin p (p-dist) skipped: papers_specs() failed: RuntimeError: first [2J line\n"
    )
