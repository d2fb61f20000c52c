"""Methods: a plugin contributes them through ``papers_methods``; method variants name a base and the
methods applied to it, are validated against the registry, and expand, build and check like any
variant.

The two methods come from the test plugin package ``tests/plugin_packages/methods_demo`` (``narrow``,
a width-halving rewrite; ``magnitude``, magnitude masking), registered in-process beside the
built-ins; ``test_compress.py`` also installs it as a real package.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import papers
import papers.registry
from papers import hookspecs
from papers.errors import GraphError, PluginError, SpecError
from papers.methods import Method, NoSettings, Settings
from papers.plugins import PluginInfo, PluginManager
from papers.registry import Registry
from papers.spec import validate_spec
from tests.conftest import REPO, minimal_spec

DEMO = REPO / "tests" / "plugin_packages" / "methods_demo"
DEMO_LABEL = "methods_demo (papers-methods-demo)"


def demo_package():
    """The demo package, imported with its folder on ``sys.path`` only for the import: with it there,
    the package's metadata that pip leaves beside it would make every later discovery load it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(DEMO))
        import papers_methods_demo
        import papers_methods_demo.methods
    return papers_methods_demo


def demo_manager(*plugins: tuple[str, object]) -> PluginManager:
    """The built-ins, the demo package and ``plugins``, as entry-point discovery would load them."""
    manager = PluginManager()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PAPERS_PLUGINS", "")  # the built-ins only, even where the demo is installed
        manager.load_entry_points()
    info = PluginInfo("methods_demo", "papers-methods-demo", "0.1.0", "papers_methods_demo")
    manager.register(demo_package(), info)
    for name, plugin in plugins:
        manager.register(plugin, PluginInfo(name, f"{name}-dist", "1", "tests"))
    return manager


def spec_plugin(path: Path) -> object:
    class Plugin:
        @hookspecs.hookimpl
        def papers_specs(self):
            return [path]

    return Plugin()


def method_plugin(*methods: Method) -> object:
    class Plugin:
        @hookspecs.hookimpl
        def papers_methods(self):
            return list(methods)

    return Plugin()


def compression_spec(*variants: dict, paper: str = "shrink") -> dict:
    return {
        "id": paper,
        "name": "Shrink",
        "topics": ["compression"],
        "kind": "pruning",
        "citation": {
            "title": "Shrink",
            "authors": ["A. Author"],
            "year": 2020,
            "venue": "T",
            "kind": "preprint",
        },
        "summary": "A compression paper for tests.",
        "variants": list(variants),
    }


def method_variant(base: str = "lenet5", *methods: dict, paper: str = "shrink", **fields) -> dict:
    return {
        "id": f"{paper}-{base}",
        "name": "Shrunk",
        "base": base,
        "methods": list(methods) or [{"name": "magnitude", "settings": {"sparsity": 0.5}}],
        **fields,
    }


