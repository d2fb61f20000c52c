"""The documentation site: generated from the registry, reproducible, escaped, fast with a warm cache.

The site is built twice per test session (``built`` below), with the example plugin package installed
and a hostile plugin whose spec puts markup in every text field; the browser tests
(``test_site_browser.py``) load the first build.
"""

from __future__ import annotations

import datetime
import html
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from papers.diagram import label_text, view
from papers.site import markdown_prose, markdown_text
from tests.conftest import REPO, minimal_spec

EPOCH = 1_000_000_000  # 2001-09-09
HOSTILE_TITLE = "<script>alert('title')</script> & | *bold* [link](javascript:x) </title>"
HOSTILE_URL = "https://example.org/x)(javascript:alert(1)'"
"""A valid address (parentheses and quotes are URL characters) that would end a Markdown link."""
SITE_URL = "https://docs.example.org/papers/"


@dataclass
class Built:
    first: Path
    second: Path
    environment: dict[str, str]
    ids: list[str]


def _hostile_plugin(root: Path) -> Path:
    """A plugin package made by hand (module, spec and dist-info): markup in every text it can hold."""
    package = root / "papers_hostile"
    package.mkdir(parents=True)
    spec = minimal_spec()
    spec["id"] = "hostile"
    spec["name"] = "<script>alert('name')</script>"
    spec["citation"]["title"] = HOSTILE_TITLE
    spec["citation"]["venue"] = "<b>V</b>"
    spec["summary"] = "<img src=x onerror=alert(1)> ``` \n# not a heading\n| a | b |"
    spec["variants"] = [{"id": "hostile_net", "name": "<i>net</i> ]]> -->", "graph": "net"}]
    spec["citation"]["url"] = HOSTILE_URL
    nodes = spec["graphs"]["net"]["nodes"]
    nodes[0]["name"] = "${'c' + 'onv'}"  # expanded names are checked (papers.graph.check_name)
    spec["results"] = [
        {"variant": "hostile_net", "metric": "params", "value": 314, "unit": "count", "source": "<u>T</u>"}
    ]
    (package / "hostile.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    (package / "__init__.py").write_text(
        "from importlib.resources import files\n"
        "from papers.hookspecs import hookimpl\n\n\n"
        "@hookimpl\ndef papers_specs():\n    return [files('papers_hostile') / 'hostile.yaml']\n"
    )
    info = root / "papers_hostile-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: papers-hostile\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[papers]\nhostile = papers_hostile\n")
    return root


