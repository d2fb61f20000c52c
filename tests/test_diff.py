"""`papers diff A B` and `papers.diff`: what changes between two variants, node by node and in cost."""

from __future__ import annotations

import json

import papers


def test_resnet50_v1_5_moves_the_stride_to_the_3x3_conv_at_equal_parameters_and_more_macs():
    result = papers.diff("resnet50", "resnet50.torchvision")

    moved = {change.name: change.args for change in result.changed}
    expected = {}
    for layer in ("layer2", "layer3", "layer4"):
        expected[f"{layer}.0.conv1"] = {"stride": [2, 1]}
        expected[f"{layer}.0.conv2"] = {"stride": [1, 2]}
    assert moved == expected
    assert (result.added, result.removed, result.renamed) == ([], [], [])
    assert result.total.params_a == result.total.params_b == 25_557_032
    assert (result.total.macs_a, result.total.macs_b) == (3_857_973_248, 4_089_184_256)
    stages = {stage.stage: stage for stage in result.stages}
    assert [s.stage for s in result.stages] == ["stem", "stage1", "stage2", "stage3", "stage4", "head"]
    for name in ("stem", "stage1", "head"):
        assert stages[name].macs_a == stages[name].macs_b
    for name in (
        "stage2",
        "stage3",
        "stage4",
    ):  # each stage's first 3x3 conv now runs at the higher resolution
        assert stages[name].params_a == stages[name].params_b
        assert stages[name].macs_b - stages[name].macs_a == 77_070_336


def test_seresnet50_against_resnet50_shows_the_se_gates_and_the_renamed_stem_and_head():
    result = papers.diff("seresnet50", "resnet50")

    removed = [node.name for node in result.removed]
    assert len(removed) == 16 * 6  # pool, fc1, relu, fc2, sigmoid and gate in each of the 16 blocks
    assert all(".se_module." in name for name in removed)
    assert {node.op for node in result.removed} == {"adaptive_avgpool2d", "conv2d", "relu", "sigmoid", "mul"}
    assert result.added == []
    renamed = {change.name: change.name_b for change in result.renamed}
    assert renamed == {
        "layer0.conv1": "conv1",
        "layer0.bn1": "bn1",
        "layer0.relu1": "relu",
        "pool0": "maxpool",
        "avg_pool": "avgpool",
        "last_linear": "fc",
    }
    gate = next(c for c in result.changed if c.name == "layer1.0.add")
    assert gate.inputs == [
        ["layer1.0.se_module.gate", "layer1.0.downsample.1"],
        ["layer1.0.bn3", "layer1.0.downsample.1"],
    ]
    se_params = sum(s.params_a - s.params_b for s in result.stages)
    assert se_params == result.total.params_a - result.total.params_b == 2_530_992
    assert result.total.params_b == 25_557_032


def test_a_variant_against_itself_has_no_difference():
    result = papers.diff("resnet18", "resnet18")
    assert (result.changed, result.renamed, result.added, result.removed) == ([], [], [], [])
    assert all(s.params_a == s.params_b and s.macs_a == s.macs_b for s in result.stages)


def test_options_apply_to_both_graphs():
    result = papers.diff("resnet18", "resnet34", num_classes=10)
    head = next(s for s in result.stages if s.stage == "head")
    assert head.params_a == head.params_b == 512 * 10 + 10


def test_the_cli_prints_the_moved_stride_and_the_costs_per_stage(run):
    result = run("diff", "resnet50", "resnet50.torchvision")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.split()[:2] == ["~", "layer2.0.conv2"] and "stride: 1 → 2" in line for line in lines)
    total = next(line for line in lines if line.startswith("total"))
    assert total.split()[1:4] == ["25,557,032", "25,557,032", "+0"]
    assert total.split()[-1] == "+231,211,008"


def test_the_cli_prints_json(run):
    result = run("diff", "seresnet50", "resnet50", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["a"], data["b"]) == ("seresnet50", "resnet50")
    assert len(data["removed"]) == 96 and data["added"] == []
    assert data["total"]["params_a"] - data["total"]["params_b"] == 2_530_992
    assert {"stage", "params_a", "params_b", "macs_a", "macs_b"} == set(data["stages"][0])


def test_an_unknown_variant_is_one_line_and_exit_2(run):
    result = run("diff", "resnet50", "resnet5O")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert "resnet5O" in result.stderr


def test_each_node_row_says_what_differs_as_the_cli_and_the_site_show_it():
    rows = papers.diff("resnet50", "resnet50.torchvision").node_rows()
    assert ("~", "layer2.0.conv1", "conv2d", "stride: 2 → 1") in rows and len(rows) == 6
    rows = papers.diff("resnet50", "seresnet50").node_rows()
    marks = {mark for mark, *_ in rows}
    assert marks == {"~", "→", "+"}, "changed adds, renamed stem and head, the SE gates only in B"
    assert ("→", "conv1", "conv2d", "named layer0.conv1 in seresnet50") in rows
    assert sum(mark == "+" and "se_module" in name for mark, name, _, _ in rows) == 96


def _variant(id_: str, origin: str = "paper"):
    from types import SimpleNamespace

    return SimpleNamespace(id=id_, origin=origin)


def test_library_pairs_read_the_variant_ids_and_the_papers_a_spec_uses():
    from types import SimpleNamespace

    from papers.diff import library_pairs

    used = SimpleNamespace(uses=[], variants=[_variant(v) for v in ("resnet20", "resnet50", "resnet110")])
    spec = SimpleNamespace(
        uses=["used", "unregistered"],
        variants=[
            _variant("net"),
            _variant("net_c"),
            _variant("net_c.lib", "torchvision"),  # the longest own id it extends
            _variant("netx", "torchvision"),  # extends none: "net" is not followed by a separator
            _variant("derived_net", "derived"),
            _variant("preact_resnet200"),  # holds "resnet20" only as part of "resnet200"
            _variant("preact_resnet110"),
            _variant("seresnet50", "timm"),  # a library variant that extends no own id: by `uses`
        ],
    )
    assert library_pairs(spec, {"used": used}) == [
        ("net_c", "net_c.lib"),
        ("resnet110", "preact_resnet110"),
        ("resnet50", "seresnet50"),
    ]
    assert library_pairs(spec, {}) == [("net_c", "net_c.lib")], "no used paper registered"


def test_the_registrys_pairs_are_the_library_variants_and_the_variants_built_on_resnet():
    from papers.diff import library_pairs

    specs = {spec.id: spec for spec in papers.list_papers()}

    def pairs(paper: str) -> list[tuple[str, str]]:
        spec = specs[paper]
        return library_pairs(spec, {p: specs[p] for p in spec.uses if p in specs})

    assert ("resnet50", "resnet50.torchvision") in pairs("resnet")
    assert ("resnet50", "seresnet50") in pairs("senet")
    assert ("vgg16", "vgg16_bn") in pairs("vgg")
    assert ("resnet110", "preact_resnet110") in pairs("preact-resnet")