def write(tmp_path: Path, data: dict, name: str = "shrink.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# -- the hook ------------------------------------------------------------------------------------


def test_a_plugin_contributes_methods_through_the_hook(demo):
    assert demo.methods["narrow"][0] == DEMO_LABEL
    assert demo.methods["magnitude"][1].apply is not None and demo.methods["magnitude"][1].rewrite is None
    info = demo.manager.plugins["methods_demo"]
    assert info.hooks == ["papers_methods", "papers_specs"]
    assert info.contributes == {
        "methods": ["narrow", "magnitude"],
        "specs": ["narrow-demo", "magnitude-demo"],
    }


def test_a_method_variant_is_a_variant_of_its_paper(demo):
    entry, variant = demo.variant("narrow-demo-resnet20")
    assert entry.spec.id == "narrow-demo" and variant.base == "resnet20" and variant.graph is None
    assert [step.name for step in variant.methods] == ["narrow"]


def test_a_rewrite_changes_the_expanded_graph(demo):
    base, narrowed = papers.expand_variant("resnet20"), papers.expand_variant("narrow-demo-resnet20")
    widths = {n.name: n.args["out_channels"] for n in base.nodes if n.op == "conv2d"}
    assert widths and all(
        n.args["out_channels"] == widths[n.name] // 2 for n in narrowed.nodes if n.op == "conv2d"
    )
    assert narrowed.node("fc").args == base.node("fc").args, "the classifier keeps its outputs"
    assert narrowed.node("conv1").where == "variants[0].methods[0]", "a changed node is located at its method"
    assert narrowed.node("relu").where == base.node("relu").where


def test_what_a_rewrite_changes_is_measured_without_weights(demo):
    assert papers.measure("resnet20").params == 269_722
    narrowed = papers.measure("narrow-demo-resnet20")
    assert narrowed.params == 68_050
    assert narrowed.macs < papers.measure("resnet20").macs / 3


def test_methods_apply_in_order_and_an_apply_step_leaves_the_graph_alone(demo):
    def layers(variant: str, **options) -> list[tuple]:
        return [
            (n.name, n.op, dict(n.args), n.inputs) for n in papers.expand_variant(variant, **options).nodes
        ]

    narrowed = layers("narrow-demo-resnet20", image_size=16)
    assert (
        layers("magnitude-demo-resnet20-narrow", image_size=16)
        == narrowed
        != layers("resnet20", image_size=16)
    )
    assert papers.expand_variant("magnitude-demo-lenet5-90") == papers.expand_variant("lenet5")


def test_a_method_variant_builds_with_options_and_checks_like_any_variant(demo, run):
    import torch

    model = papers.build_model("narrow-demo-resnet20", num_classes=7, image_size=16)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 7)
    assert model.get_submodule("layer3.0.conv1").out_channels == 32
    built = run("build", "narrow-demo-resnet20", "--json")
    assert built.exit_code == 0 and '"params": 68050' in built.stdout
    checked = run("check", "narrow-demo", "--json")
    assert checked.exit_code == 0 and '"status": "pass"' in checked.stdout


def test_validate_builds_a_method_variant_of_a_file(demo, run, tmp_path):
    path = write(tmp_path, compression_spec(method_variant("resnet20", {"name": "narrow"})))
    result = run("validate", str(path))
    assert result.exit_code == 0 and "shrink: 1 variants" in result.stdout


# -- the spec ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (lambda v: v.update(graph="net"), "variants[0]", "either `graph` or (a method variant) `base`"),
        (lambda v: v.pop("methods"), "variants[0].methods", "at least one method"),
        (lambda v: v.update(args={"width": 4}), "variants[0].args", "takes its base's arguments"),
        (lambda v: v.update(id="lenet5-shrink"), "variants[0].id", "<paper-id>-<base>[-setting]"),
        (lambda v: v.update(id="shrink-lenet"), "variants[0].id", "'shrink-lenet5'"),
        (lambda v: v.update(base="lenet5.torchvision"), "variants[0].id", "shrink-lenet5.torchvision"),
        (lambda v: v["methods"][0].update(name="Mask!"), "variants[0].methods[0].name", "pattern"),
        (lambda v: v["methods"][0].update(colour=1), "variants[0].methods[0].colour", "unknown field"),
    ],
)
def test_a_malformed_method_variant_is_refused_naming_the_field(change, field, message):
    variant = method_variant()
    change(variant)
    with pytest.raises(SpecError) as caught:
        validate_spec(compression_spec(variant), file="shrink.yaml")
    assert caught.value.field == field and message in caught.value.message


def test_a_variant_with_neither_graph_nor_base_is_refused():
    variant = {"id": "shrink-lenet5", "name": "Shrunk"}
    with pytest.raises(SpecError, match="either `graph` or"):
        validate_spec(compression_spec(variant))


def test_method_variant_ids_may_carry_a_setting_and_a_library_suffix():
    spec = validate_spec(
        compression_spec(
            method_variant(id="shrink-lenet5-90"),
            method_variant("resnet50.torchvision", id="shrink-resnet50-90.torchvision"),
        )
    )
    assert [v.id for v in spec.variants] == ["shrink-lenet5-90", "shrink-resnet50-90.torchvision"]


