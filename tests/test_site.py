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
        [sys.executable, "-m", "papers", "site", "build", "--out", str(out)],
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
    assert 'torchvision.models.get_model("vgg16", weights="DEFAULT")' in page


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

    page = (built.first / "docs" / "reference" / "cli.md").read_text()
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
    assert all(chart.count("<circle") > 10 for chart in charts[:2])
    assert re.search(r"vgg16: 2\d\.\d+% at 15\.5G", page), "a point's tooltip: error at multiply-adds"


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
SCREENSHOTS = REPO / "build" / "screenshots"


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

    def __init__(self, browser, url: str, scheme: str = "light"):
        self.context = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme=scheme)
        self.page = self.context.new_page()
        self.problems: list[str] = []
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
    visit.page.locator("input.md-search__input").press_sequentially("Very Deep Convolutional", delay=20)
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
