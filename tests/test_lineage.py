"""`papers.lineage` and the site's lineage page: the registry's family tree, read from the specs."""

from __future__ import annotations

import html as html_module
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urljoin, urlparse

import pytest

import papers
from papers.lineage import LineageEdge, lineage_page


def _edges() -> dict[tuple[str, str], tuple[str, ...]]:
    return {(edge.source, edge.target): edge.via for edge in papers.lineage()}


def test_resnext_wrn_and_senet_build_on_resnet_by_inlining_its_graphs():
    edges = _edges()
    assert edges[("resnet", "resnext")] == ("uses", "graph resnet.resnet")
    assert edges[("resnet", "wide-resnet")] == ("uses", "graph resnet.resnet")
    assert edges[("resnet", "senet")] == ("uses", "graph resnet.stages")


def test_wrn_builds_on_pre_activation_resnet_through_its_block():
    assert _edges()[("preact-resnet", "wide-resnet")] == ("uses", "block preact-resnet.basic")


def test_the_papers_that_reuse_nothing_are_drawn_from_their_specs_uses():
    edges = _edges()
    assert edges[("resnet", "preact-resnet")] == ("uses",)
    assert edges[("googlenet", "bn-inception")] == ("uses",)
    assert edges[("googlenet", "inception-v3")] == ("uses",)
    assert edges[("inception-v3", "inception-v4")] == ("uses",)
    assert edges[("resnet", "inception-v4")] == ("uses",)
    for paper in ("preact-resnet", "bn-inception", "inception-v3", "inception-v4"):
        assert papers.get_spec(paper).uses, f"{paper}: the edge is data in its spec"


def test_every_edge_joins_two_registered_papers_older_first_and_none_repeats():
    edges = papers.lineage()
    registered = {spec.id for spec in papers.list_papers()}
    assert edges
    assert len({(e.source, e.target) for e in edges}) == len(edges)
    for edge in edges:
        assert {edge.source, edge.target} <= registered
        assert edge.source != edge.target
        assert papers.get_spec(edge.source).citation.year <= papers.get_spec(edge.target).citation.year


def test_a_method_variant_builds_on_the_paper_of_its_base(demo):
    edges = _edges()
    assert edges[("resnet", "narrow-demo")] == ("base resnet20",)
    assert edges[("lenet", "magnitude-demo")] == ("base lenet5",)


def test_the_diagram_links_each_paper_and_keeps_spec_text_out_of_mermaid_syntax():
    spec = papers.get_spec("resnet")
    hostile = spec.model_copy(update={"id": "hostile", "name": 'x"] --> y["<script>'})
    page = lineage_page(
        [spec, hostile],
        {"resnet": "classification/resnet.md", "hostile": 'classification/"hostile.md'},
        [LineageEdge("resnet", "hostile", ("graph resnet.resnet",))],
    )
    assert 'click p0 href "../classification/resnet/"' in page.diagram
    assert "click p1" not in page.diagram  # a page path that is not plain is not linked
    label = next(line for line in page.diagram.splitlines() if line.strip().startswith("p1["))
    assert label.count('"') == 2 and "<script>" not in label and "-->" not in label
    assert page.diagram.count("-->") == 1


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site as `papers site build` makes it (measurements shared with the session's cache)."""
    out = tmp_path_factory.mktemp("lineage-site") / "build"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PAPERS_")}
    environment["PAPERS_CACHE_DIR"] = str(tmp_path_factory.getbasetemp() / "cache")
    done = subprocess.run(
        [sys.executable, "-m", "papers", "site", "build", "--out", str(out)],
        env=environment,
        capture_output=True,
        text=True,
        cwd=out.parent,
    )
    assert done.returncode == 0, done.stderr[-3000:]  # mkdocs build --strict: every Markdown link resolves
    return out / "site"


def _resolves(site: Path, page: str, href: str) -> bool:
    """Whether ``href`` on ``page`` (a path under the site, ``lineage/``) names a file of the site."""
    target = urlparse(urljoin(f"http://site/{page}", href)).path.lstrip("/")
    path = site / target
    return (path / "index.html").is_file() if target.endswith("/") or path.is_dir() else path.is_file()


def test_the_lineage_page_is_built_in_the_nav_and_every_paper_on_it_links_to_its_page(site):
    html = (site / "lineage" / "index.html").read_text(encoding="utf-8")
    assert 'href="lineage/"' in (site / "index.html").read_text(encoding="utf-8")  # in the nav
    diagram = re.search(r'<pre class="mermaid"><code>(.*?)</code></pre>', html, re.S)
    assert diagram is not None
    text = html_module.unescape(diagram.group(1))
    clicks = re.findall(r'click (p\d+) href "([^"]+)"', text)
    drawn = re.findall(r"^\s*(p\d+)\[", text, re.M)
    assert sorted(node for node, _ in clicks) == sorted(drawn)  # every drawn paper is a link
    assert {"../classification/resnet/", "../classification/wide-resnet/"} <= {href for _, href in clicks}
    article = html[html.index("<article") : html.index("</article>")]
    table_links = re.findall(r'<a href="(\.\./classification/[^"]+)"', article)
    assert "../classification/preact-resnet/" in table_links
    for href in [href for _, href in clicks] + table_links:
        assert _resolves(site, "lineage/", href), href