# -- the registry's checks: base, method, settings -----------------------------------------------


REFUSED = {
    "unknown-setting": (
        method_variant("resnet20", {"name": "narrow", "settings": {"ratio": 0.5}}),
        "variants[0].methods[0].settings.ratio",
        "method 'narrow' has no setting 'ratio' (its settings: factor, ops, keep)",
    ),
    "string-for-number": (
        method_variant("resnet20", {"name": "narrow", "settings": {"factor": "0.5"}}),
        "variants[0].methods[0].settings.factor",
        "Input should be a valid number (got '0.5')",
    ),
    "out-of-range": (
        method_variant("resnet20", {"name": "narrow", "settings": {"factor": 2.0}}),
        "variants[0].methods[0].settings.factor",
        "less than or equal to 1",
    ),
    "missing-setting": (
        method_variant("lenet5", {"name": "magnitude"}),
        "variants[0].methods[0].settings.sparsity",
        "method 'magnitude' needs this setting",
    ),
    "unknown-method": (
        method_variant("lenet5", {"name": "magnitudes", "settings": {}}),
        "variants[0].methods[0].name",
        "unknown method 'magnitudes'; did you mean magnitude, magnitude_prune?",
    ),
    "unknown-base": (
        method_variant("lenet7"),
        "variants[0].base",
        "no variant 'lenet7' in the registry; did you mean lenet5",
    ),
    "base-is-a-method-variant": (
        method_variant("narrow-demo-resnet20"),
        "variants[0].base",
        "is itself a method variant",
    ),
}


@pytest.mark.parametrize("case", REFUSED)
def test_a_method_variant_that_does_not_resolve_is_refused_in_one_line(case, tmp_path):
    variant, field, message = REFUSED[case]
    path = write(tmp_path, compression_spec(variant))
    with pytest.raises(PluginError) as caught:
        Registry(demo_manager(("shrink", spec_plugin(path))))
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith(f"plugin shrink (shrink-dist): {path}: {field}: ") and message in text