def _build(out: Path, environment: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "papers", "site", "build", "--out", str(out), "--site-url", SITE_URL],
        env=environment,
        capture_output=True,
        text=True,
        cwd=out.parent,
    )
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The site built twice from one tree, the example and the hostile plugin installed."""
    root = tmp_path_factory.mktemp("site")
    example = root / "example"
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"),
            *("--target", str(example), str(REPO / "tests" / "plugin_packages" / "example")),
        ],
        check=True,
        capture_output=True,
    )
    hostile = _hostile_plugin(root / "hostile")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PAPERS_")}
    environment.update(
        PYTHONPATH=os.pathsep.join([str(example), str(hostile)]),
        # shared with the other tests of the session, which measure many variants already
        PAPERS_CACHE_DIR=str(tmp_path_factory.getbasetemp() / "cache"),
        PAPERS_STRICT_PLUGINS="1",
        SOURCE_DATE_EPOCH=str(EPOCH),
    )
    _build(root / "one", environment)
    _build(root / "two", environment)  # every measurement is cached by now
    listed = subprocess.run(
        [sys.executable, "-m", "papers", "list", "--json"],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    ids = [paper["id"] for paper in json.loads(listed.stdout)]
    return Built(root / "one", root / "two", environment, ids)


def every_file(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file())


def _page(built: Built, paper: str) -> Path:
    return next((built.first / "site").glob(f"*/{paper}/index.html"))


def _text(page: str) -> str:
    """What a reader sees of an HTML page: tags dropped (highlighted code is full of spans)."""
    return html.unescape(re.sub(r"<[^>]+>", "", page))


def test_every_paper_in_the_registry_has_a_page_including_plugin_packages(built):
    assert {"vgg", "resnet", "efficient-backprop", "hostile"} <= set(built.ids)
    for paper in built.ids:
        assert _page(built, paper).is_file(), paper
    home = (built.first / "site" / "index.html").read_text()
    assert len(re.findall(r"<tr><td><a href=", home)) == len(built.ids)
    assert "Efficient BackProp" in home


def test_a_page_is_built_from_its_spec_and_measurements(built):
    page = _text(_page(built, "vgg").read_text())
    assert "Very Deep Convolutional Networks for Large-Scale Image Recognition" in page
    assert "@inproceedings{simonyan2015very" in page
    assert "https://arxiv.org/abs/1409.1556" in page
    assert "138,357,544" in page, "vgg16's measured parameters"
    assert "15.47 G" in page, "vgg16's measured multiply-adds"
    assert "Reported vs measured" in page and "flowchart TD" in page
    assert 'torchvision.models.get_model_weights("vgg16").DEFAULT' in page


def test_the_surveys_page_shows_its_taxonomy_linked_to_the_papers_that_implement_it(built):
    page = _page(built, "cheng2017").read_text()
    assert "The survey’s taxonomy in the registry" in _text(page) or "The survey's taxonomy" in _text(page)
    assert 'href="../han2015/"' in page, "pruning links to Han et al. 2015's page"
    assert "Not yet implemented in the registry" in _text(page)


def test_two_builds_of_one_tree_are_identical_byte_for_byte(built):
    for folder in ("docs", "site"):
        one = {p.relative_to(built.first / folder): p for p in every_file(built.first / folder)}
        two = {p.relative_to(built.second / folder): p for p in every_file(built.second / folder)}
        assert one.keys() == two.keys()
        different = [str(name) for name in one if one[name].read_bytes() != two[name].read_bytes()]
        assert different == []


def test_the_sitemap_date_is_source_date_epoch_and_no_file_holds_today(built):
    sitemap = (built.first / "site" / "sitemap.xml").read_text()
    dates = set(re.findall(r"<lastmod>([^<]+)</lastmod>", sitemap))
    assert dates == {"2001-09-09"}
    today = datetime.date.today().isoformat()
    for path in every_file(built.first / "site"):
        if path.suffix in (".html", ".xml", ".json", ".svg", ".md"):
            assert today not in path.read_text(encoding="utf-8", errors="replace"), path


def test_text_from_specs_is_escaped_everywhere(built):
    page = _page(built, "hostile").read_text()
    for raw in ("<script>alert", "<img src=x", "<b>V</b>", "<i>net</i>", "<u>T</u>"):
        assert raw not in page, raw
    assert 'href="https://example.org/x%29%28javascript:alert%281%29%27"' in page, "a link, escaped"
    assert 'href="javascript' not in page.lower()
    assert "&lt;script&gt;alert(" in page, "the title shows as text"
    assert "<title>&lt;script&gt;alert" in page, "and in the window title"
    home = (built.first / "site" / "index.html").read_text()
    assert "<script>alert" not in home and "&lt;script&gt;alert(&#39;title&#39;)" in home.replace(
        "&apos;", "&#39;"
    )
    search = (built.first / "site" / "search" / "search_index.json").read_text()
    assert "<script>alert" not in search


def test_diagrams_stay_inside_mermaid_limits_and_hold_only_safe_labels(built):
    blocks = 0
    for path in every_file(built.first / "docs"):
        if path.suffix != ".md":
            continue
        for block in re.findall(r"``` mermaid\n(.*?)\n\s*```", path.read_text(), flags=re.S):
            blocks += 1
            assert len(block) < 50_000 and block.count("-->") < 500, path
            for label in re.findall(r'"([^"]*)"', block):
                assert re.fullmatch(r"[\w .,:=×…/+\-()\[\]<>?]*", label), (path, label)
                assert "<" not in label.replace("<br>", ""), (path, label)
    assert blocks > 50


def test_a_missing_javascript_asset_is_one_line_and_exit_2(built, tmp_path):
    environment = {**built.environment, "PAPERS_SITE_NODE_MODULES": str(tmp_path / "nothing")}
    done = subprocess.run(
        [sys.executable, "-m", "papers", "site", "build", "--out", str(tmp_path / "out")],
        env=environment,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "npm ci" in done.stderr
    assert not (tmp_path / "out").exists()


def test_the_cli_reference_lists_every_command(built):
    from papers.cli import cli

    page = (built.first / "docs" / "reference" / "cli.md").read_text().replace("\\", "")
    for name in cli.commands:
        assert f"## papers {name}\n" in page, name
    assert "## papers site build\n" in page and "--site-url" in page


def test_the_plugin_guide_shows_the_example_package_and_every_hook(built):
    page = (built.first / "docs" / "guides" / "plugins.md").read_text()
    assert "papers_example" in page and "[project.entry-points.papers]" in page
    assert "### `papers_specs`" in page and "### `papers_ops`" in page


def test_the_classification_page_charts_error_against_cost(built):
    page = (built.first / "site" / "classification" / "index.html").read_text()
    charts = re.findall(r'<svg [^>]*class="papers-chart".*?</svg>', page, flags=re.S)
    assert len(charts) >= 2
    assert all(chart.count('class="papers-point"') >= 3 for chart in charts)
    assert re.search(r"vgg16: 2\d\.\d+% at 15\.5G", page), "a point's tooltip: error at multiply-adds"


def _charts(built: Built) -> dict[str, str]:
    return {path.name: path.read_text() for path in (built.first / "docs" / "charts").glob("*.svg")}


def test_a_chart_per_protocol_plots_single_models_each_labelled(built):
    charts = _charts(built)
    titles = [re.search(r"<title>([^<]*)</title>", svg).group(1) for svg in charts.values()]
    assert len(set(titles)) == len(titles), "one chart per dataset and protocol"
    assert any("single crop" in title for title in titles) and any("ten crop" in title for title in titles)
    every = "".join(charts.values())
    assert "alexnet: 38.1%" not in every, "AlexNet's five-CNN average is no single model"
    assert "bn_inception: 20.1%" not in every, "nor BN-Inception's six-model ensemble"
    for name, svg in charts.items():
        points = re.findall(r'class="papers-point"><title>([^:<]+):', svg)
        labels = re.findall(r'<text [^>]*font-size="10"[^>]*>([^<]+)</text>', svg)
        assert points and sorted(points) == sorted(labels), name


def test_the_topic_page_lists_every_variant_downloadable_as_csv_and_json(built):
    import csv

    site = built.first / "site" / "classification"
    rows = json.loads((site / "variants.json").read_text())
    with (site / "variants.csv").open(newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [row["variant"] for row in table] == [row["variant"] for row in rows]
    by_id = {row["variant"]: row for row in rows}
    assert by_id["vgg16"]["params"] == 138_357_544 and by_id["vgg16"]["weights"] == "torchvision:vgg16"
    assert by_id["alexnet"]["top1_error"] != 38.1, "a single model's error, not the five-CNN average"
    wrn = by_id["wide_resnet50_2"]
    assert (wrn["top1_error"], wrn["top5_error"], wrn["protocol"]) == (21.9, 6.03, "single_crop")
    page = (built.first / "docs" / "classification" / "index.md").read_text()
    assert "(variants.csv)" in page and "(variants.json)" in page and "| `resnet50` |" in page


def test_single_model_leaves_out_ensembles_averages_and_inconsistent_results():
    from papers.charts import single_model
    from papers.spec import Result

    base = {"variant": "v", "metric": "top1_error", "value": 20.0, "unit": "percent", "source": "T"}
    assert single_model(Result(**base))
    assert single_model(Result(**base, conditions={"models": 1, "crops": 10}))
    assert not single_model(Result(**base, conditions={"models": 5}))
    assert not single_model(Result(**base, conditions={"ensemble": "six models"}))
    assert not single_model(Result(**base, inconsistent="Table 9 says otherwise"))


def _result_rows(built: Built, paper: str) -> list[str]:
    page = (built.first / "docs" / "classification" / f"{paper}.md").read_text()
    return [
        line
        for line in page.splitlines()
        if line.startswith('| <span class="papers-variant"><span class="papers-mark')
    ]


def test_result_rows_show_split_conditions_notes_and_tolerance(built):
    resnet = [_text(row).replace("\\", "") for row in _result_rows(built, "resnet")]
    ensemble = next(row for row in resnet if "3.57%" in row)
    assert "test" in ensemble and "ensemble six models" in ensemble and "<sup>" not in ensemble
    best = next(row for row in resnet if "6.43%" in row)
    mean = next(row for row in resnet if "6.61%" in row)
    assert "statistic best" in best and "statistic mean" in mean
    assert any("7.40%" in row for row in resnet), "printed with its column's two decimals"
    alexnet = [_text(row).replace("\\", "") for row in _result_rows(built, "alexnet")]
    assert any("38.1%" in row and "models 5" in row for row in alexnet)
    vgg = [_text(row).replace("\\", "") for row in _result_rows(built, "vgg")]
    assert any("test scale 256" in row and "train scale" in row for row in vgg)
    inception = (built.first / "docs" / "classification" / "inception-v3.md").read_text()
    widened = [row for row in _result_rows(built, "inception-v3") if "(spec)" in row.replace("\\", "")]
    assert widened and all("result-note-" in row for row in widened), "a widened tolerance, explained"
    assert "The spec sets the tolerance to ±" in inception


def test_result_rows_put_the_mark_beside_the_variant_and_a_unit_on_measured_values(built):
    rows = _result_rows(built, "vgg")
    header = next(
        line
        for line in (built.first / "docs" / "classification" / "vgg.md").read_text().splitlines()
        if line.startswith("| variant | metric")
    )
    assert "scope" not in header and "check" not in header
    params = next(_text(row).replace("\\", "") for row in rows if "parameters" in row and "`vgg16`" in row)
    assert re.search(r"✓\s`vgg16` .*\| 138 M \| 138\.36 M \|", params), params
    assert not any(re.search(r"\| 1\d\d\.0 M", row.replace("\\", "")) for row in rows), "138, not 138.0"
    top1 = next(_text(row).replace("\\", "") for row in rows if "27.0%" in row.replace("\\", ""))
    assert "26.8%" in "".join(rows).replace("\\", ""), "27.0 keeps the digit its column prints"
    assert "vgg16" in top1


def test_results_the_paper_contradicts_are_marked_checked_and_listed_on_the_errata_page(built):
    googlenet = _result_rows(built, "googlenet")
    marked = [row for row in googlenet if "papers-inconsistent" in row]
    assert len(marked) == 4 and all("≠" in row for row in marked)
    errata = (built.first / "docs" / "errata.md").read_text()
    for text in ("GoogLeNet", "BN-Inception", "Wide ResNet", "118M", "13.6", "5.79"):
        assert text in errata.replace("\\", ""), text
    assert (built.first / "site" / "errata" / "index.html").is_file()
    done = subprocess.run(
        [sys.executable, "-m", "papers", "check", "googlenet"],
        env=built.environment,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, "an inconsistency is no failure"
    assert "4 paper inconsistent" in done.stdout and "paper inconsistent: googlenet macs" in done.stdout


def test_a_result_marked_inconsistent_is_checked_as_its_own_status():
    from papers.checks import check_spec
    from papers.graph import expand
    from papers.measure import measure_graph
    from papers.ops import Catalogue
    from papers.spec import validate_spec

    data = minimal_spec()
    count = {"variant": "tiny8", "metric": "params", "unit": "count", "source": "T"}
    data["results"] = [
        {**count, "value": 314},  # 3·8·9 + 8 + 8·10 + 10
        {**count, "value": 999, "inconsistent": "Table 2 prints another count"},
    ]
    spec = validate_spec(data)
    catalogue = Catalogue()
    flat = expand(spec, "net", {}, catalogue)
    checks = check_spec(spec, lambda v: (flat, measure_graph(v, flat, catalogue)))
    assert [c.status for c in checks] == ["pass", "inconsistent"]
    assert checks[1].measured == 314 and checks[1].reason == "Table 2 prints another count"


def test_numbers_show_as_printed_with_their_columns_precision():
    from papers.site import printed_decimals
    from papers.spec import Result

    def result(value, **extra):
        fields = {"variant": "v", "metric": "top5_error", "unit": "percent", "source": "Table 3"}
        return Result(**{**fields, "value": value, **extra})

    table = [result(7.4), result(24.19), result(27.0, source="Table 5"), result(23.8, tolerance=0.005)]
    assert printed_decimals(table) == {0: 2, 1: 2, 2: 0, 3: 2}


def test_the_cli_reference_shows_no_sentinel_and_each_help_once(built):
    page = (built.first / "docs" / "reference" / "cli.md").read_text().replace("\\", "")
    assert "Sentinel" not in page and "UNSET" not in page
    assert page.count("Check reported results against measurements") == 1
    assert "Show this message and exit." in page, "the options' help is the table's"
    assert page.count("Show this message and exit.") == page.count("\n## papers")


def test_the_python_api_reference_comes_from_the_docstrings(built):
    import papers

    page = (built.first / "docs" / "reference" / "python.md").read_text()
    for name in papers.__all__:
        assert f"## `{name}`\n" in page, name
    assert "build_model(variant_id: str, *," in page and "device: Any = 'cpu'" in page
    assert "class SpecError(PapersError)" in page
    assert ":class:" not in page and "``" not in page.replace("```", "")


def test_the_schema_page_is_field_tables_and_a_download(built):
    page = (built.first / "docs" / "reference" / "schema.md").read_text()
    assert "## Result\n" in page and "| `inconsistent` |" in page and "| `variant` | string | yes |" in page
    assert '"$defs"' not in page, "no JSON dump"
    schema = json.loads((built.first / "site" / "reference" / "spec.schema.json").read_text())
    assert "Result" in schema["$defs"]
    assert "(spec.schema.json)" in page


def test_getting_started_and_training_pages_say_how_to_install_from_a_clone(built):
    home = (built.first / "docs" / "index.md").read_text()
    assert "pip install papers" not in home and "make demo" in home
    start = (built.first / "docs" / "guides" / "getting-started.md").read_text()
    assert "make demo" in start and "pip install -e ." in start and "papers check vgg" in start
    training = (built.first / "docs" / "guides" / "training.md").read_text()
    assert "DistributedDataParallel" in training and "--resume" in training


def test_each_variant_has_an_inference_and_features_snippet_with_its_preprocessing(built):
    vgg = (built.first / "docs" / "classification" / "vgg.md").read_text()
    assert 'get_model_weights("vgg16").DEFAULT' in vgg and "weights.transforms()" in vgg
    assert 'features=["stage4", "stage5"]' in vgg or "features=[" in vgg
    resnet = (built.first / "docs" / "classification" / "resnet.md").read_text()
    cifar = _snippet(resnet, "resnet110")  # CIFAR-10: the original 32×32 view, the run's statistics
    assert "T.Resize(32, antialias=True)" in cifar and "T.CenterCrop(32)" in cifar
    assert 'T.Normalize(norm["mean"], norm["std"])' in cifar and '"model.safetensors"' in cifar
    ten = _snippet(resnet, "resnet18_a")  # Table 2: ten crops of the image resized to 256
    assert "T.Resize(256, antialias=True)" in ten and "T.TenCrop(224)" in ten and ".mean(0" in ten


def _snippet(page: str, variant: str) -> str:
    """The Python of a variant's example on a paper page's Markdown."""
    block = page.split(f'??? example "{variant}', 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    return textwrap.dedent(block)


def test_a_trained_variants_snippet_runs_on_an_image_with_its_run_folder(built, tmp_path, monkeypatch):
    import torch
    from PIL import Image
    from safetensors.torch import save_file

    import papers

    torch.set_num_threads(1)
    snippet = _snippet((built.first / "docs" / "classification" / "resnet.md").read_text(), "resnet110")
    (tmp_path / "run").mkdir()
    state = papers.build_model("resnet110", num_classes=7).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "run" / "model.safetensors"))
    record = {"options": {"num_classes": 7}, "normalize": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    (tmp_path / "run" / "recipe.json").write_text(json.dumps(record))
    monkeypatch.chdir(tmp_path)
    scope = {"image": Image.new("RGB", (48, 40), (200, 30, 90))}
    exec(compile(snippet, "resnet110 snippet", "exec"), scope)
    assert scope["logits"].shape == (1, 7)
    assert {name: tuple(m.shape) for name, m in scope["maps"].items()} == {
        "stage2": (1, 32, 16, 16),
        "stage3": (1, 64, 8, 8),
    }


def test_a_detectors_and_a_segmenters_snippets_go_through_their_task_layers():
    from types import SimpleNamespace

    from papers.site import _variant_page
    from papers.spec import validate_spec

    def snippet(file: str, variant_id: str) -> str:
        spec = validate_spec(yaml.safe_load((REPO / "tests" / "specs" / file).read_text()))
        variant = next(v for v in spec.variants if v.id == variant_id)
        measured = SimpleNamespace(
            params=1, macs=1, input_shapes={"images": [1, 3, 64, 64]}, output_shapes={}
        )
        text = _variant_page(variant, measured, None, spec).snippet
        compile(text, variant_id, "exec")  # Python, whatever else it says
        return text

    detector = snippet("retinanet_demo.yaml", "retinanet_demo")
    assert "detections = model(images)" in detector and "shorter side 800, longer at most 1333" in detector
    assert "CenterCrop" not in detector and "logits" not in detector and "T.Normalize" not in detector
    classifier = snippet("retinanet_demo.yaml", "fpn_p3p7_demo")  # no task layer: an image classifier's
    assert "logits = model(batch)" in classifier


def test_a_two_stage_detectors_and_a_method_variants_snippets_say_how_they_run():
    from types import SimpleNamespace

    import papers
    from papers.site import _variant_page

    def page(paper: str, variant_id: str):
        spec = papers.get_spec(paper)
        variant = next(v for v in spec.variants if v.id == variant_id)
        measured = SimpleNamespace(
            params=1, macs=1, input_shapes={"images": [1, 3, 64, 64]}, output_shapes={}
        )
        built = _variant_page(variant, measured, None, spec)
        compile(built.snippet, variant_id, "exec")
        return built

    detector = page("fpn", "fasterrcnn_resnet50_fpn").snippet
    assert "detections = model(images)" in detector and "to floats in [0, 1]" in detector
    assert '["out"]' not in detector and "centre crop" not in detector
    pruned = page("han2015", "han2015-lenet300_100")
    assert pruned.base == "lenet300_100" and pruned.methods[0][0] == "magnitude_prune"
    assert "fc1: 0.08" in pruned.methods[0][1]
    assert "papers compress han2015-lenet300_100 --weights" in pruned.snippet
    assert 'papers.load_compressed("out/model.safetensors")' in pruned.snippet


def test_each_resnet_v1_5_note_gives_its_own_measured_multiply_adds(built, monkeypatch):
    import papers

    monkeypatch.setenv("PAPERS_CACHE_DIR", built.environment["PAPERS_CACHE_DIR"])  # measured already
    notes = {v.id: v.origin_note for v in papers.get_spec("resnet").variants}
    for depth in (50, 101, 152):
        v1, v15 = papers.measure(f"resnet{depth}").macs, papers.measure(f"resnet{depth}.torchvision").macs
        assert f"{v15 / 1e9:.2f} against {v1 / 1e9:.2f} billion" in notes[f"resnet{depth}.torchvision"]
    for spec in papers.list_papers():  # a note with numbers in it belongs to one variant
        numbered = [
            v.origin_note for v in spec.variants if v.origin_note and re.search(r"\d\.\d", v.origin_note)
        ]
        assert len(numbered) == len(set(numbered)), spec.id


def test_the_bottleneck_is_drawn_for_a_downsampling_instance(built):
    page = (built.first / "docs" / "classification" / "resnet.md").read_text()
    block = page.split('??? note "Block bottleneck"', 1)[1].split("???", 1)[0]
    assert "Drawn for layer2\\.0 of" in block, "the first block of a stage that halves the grid"
    assert "conv2d 1×1 /2" in block, "the paper's stride, in the first 1×1 (v1.5 moves it)"


def test_a_paper_page_shows_papers_diff_for_each_library_variant(built):
    resnet = (built.first / "docs" / "classification" / "resnet.md").read_text()
    section = resnet.split("## Differences", 1)[1].split("\n## ", 1)[0]
    for depth in (50, 101, 152):
        assert f'??? note "resnet{depth} → resnet{depth}.torchvision: 6 nodes differ, +231.21 M' in section
    assert "| ~ | `layer2.0.conv1` | conv2d | stride: 2 → 1 |" in section
    assert "| total | 25.56 M | 25.56 M | 0 | 3.86 G | 4.09 G | +231.21 M |" in section
    senet = (built.first / "docs" / "classification" / "senet.md").read_text()
    assert '??? note "resnet50 → seresnet50:' in senet and "`layer1.0.se_module.fc1`" in senet
    assert "more rows: `papers diff resnet50 seresnet50` lists them all" in senet
    html_page = _page(built, "senet").read_text()
    assert "<details" in html_page and "papers diff resnet50 seresnet50" in _text(html_page)
    assert "## Differences" not in (built.first / "docs" / "classification" / "lenet.md").read_text()


def test_the_site_ships_no_source_maps_and_mermaid_only_where_diagrams_are(built):
    site = built.first / "site"
    assert not list(site.rglob("*.map"))
    assert not (site / "assets" / "javascripts" / "lunr").exists()
    for path in site.rglob("*.js"):
        assert b"sourceMappingURL" not in path.read_bytes(), path
    for path in site.rglob("index.html"):
        text = path.read_text()
        assert ("mermaid.min.js" in text) == ('class="mermaid"' in text), path
    for page in ("index.html", "reference/cli/index.html", "reference/schema/index.html"):
        assert "mermaid" not in (site / page).read_text(), page


def test_chart_text_stays_out_of_the_search_index(built):
    index = (built.first / "site" / "search" / "search_index.json").read_text()
    assert "top-1 error (%, reported)" not in index and "multiply-adds (measured" not in index
    assert "Accuracy against cost" in index, "the page itself is indexed"


def test_canonical_links_and_the_sitemap_use_the_site_url(built):
    site = built.first / "site"
    page = (site / "classification" / "resnet" / "index.html").read_text()
    assert f'<link rel="canonical" href="{SITE_URL}classification/resnet/">' in page
    locations = re.findall(r"<loc>([^<]+)</loc>", (site / "sitemap.xml").read_text())
    assert f"{SITE_URL}classification/resnet/" in locations
    assert all(location.startswith(SITE_URL) for location in locations)


def test_the_site_url_defaults_from_the_projects_metadata(monkeypatch):
    from email.message import Message

    from papers import site

    metadata = Message()
    metadata["Project-URL"] = "Source, https://example.org/papers.git"
    metadata["Project-URL"] = "Documentation, https://example.org/papers"
    monkeypatch.setattr("importlib.metadata.metadata", lambda name: metadata)
    assert site.default_site_url() == "https://example.org/papers/"
    monkeypatch.setattr("importlib.metadata.metadata", lambda name: Message())
    assert site.default_site_url() == site.LOCAL_URL


def test_docstrings_restructuredtext_and_spec_backticks_show_as_code(built):
    from papers.site import rst_prose

    assert rst_prose("a ``str`` or :class:`pathlib.Path` <b>") == (
        r"a <code>str</code> or <code>pathlib\.Path</code> &lt;b&gt;"
    )
    guide = (built.first / "docs" / "guides" / "plugins.md").read_text()
    assert ":class:" not in guide and "<code>papers\\.spec\\.Spec</code>" in guide
    lenet = (built.first / "docs" / "classification" / "lenet.md").read_text()
    assert "\\`" not in lenet, "no literal backticks"
    home = (built.first / "site" / "index.html").read_text()
    assert "<code>papers site build</code>" in home and "`papers site build`" not in home, "the footer"
    cli = _text((built.first / "site" / "reference" / "cli" / "index.html").read_text())
    assert "`" not in re.sub(r"```.*?```", "", cli, flags=re.S), "option help shows code as code"


def test_markdown_text_escapes_html_and_markdown_syntax():
    assert markdown_text("<b>x</b> & y") == "&lt;b&gt;x&lt;/b&gt; &amp; y"
    assert markdown_text("*a* [b](c) | `d` #e") == r"\*a\* \[b\]\(c\) \| \`d\` \#e"
    assert markdown_text("two\nlines") == "two lines"


def test_backticks_in_prose_mark_code_and_code_is_escaped_too():
    assert markdown_prose("the `_a` <b>") == r"the <code>\_a</code> &lt;b&gt;"
    assert markdown_prose("`<script>`") == "<code>&lt;script&gt;</code>"
    assert markdown_prose("one ` alone") == markdown_text("one ` alone")


def test_mermaid_labels_keep_a_safe_alphabet():
    assert not set(label_text('a"]-->b<script>`#;')) & set('"<>`#;')
    assert label_text("conv2d 3×3 /2") == "conv2d 3×3 /2"


def test_a_deep_network_is_drawn_one_level_at_a_time():
    import papers

    flat = papers.expand_variant("preact_resnet1001")
    top = view(flat)
    assert top.nodes < 15, "groups are single nodes"
    stage = view(flat, "layer1")
    assert stage.nodes <= 6 and "more" in stage.text, "a run of 111 blocks is shortened"
    block = view(flat, "layer1.0", collapse_groups=False)
    assert "conv" in block.text and block.nodes > 5


# --- in a real browser ------------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Beside the build, not in it: `papers site build` refuses a build/ that holds anything of its own.
SCREENSHOTS = Path(os.environ.get("PAPERS_SCREENSHOTS") or Path(tempfile.gettempdir()) / "papers-screenshots")


@pytest.fixture(scope="module")
def browser_site(built):
    """The first build served on 127.0.0.1 and a headless chromium (Debian's, driven by playwright)."""
    import functools
    import http.server
    import threading

    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "`make test` installs chromium (apt-get install chromium)"

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # keep the test output quiet
            pass

    handler = functools.partial(Handler, directory=str(built.first / "site"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser, f"http://127.0.0.1:{server.server_address[1]}/"
        browser.close()
    server.shutdown()
    server.server_close()


class _Visit:
    """A page opened in a fresh context, recording console errors, page errors and dialogs."""

    def __init__(self, browser, url: str, scheme: str = "light", width: int = 1280):
        self.context = browser.new_context(viewport={"width": width, "height": 900}, color_scheme=scheme)
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.requests: list[str] = []
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("console", lambda m: self.problems.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda error: self.problems.append(str(error)))
        self.page.on(
            "dialog", lambda dialog: (self.problems.append(f"dialog {dialog.message}"), dialog.dismiss())
        )
        self.page.goto(url)
        self.page.wait_for_load_state("load")

    def diagram_drawn(self) -> dict:
        """Material draws mermaid into a closed shadow root: judge by the element's rendered size."""
        self.page.wait_for_function(
            "() => { const e = document.querySelector('.mermaid');"
            " return e && e.getBoundingClientRect().height > 150 && e.getBoundingClientRect().width > 150; }",
            timeout=20_000,
        )
        return self.page.eval_on_selector(
            ".mermaid", "e => ({w: e.getBoundingClientRect().width, h: e.getBoundingClientRect().height})"
        )

    def close(self) -> list[str]:
        self.context.close()
        return self.problems


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("paper", ["vgg", "resnet"])
def test_a_paper_page_shows_its_diagram_bibtex_and_checks_in_a_browser(browser_site, built, paper, scheme):
    browser, base = browser_site
    topic_path = _page(built, paper).parent.relative_to(built.first / "site").as_posix()
    visit = _Visit(browser, f"{base}{topic_path}/", scheme)
    size = visit.diagram_drawn()
    assert size["h"] > 150 and size["w"] > 150
    bibtex = visit.page.locator("code", has_text="@inproceedings").first
    assert bibtex.is_visible()
    bibtex.scroll_into_view_if_needed()  # Material adds copy buttons to code blocks as they show
    copy = visit.page.locator(".md-code__button[data-md-type=copy], .md-clipboard")  # Material 9.7, earlier
    copy.first.wait_for(state="attached", timeout=10_000)
    table = visit.page.locator("table", has_text="measured").first
    assert table.locator("text=✓").count() > 0
    visit.page.screenshot(path=str(SCREENSHOTS / f"{paper}-{scheme}.png"))
    visit.page.locator(".mermaid").first.screenshot(path=str(SCREENSHOTS / f"{paper}-diagram-{scheme}.png"))
    assert visit.close() == []


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_home_page_table_filters_and_sorts_in_a_browser(browser_site, built, scheme):
    browser, base = browser_site
    visit = _Visit(browser, base, scheme)
    rows = visit.page.locator("#papers-table tbody tr")
    assert rows.count() == len(built.ids)
    visit.page.screenshot(path=str(SCREENSHOTS / f"home-{scheme}.png"))
    visit.page.fill("input[data-filter-table]", "residual")
    visible = [r for r in rows.all() if r.is_visible()]
    assert {r.locator("td").first.inner_text() for r in visible} >= {"ResNet"}
    assert len(visible) < len(built.ids)
    visit.page.fill("input[data-filter-table]", "")
    visit.page.locator("#papers-table th", has_text="year").click()
    visit.page.locator("#papers-table th", has_text="year").click()  # descending
    years = [int(r.locator("td").nth(3).inner_text()) for r in rows.all()]
    assert years == sorted(years, reverse=True)
    assert visit.close() == []


def test_the_topic_page_draws_its_charts_in_a_browser(browser_site):
    browser, base = browser_site
    visit = _Visit(browser, f"{base}classification/")
    chart = visit.page.locator("svg.papers-chart").first
    box = chart.bounding_box()
    assert box and box["width"] > 300 and box["height"] > 150
    chart.scroll_into_view_if_needed()
    visit.page.screenshot(path=str(SCREENSHOTS / "classification.png"))
    assert visit.close() == []


def test_search_finds_a_paper_by_its_title_in_a_browser(browser_site):
    browser, base = browser_site
    visit = _Visit(browser, base)
    visit.page.locator("label.md-search__icon, .md-search__input").first.click()
    # typed key by key: Material searches on keyboard events, which `fill` does not send
    # words of VGGNet's title that no other paper's title shares: "Very Deep Convolutional", also in
    # Zhang et al. 2016's title, stopped finding VGGNet within 20 s once that paper was added
    visit.page.locator("input.md-search__input").press_sequentially("Large-Scale Image Recognition", delay=20)
    result = visit.page.locator(".md-search-result__item", has_text="VGGNet").first
    result.wait_for(timeout=20_000)
    visit.page.screenshot(path=str(SCREENSHOTS / "search.png"))
    assert visit.close() == []


def test_a_hostile_spec_runs_no_script_in_a_browser(browser_site, built):
    browser, base = browser_site
    topic_path = _page(built, "hostile").parent.relative_to(built.first / "site").as_posix()
    visit = _Visit(browser, f"{base}{topic_path}/")
    visit.diagram_drawn()
    assert "<script>alert('name')</script>" in visit.page.locator("h1").first.inner_text()
    assert visit.page.locator("img[src=x]").count() == 0
    assert visit.close() == [], "no alert ran and nothing failed"


def _page_overflow(visit: _Visit) -> int:
    """How far the page scrolls sideways (0: not at all)."""
    return visit.page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")


@pytest.mark.parametrize("width", [1280, 390])
def test_the_results_table_fits_with_marks_beside_ids_on_one_line_in_a_browser(browser_site, width):
    browser, base = browser_site
    visit = _Visit(browser, f"{base}classification/resnet/", width=width)
    assert _page_overflow(visit) <= 0
    table = visit.page.locator("table", has_text="tolerance").first
    table.scroll_into_view_if_needed()
    wrap = table.evaluate(
        "t => { const w = t.closest('.md-typeset__scrollwrap') || t.parentElement;"
        " return {scroll: w.scrollWidth, client: w.clientWidth}; }"
    )
    if width >= 1280:
        assert wrap["scroll"] <= wrap["client"] + 1, "every column visible at 1280 px"
    cell = table.locator("tbody tr").first.locator("td").first
    mark, code = cell.locator(".papers-mark"), cell.locator("code")
    assert mark.is_visible() and mark.bounding_box()["x"] + 20 < width, "the mark is in view"
    lines = visit.page.evaluate(
        "() => Math.max(...[...document.querySelectorAll('article td code')]"
        ".map(c => c.getClientRects().length))"
    )
    assert lines == 1, "no id breaks across lines"
    assert abs(mark.bounding_box()["y"] - code.bounding_box()["y"]) < 12, "the mark sits beside the id"
    apart = visit.page.evaluate(
        "() => [...document.querySelectorAll('article td .papers-mark')].filter(m => {"
        " const code = m.parentElement.querySelector('code');"
        " return !code || Math.abs(m.getBoundingClientRect().top - code.getBoundingClientRect().top) > 12;"
        " }).length"
    )
    assert apart == 0, "in every row"
    visit.page.screenshot(path=str(SCREENSHOTS / f"resnet-results-{width}.png"))
    assert visit.close() == []


@pytest.mark.parametrize("width", [1280, 390])
def test_every_paper_page_fits_with_each_mark_beside_its_id_in_a_browser(browser_site, built, width):
    """Every paper of the registry, whichever topic: the page never scrolls sideways, every table
    shows every column at 1280 px, and no mark wraps away from its variant."""
    browser, base = browser_site
    context = browser.new_context(viewport={"width": width, "height": 900})
    context.route(re.compile(r"mermaid"), lambda route: route.abort())  # tables, not diagrams: faster
    page = context.new_page()
    site = built.first / "site"
    for paper in built.ids:
        path = _page(built, paper).parent.relative_to(site).as_posix()
        page.goto(f"{base}{path}/", wait_until="domcontentloaded")  # the layout, not the diagrams
        page.wait_for_function(  # Material has wrapped the tables in their scrolling boxes
            "() => [...document.querySelectorAll('article table')]"
            ".every(t => t.closest('.md-typeset__scrollwrap'))"
        )
        found = page.evaluate(
            """() => ({
              overflow: document.documentElement.scrollWidth - window.innerWidth,
              hidden: [...document.querySelectorAll('article table')].filter(t => {
                const w = t.closest('.md-typeset__scrollwrap') || t.parentElement;
                return w.scrollWidth > w.clientWidth + 1; }).length,
              apart: [...document.querySelectorAll('article td .papers-mark')].filter(m => {
                const code = m.parentElement.querySelector('code');
                const top = code && code.getBoundingClientRect().top;
                return !code || Math.abs(m.getBoundingClientRect().top - top) > 12;
              }).length,
              scripted: [...document.querySelectorAll('a[href]')]
                .filter(a => a.protocol === 'javascript:').length,
            })"""
        )
        assert found["overflow"] <= 0 and found["apart"] == 0 and found["scripted"] == 0, (paper, found)
        if width >= 1280:
            assert found["hidden"] == 0, (paper, found)
    context.close()


def _javascript_links(visit: _Visit) -> list[str]:
    """Links of the page (in its document, once scripts ran) whose address would run script."""
    return visit.page.evaluate(
        "() => [...document.querySelectorAll('a[href], area[href]')]"
        ".filter(a => a.protocol === 'javascript:' || a.protocol === 'data:').map(a => a.href)"
    )


@pytest.mark.parametrize("width", [1280, 390])
@pytest.mark.parametrize("paper", ["senet", "hostile"])
def test_differences_fit_and_no_link_runs_script_in_a_browser(browser_site, built, paper, width):
    browser, base = browser_site
    topic_path = _page(built, paper).parent.relative_to(built.first / "site").as_posix()
    visit = _Visit(browser, f"{base}{topic_path}/", width=width)
    visit.page.evaluate("() => document.querySelectorAll('article details').forEach(d => { d.open = true; })")
    assert _page_overflow(visit) <= 0
    assert _javascript_links(visit) == []
    if paper == "senet":
        costs = visit.page.locator("details table", has_text="Δ multiply-adds").first
        costs.scroll_into_view_if_needed()
        assert costs.locator("td", has_text="total").first.is_visible()
        if width >= 1280:  # every column of the node and cost tables in view
            hidden = visit.page.evaluate(
                "() => [...document.querySelectorAll('article details table')].filter(t => {"
                " const w = t.closest('.md-typeset__scrollwrap') || t.parentElement;"
                " return w.scrollWidth > w.clientWidth + 1; }).length"
            )
            assert hidden == 0
        visit.page.screenshot(path=str(SCREENSHOTS / f"senet-diff-{width}.png"))
    assert visit.close() == []


@pytest.mark.parametrize("width", [1280, 390])
def test_the_lineage_page_draws_its_tree_and_fits_in_a_browser(browser_site, width):
    browser, base = browser_site
    visit = _Visit(browser, f"{base}lineage/", width=width)
    visit.diagram_drawn()
    assert _page_overflow(visit) <= 0
    assert _javascript_links(visit) == []
    links = visit.page.locator("article table a", has_text="Pre-activation ResNet")
    assert links.count() >= 1 and links.first.is_visible()
    visit.page.screenshot(path=str(SCREENSHOTS / f"lineage-{width}.png"))
    assert visit.close() == []


@pytest.mark.parametrize("width", [1280, 390])
@pytest.mark.parametrize(
    "path", ["", "classification/", "errata/", "reference/cli/", "reference/schema/", "reference/python/"]
)
def test_pages_without_diagrams_fit_and_load_no_mermaid_in_a_browser(browser_site, path, width):
    browser, base = browser_site
    visit = _Visit(browser, f"{base}{path}", width=width)
    visit.page.wait_for_load_state("networkidle")
    assert not [url for url in visit.requests if "mermaid" in url]
    assert _page_overflow(visit) <= 0
    assert _javascript_links(visit) == []
    if width >= 1280:  # every column in view, ✗ and "not measurable" included
        hidden = visit.page.evaluate(
            "() => [...document.querySelectorAll('article table')].filter(t => {"
            " const w = t.closest('.md-typeset__scrollwrap') || t.parentElement;"
            " return w.scrollWidth > w.clientWidth + 1; }).length"
        )
        assert hidden == 0
    assert visit.close() == []


def test_a_page_with_diagrams_loads_mermaid_from_the_site_in_a_browser(browser_site):
    browser, base = browser_site
    visit = _Visit(browser, f"{base}classification/vgg/")
    visit.diagram_drawn()
    loaded = [url for url in visit.requests if "mermaid" in url]
    assert loaded and all(url.startswith(base) for url in loaded), "from the site, not a CDN"
    assert visit.close() == []


@pytest.mark.parametrize("width", [1280, 390])
def test_chart_legends_and_labels_fit_inside_their_charts_in_a_browser(browser_site, width):
    browser, base = browser_site
    visit = _Visit(browser, f"{base}classification/", width=width)
    assert _page_overflow(visit) <= 0
    outside = visit.page.evaluate(
        """() => [...document.querySelectorAll('svg.papers-chart')].flatMap(svg => {
             const width = svg.viewBox.baseVal.width;
             const box = svg.getBoundingClientRect();
             return [...svg.querySelectorAll('text')]
               .filter(t => { const b = t.getBoundingClientRect();
                              return b.left < box.left - 1 || b.right > box.right + 1; })
               .map(t => t.textContent); })"""
    )
    assert outside == []
    visit.page.locator("svg.papers-chart").first.screenshot(path=str(SCREENSHOTS / f"chart-{width}.png"))
    assert visit.close() == []


def test_a_results_file_turns_its_accuracies_into_checks_on_the_pages(built, tmp_path, monkeypatch):
    from papers.results import Measured, ResultsFile
    from papers.site import collect

    monkeypatch.setenv("PAPERS_CACHE_DIR", built.environment["PAPERS_CACHE_DIR"])  # measured already
    labels = {"dataset": "ImageNet (ILSVRC-2012)", "split": "val", "protocol": "single_crop"}
    results = ResultsFile(
        results=[Measured(variant="densenet121", metric="top1_accuracy", value=74.98, **labels)]
    )
    path = tmp_path / "results.json"
    path.write_text(results.model_dump_json())
    page = next(p for p in collect(path).papers if p.id == "densenet")
    row = next(c for c in page.checks if c.variant == "densenet121" and c.metric == "top1_error")
    assert row.status == "pass" and row.measured == pytest.approx(25.02)
    assert page.counts["pass"] > next(p for p in collect().papers if p.id == "densenet").counts["pass"]
