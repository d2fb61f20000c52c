"""Links on the site: a spec's arXiv id, DOI and URL are validated, and the site escapes them anyway.

A DOI such as ``10.1234/x)[doiclick](javascript:alert(1)`` once closed the Markdown link it was put in
and opened a ``javascript:`` one. Specs refuse it (one line naming the field, exit 2); and a link
target that got past validation (a spec copied with ``model_copy(update=...)``, which validates
nothing) is percent-encoded by the renderer, or not linked at all where it is not http(s).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import markdown
import pytest
import yaml

from papers.errors import SpecError
from papers.site import (
    PaperPage,
    _environment,
    _links,
    link_target,
    markdown_link,
    site_sources,
)
from papers.spec import validate_spec
from papers.text import STATUS
from tests.conftest import REPO, minimal_spec, write_spec

HOSTILE_DOI = "10.1234/x)[doiclick](javascript:alert(1)"
HOSTILE_URLS = [
    "javascript:alert(1)",
    "JavaScript:alert(1)",
    " javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "https://example.org/x)[click](javascript:alert(1)",
    "https://example.org/x\"onmouseover=alert(1) '",
    "https://example.org/<script>alert(1)</script>",
    "https://example.org/a{: onclick=alert(1)}",
    "https://example.org/a b",
    "https://example.org/a\\b",
    "http:/example.org",
    "https://example.org/a\n",
    "ftp://example.org/a",
]
# The extensions of site/mkdocs.yml, so that links are read as the site reads them.
EXTENSIONS = [
    "tables",
    "admonition",
    "attr_list",
    "md_in_html",
    "toc",
    "pymdownx.details",
    "pymdownx.highlight",
    "pymdownx.inlinehilite",
    "pymdownx.superfences",
]


def citation_error(**citation) -> SpecError:
    data = minimal_spec()
    data["citation"].update(citation)
    with pytest.raises(SpecError) as caught:
        validate_spec(data, file="spec.yaml")
    return caught.value


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.anchors: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.anchors.append(dict(attrs))


def anchors(markdown_source: str) -> list[dict[str, str | None]]:
    """The attributes of every <a> of the HTML the site's Markdown makes of ``markdown_source``."""
    parser = _Anchors()
    parser.feed(markdown.markdown(markdown_source, extensions=EXTENSIONS))
    return parser.anchors


def hrefs(markdown_source: str) -> list[str]:
    return [str(anchor.get("href")) for anchor in anchors(markdown_source)]


# --- validation -------------------------------------------------------------------------------------


def test_the_hostile_doi_is_refused_by_papers_validate_with_one_line_naming_the_field(run, tmp_path):
    data = minimal_spec()
    data["citation"]["doi"] = HOSTILE_DOI
    path = write_spec(tmp_path / "hostile.yaml", data)
    result = run("validate", str(path))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"papers: error: {path}: citation.doi: not a DOI")
    assert "Traceback" not in result.stderr + result.stdout
    assert list(tmp_path.iterdir()) == [path], "nothing written"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("doi", HOSTILE_DOI),
        ("doi", "10.1234/a b"),
        ("doi", "10.1234/a[1]"),
        ("doi", "10.1234/a(1)"),
        ("doi", "10.1234/a'b"),
        ("doi", "10.1234/x\n"),
        ("doi", "doi:10.1234/x"),
        ("doi", "https://doi.org/10.1234/x"),
        ("arxiv", "1409.1556)[x](javascript:alert(1)"),
        ("arxiv", "1409.1556 "),
        ("arxiv", "arXiv:1409.1556"),
        ("arxiv", "14091556"),
        *(("url", url) for url in HOSTILE_URLS),
    ],
)
def test_link_fields_refuse_what_could_break_a_link(field, value):
    error = citation_error(**{field: value})
    assert error.field == f"citation.{field}"
    assert error.message.startswith(("not a DOI", "not an arXiv id", "not a web address"))
    assert "\n" not in str(error)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("doi", "10.1109/CVPR.2016.90"),
        ("doi", "10.1007/978-3-319-46493-0_38"),
        ("doi", "10.5244/C.30.87"),
        ("doi", "10.1016/j.neunet.2014.09.003"),
        ("doi", "10.1002/andp.19053220607"),
        ("arxiv", "1409.1556"),
        ("arxiv", "1512.00567"),
        ("arxiv", "1409.1556v6"),
        ("arxiv", "hep-th/9901001"),
        ("arxiv", "math.GT/0309136"),
        ("arxiv", "cs/0112017v2"),
        ("url", "https://arxiv.org/abs/1409.1556"),
        ("url", "http://yann.lecun.com/exdb/publis/pdf/lecun-98.pdf"),
        ("url", "https://example.org:8080/a_(b)?q=1&r=%20x#s"),
        ("url", "https://proceedings.neurips.cc/paper/4824-imagenet-classification"),
    ],
)
def test_link_fields_accept_real_identifiers(field, value):
    data = minimal_spec()
    data["citation"][field] = value
    assert getattr(validate_spec(data).citation, field) == value