def test_without_strict_mode_a_refused_paper_is_skipped_and_the_rest_works(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERS_STRICT_PLUGINS", "0")
    good = compression_spec(method_variant("vgg11", {"name": "narrow"}, paper="good"), paper="good")
    bad = write(tmp_path, compression_spec(method_variant("lenet7")))
    registry = Registry(
        demo_manager(("shrink", spec_plugin(bad)), ("good", spec_plugin(write(tmp_path, good, "g.yaml"))))
    )
    assert "shrink" not in registry.papers and "shrink-lenet7" not in registry.variants
    assert "good-vgg11" in registry.variants and "narrow-demo-resnet20" in registry.variants
    info = registry.manager.plugins["shrink"]
    assert info.contributes.get("specs") == [] and "variants[0].base: no variant 'lenet7'" in info.refused[0]


def test_a_method_variant_on_a_refused_paper_goes_with_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERS_STRICT_PLUGINS", "0")
    bad = compression_spec(
        method_variant("lenet7"),
        {"id": "shrink_net", "name": "Net", "graph": "net"},
    )
    bad["graphs"] = minimal_spec()["graphs"]
    on_top = compression_spec(method_variant("shrink_net", paper="later"), paper="later")
    registry = Registry(
        demo_manager(
            ("shrink", spec_plugin(write(tmp_path, bad))),
            ("later", spec_plugin(write(tmp_path, on_top, "l.yaml"))),
        )
    )
    assert "shrink" not in registry.papers and "later" not in registry.papers
    assert "variants[0].base: no variant 'shrink_net'" in registry.manager.plugins["later"].refused[0]


def test_a_bad_method_variant_is_one_line_and_exit_2_from_the_cli(tmp_path, monkeypatch, run):
    path = write(
        tmp_path, compression_spec(method_variant("resnet20", {"name": "narrow", "settings": {"ratio": 0.5}}))
    )
    monkeypatch.setattr(
        Registry, "discover", classmethod(lambda cls: cls(demo_manager(("shrink", spec_plugin(path)))))
    )
    monkeypatch.setattr(papers.registry, "_current", None)
    out = tmp_path / "out"
    result = run("compress", "shrink-resnet20", "--out", str(out))
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "variants[0].methods[0].settings.ratio" in result.stderr
    assert not out.exists()


# -- what a plugin contributes is checked ---------------------------------------------------------


def _rewrite(flat, settings):
    return flat


class Width(Settings):
    factor: float = 0.5


@pytest.mark.parametrize(
    ("method", "message"),
    [
        (
            Method("dup", NoSettings, "a", rewrite=_rewrite),
            "method 'dup' is claimed by both first (first-dist) and second",
        ),
        (
            Method("plain", dict, "no model", rewrite=_rewrite),
            "settings is not a papers.methods.Settings subclass",
        ),  # type: ignore[arg-type]
        (Method("idle", NoSettings, "does nothing"), "has neither a rewrite nor an apply step"),
        (Method("Bad Name", NoSettings, "x", rewrite=_rewrite), "is not lower-case letters"),
        (Method("notcallable", NoSettings, "x", rewrite=3), "rewrite is not callable"),  # type: ignore[arg-type]
        ("narrow", "returned str, not papers.methods.Method"),
    ],
)
def test_a_malformed_or_duplicate_method_is_refused(method, message):
    first = method_plugin(Method("dup", Width, "the first claim", rewrite=_rewrite))
    manager = PluginManager()
    manager.register(first, PluginInfo("first", "first-dist", "1", "tests"))
    manager.register(method_plugin(method), PluginInfo("second", "second-dist", "1", "tests"))
    with pytest.raises(PluginError, match=r"^plugin second \(second-dist\): ") as caught:
        Registry(manager)
    assert message in str(caught.value)


def _breaking(reason: str):
    def rewrite(flat, settings):
        from dataclasses import replace

        if reason == "raises":
            raise ValueError("cannot narrow this")
        if reason == "returns":
            return {"nodes": []}
        if reason == "dangling":
            first = replace(flat.nodes[0], inputs=("nowhere",))
            return replace(flat, nodes=(first, *flat.nodes[1:]))
        return replace(flat, nodes=(replace(flat.nodes[0], op="conv9d"), *flat.nodes[1:]))

    return Method("breaking", NoSettings, "breaks the graph", rewrite=rewrite)


@pytest.mark.parametrize(
    ("reason", "error", "message"),
    [
        (
            "raises",
            PluginError,
            "method 'breaking' (breaker (breaker-dist)): rewrite failed: ValueError: cannot narrow",
        ),
        ("returns", PluginError, "rewrite returned dict, not a FlatGraph"),
        ("dangling", GraphError, "node 'c1.conv' reads 'nowhere', which no earlier node or input gives"),
        ("unknown-op", GraphError, "unknown op 'conv9d'"),
    ],
)
def test_a_rewrite_that_fails_or_breaks_the_graph_is_one_error_naming_the_method(
    reason, error, message, tmp_path, monkeypatch
):
    path = write(tmp_path, compression_spec(method_variant("lenet5", {"name": "breaking"})))
    registry = Registry(
        demo_manager(("breaker", method_plugin(_breaking(reason))), ("shrink", spec_plugin(path)))
    )
    monkeypatch.setattr(papers.registry, "_current", registry)
    with pytest.raises(error) as caught:
        papers.build_model("shrink-lenet5")
    assert message in str(caught.value)
    assert caught.value.file == str(path) and caught.value.field == "variants[0].methods[0]"


def test_validate_refuses_a_method_variant_with_a_setting_its_method_lacks(demo, run, tmp_path):
    variant = method_variant("resnet20", {"name": "narrow", "settings": {"ratio": 0.5}})
    path = write(tmp_path, compression_spec(variant))
    result = run("validate", str(path))
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert (
        f"{path}: variants[0].methods[0].settings.ratio: method 'narrow' has no setting 'ratio'"
        in result.stderr
    )