def test_every_spec_in_the_repository_still_validates():
    files = sorted((REPO / "specs").rglob("*.yaml"))
    assert len(files) > 10
    for path in files:
        validate_spec(yaml.safe_load(path.read_text()), file=str(path))


def test_the_schema_keeps_the_patterns_for_editors():
    from papers.spec import DOI, Spec

    citation = Spec.model_json_schema(by_alias=True)["$defs"]["Citation"]["properties"]
    assert {"type": "string", "pattern": DOI} in citation["doi"]["anyOf"]
    assert all("pattern" in str(citation[name]) for name in ("arxiv", "doi", "url"))


# --- the renderer escapes what got through ------------------------------------------------------


def test_a_link_target_is_http_only_and_percent_encoded():
    assert link_target("https://arxiv.org/abs/1409.1556") == "https://arxiv.org/abs/1409.1556"
    assert link_target("https://example.org/a?b=1&c=%20#d") == "https://example.org/a?b=1&c=%20#d"
    assert link_target("https://doi.org/" + HOSTILE_DOI) == (
        "https://doi.org/10.1234/x%29%5Bdoiclick%5D%28javascript:alert%281%29"
    )
    assert link_target("https://example.org/é <\"'`\\{}>") == (
        "https://example.org/%C3%A9%20%3C%22%27%60%5C%7B%7D%3E"
    )
    for url in ("javascript:alert(1)", " https://x.org", "HTTPS://x.org", "data:,x", "//x.org", ""):
        assert link_target(url) is None, url


@pytest.mark.parametrize("url", ["https://doi.org/" + HOSTILE_DOI, *HOSTILE_URLS])
def test_a_hostile_link_gives_no_other_link_and_no_script(url):
    source = markdown_link("doi:<b>x</b>", url) + " · " + markdown_link("next", "https://example.org/")
    found = hrefs(source)
    assert all(href.startswith(("https://", "http://")) for href in found), found
    assert found[-1] == "https://example.org/", "the next link is intact"
    assert len(found) == (2 if link_target(url) else 1)
    html = markdown.markdown(source, extensions=EXTENSIONS)
    assert "<b>" not in html and "<script" not in html
    assert all(set(anchor) == {"href"} for anchor in anchors(source)), "no attribute but href"


def _page_with(**citation) -> PaperPage:
    """A paper page whose citation skipped validation (``model_copy`` validates nothing)."""
    spec = validate_spec(minimal_spec())
    spec = spec.model_copy(update={"citation": spec.citation.model_copy(update=citation)})
    return PaperPage(
        id=spec.id,
        path=f"classification/{spec.id}.md",
        spec=spec,
        plugin="plugin",
        distribution="distribution",
        file="tiny.yaml",
        bibtex="@misc{x}\n",
        reference="reference",
        links=_links(spec.citation),
        hyperparameters=[],
        variants=[],
        checks=[],
        counts=dict.fromkeys(STATUS, 0),
    )


def test_the_paper_template_escapes_links_that_got_past_validation():
    page = _page_with(doi=HOSTILE_DOI, url="javascript:alert(1)", arxiv="1409.1556)[x](javascript:y)")
    text = _environment(site_sources()).get_template("paper.md.j2").render(page=page, spec=page.spec)
    found = hrefs(text)
    assert found == [
        "https://arxiv.org/abs/1409.1556%29%5Bx%5D%28javascript:y%29",
        "https://doi.org/10.1234/x%29%5Bdoiclick%5D%28javascript:alert%281%29",
    ]
    html = markdown.markdown(text, extensions=EXTENSIONS)
    assert "doiclick</a>" not in html and 'href="javascript' not in html.lower()
    assert "javascript:alert(1)" in html, "the refused URL shows as text, unlinked"


def test_no_template_puts_an_unfiltered_value_at_the_start_of_a_link_target():
    """Links from spec values go through the ``link`` filter; the templates' own links start with a
    topic or a page path (a Literal and a slug), which cannot hold a scheme."""
    for template in Path(site_sources(), "templates").glob("*.j2"):
        text = template.read_text()
        assert not re.search(r"\]\(\{\{(?!\s*topic\s*\}\}/)", text), template.name
        assert not re.search(r"href=\"\{\{(?!\s*page\.path\[)", text), template.name
