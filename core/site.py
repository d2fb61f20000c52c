"""The documentation site: Markdown pages rendered from the registry, then HTML by MkDocs Material.

Nothing on the site is written per paper. ``build_site`` reads every spec of the registry, measures
every variant (measurements come from the cache that ``papers check`` fills), checks the reported
results, draws the graphs (``papers.diagram``) and the charts (``papers.charts``), renders the jinja2
templates of ``papers_site`` (the repository's ``site/`` folder) into ``<out>/docs``, and runs
``mkdocs build --strict`` into ``<out>/site``.

Text from specs is untrusted: the templates autoescape HTML, and the ``md`` filter also escapes what
Markdown would read as syntax. Two builds of one tree give the same bytes: no dates but
``SOURCE_DATE_EPOCH`` (which MkDocs uses for the sitemap), no random ids, sorted inputs.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from papers.errors import PapersError
from papers.text import count, plain

if TYPE_CHECKING:
    from papers.results import ResultsFile

ASSETS = {
    # what the site ships -> where it comes from, under site/node_modules (installed by `npm ci`)
    "assets/vendor/mermaid.min.js": "mermaid/dist/mermaid.min.js",
    "assets/vendor/tablesort.min.js": "tablesort/dist/tablesort.min.js",
    "assets/vendor/tablesort.number.min.js": "tablesort/dist/sorts/tablesort.number.min.js",
}
DEFAULT_EPOCH = 315532800
"""1980-01-01, the date reproducible builds use where neither SOURCE_DATE_EPOCH nor git gives one."""
SYMBOL = {"pass": "✓", "fail": "✗", "not_measurable": "not measurable here"}
TOPIC_TITLES = {
    "classification": "Image classification",
    "detection": "Object detection",
    "segmentation": "Semantic segmentation",
    "compression": "Model compression",
}


def site_sources() -> Path:
    """The folder with mkdocs.yml, the templates and the static assets (the ``papers_site`` package)."""
    return Path(str(files("papers_site")))


# --- escaping -----------------------------------------------------------------------------------

# Python-Markdown's escapable characters with the extensions of site/mkdocs.yml; a backslash before
# any other character would show. HTML's specials become entities, which Markdown leaves alone.
_MARKDOWN_SPECIAL = frozenset("\\`*_{}[]()#+-.!|")
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;"}


def markdown_text(value: Any) -> str:
    """Spec text made inert in Markdown and HTML, on one line: HTML's specials as entities, every
    character Markdown reads as syntax backslash-escaped."""
    return _escaped(" ".join(str(value).split()))


def _escaped(text: str) -> str:
    return "".join(
        _ENTITIES.get(char) or (f"\\{char}" if char in _MARKDOWN_SPECIAL else char) for char in text
    )


def markdown_prose(value: Any) -> str:
    """Like :func:`markdown_text`, but a pair of backticks marks code, as specs' summaries use it."""
    parts = " ".join(str(value).split()).split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: no code at all
        return markdown_text(value)
    return "".join(
        # Markdown still reads emphasis inside inline HTML, so code is escaped the same way
        f"<code>{_escaped(part)}</code>" if index % 2 else _escaped(part)
        for index, part in enumerate(parts)
    )


def _fence(text: str) -> str:
    """A backtick fence longer than any run of backticks in ``text``, so the text cannot close it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


# --- data for the templates -----------------------------------------------------------------------


@dataclass
class VariantPage:
    id: str
    name: str
    graph: str
    origin: str
    origin_note: str | None
    reference: str | None
    args: dict[str, Any]
    params: int
    macs: int
    inputs: dict[str, list[int]]
    output: Any
    library: str | None = None
    """``torchvision`` or ``timm``, from ``reference``."""
    library_model: str | None = None


@dataclass
class ArchitectureView:
    title: str
    caption: str
    text: str
    groups: list[ArchitectureView] = field(default_factory=list)
    """A graph's top-level groups, each drawn on its own."""


@dataclass
class PaperPage:
    id: str
    path: str
    """Page path under docs, ``classification/vgg.md``."""
    spec: Any
    plugin: str
    distribution: str
    file: str
    bibtex: str
    reference: str
    links: list[tuple[str, str]]
    hyperparameters: list[tuple[str, str]]
    variants: list[VariantPage]
    checks: list[Any]
    counts: dict[str, int]
    graphs: list[ArchitectureView] = field(default_factory=list)
    blocks: list[ArchitectureView] = field(default_factory=list)


@dataclass
class SiteData:
    papers: list[PaperPage]
    topics: dict[str, list[PaperPage]]
    charts: dict[str, list[tuple[str, str, str]]]
    """Topic -> (title, file name, SVG text)."""


def collect(results: str | Path | ResultsFile | None = None) -> SiteData:
    """Everything the pages show, from the registry: specs, measurements, checks (with the accuracies
    of a results file from ``papers eval``, where given), diagrams."""
    from papers import api
    from papers.cite import bibtex, reference
    from papers.registry import get_registry

    entries = get_registry().list()
    api.measure_many([v.id for entry in entries for v in entry.spec.variants])  # in parallel, into the cache
    pages = []
    for entry in entries:
        spec = entry.spec
        measured = {}
        flats = {}
        for variant in spec.variants:
            flats[variant.id] = api.expand_variant(variant.id)
            measured[variant.id] = api.measure(variant.id)  # cached by papers.measure
        checks = api.check(spec.id, results=results) if spec.variants else []
        counts = {status: sum(c.status == status for c in checks) for status in SYMBOL}
        page = PaperPage(
            id=spec.id,
            path=f"{spec.topics[0]}/{spec.id}.md",
            spec=spec,
            plugin=entry.plugin,
            distribution=entry.distribution,
            file=_shown_file(entry.file),
            bibtex=bibtex(spec),
            reference=reference(spec).strip(),
            links=_links(spec.citation),
            hyperparameters=_hyperparameters(spec),
            variants=[_variant_page(v, measured[v.id]) for v in spec.variants],
            checks=checks,
            counts=counts,
        )
        _architecture(page, spec, flats, measured)
        pages.append(page)
    topics: dict[str, list[PaperPage]] = {}
    for page in pages:
        for topic in page.spec.topics:
            topics.setdefault(topic, []).append(page)
    from papers.charts import topic_charts

    charts = {topic: topic_charts(topic, members) for topic, members in topics.items()}
    return SiteData(papers=pages, topics=dict(sorted(topics.items())), charts=charts)


def _shown_file(file: str) -> str:
    """A spec's file without this machine's folders: from the package name on, where there is one."""
    parts = Path(file).parts
    for marker in ("papers_specs", "specs", "site-packages"):
        if marker in parts:
            return "/".join(parts[parts.index(marker) :])
    return Path(file).name


def _links(citation: Any) -> list[tuple[str, str]]:
    links = []
    if citation.arxiv:
        links.append((f"arXiv:{citation.arxiv}", f"https://arxiv.org/abs/{citation.arxiv}"))
    if citation.doi:
        links.append((f"doi:{citation.doi}", f"https://doi.org/{citation.doi}"))
    if citation.url and all(url != citation.url for _, url in links):
        links.append((citation.url, citation.url))
    return links


def _hyperparameters(spec: Any) -> list[tuple[str, str]]:
    if spec.hyperparameters is None:
        return []
    data = spec.hyperparameters.model_dump(mode="json", exclude_none=True)
    return [(key.replace("_", " "), plain(value)) for key, value in data.items() if value not in ([], {})]


def _variant_page(variant: Any, measurement: Any) -> VariantPage:
    return VariantPage(
        id=variant.id,
        name=variant.name,
        graph=variant.graph,
        origin=variant.origin,
        origin_note=variant.origin_note,
        reference=variant.reference,
        args=dict(variant.args),
        params=measurement.params,
        macs=measurement.macs,
        inputs={name: shape[1:] for name, shape in measurement.input_shapes.items()},
        output=measurement.output_shapes,
        library=variant.reference.partition(":")[0] if variant.reference else None,
        library_model=variant.reference.partition(":")[2] if variant.reference else None,
    )


def _representatives(spec: Any) -> list[Any]:
    """Variants in the order diagrams are drawn from: most reported results first, then as written."""
    reported = {v.id: sum(r.variant == v.id for r in spec.results) for v in spec.variants}
    position = {v.id: i for i, v in enumerate(spec.variants)}
    return sorted(spec.variants, key=lambda v: (-reported[v.id], position[v.id]))


def _architecture(page: PaperPage, spec: Any, flats: dict[str, Any], measured: dict[str, Any]) -> None:
    """Per graph, its top level and groups drawn for one variant; each block definition once."""
    from papers.diagram import view

    ranked = _representatives(spec)
    for graph in spec.graphs:
        chosen = next((v for v in ranked if v.graph == graph), None)
        if chosen is None:
            continue
        flat, shapes = flats[chosen.id], measured[chosen.id].node_shapes
        others = [v.id for v in spec.variants if v.graph == graph and v.id != chosen.id]
        caption = f"Drawn for {chosen.id}" + (f"; the graph also gives {', '.join(others)}" if others else "")
        drawn = ArchitectureView(title=graph, caption=caption, text=view(flat, "", shapes).text)
        page.graphs.append(drawn)
        top_groups = [name for name in flat.aliases if "." not in name and name not in flat.blocks]
        for group in top_groups:
            drawn.groups.append(
                ArchitectureView(
                    title=f"{group} ({chosen.id})",
                    caption=f"The group {group} of {chosen.id}",
                    text=view(flat, group, shapes).text,
                )
            )
    done: set[str] = set()
    for variant in ranked:
        flat = flats[variant.id]
        instances: dict[str, list[str]] = {}
        for instance, definition in flat.blocks.items():
            instances.setdefault(definition, []).append(instance)
        for definition, names in instances.items():
            if definition in done:
                continue
            done.add(definition)
            instance = _typical_instance(flat, names)
            count = len(names)
            page.blocks.append(
                ArchitectureView(
                    title=definition,
                    caption=f"Drawn for {instance} of {variant.id}, one of its {count} instance"
                    + ("s" if count != 1 else ""),
                    text=view(flat, instance, measured[variant.id].node_shapes, collapse_groups=False).text,
                )
            )


def _typical_instance(flat: Any, names: list[str]) -> str:
    """The instance that shows most of its block (most kinds of node), the smallest of those."""

    def kinds(instance: str) -> tuple[int, int]:
        members = [n for n in flat.nodes if n.name.startswith(instance + ".")]
        shapes = {(re.sub(r"\d+", "", n.name[len(instance) :]), n.op) for n in members}
        return (-len(shapes), len(members))

    return min(names, key=kinds)


# --- rendering ------------------------------------------------------------------------------------


def _environment(sources: Path) -> Any:
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(sources / "templates")),
        autoescape=True,  # the pages are Markdown with HTML in them: spec text is escaped by default
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["md"] = lambda value: jinja2.utils.markupsafe.Markup(markdown_text(value))
    environment.filters["prose"] = lambda value: jinja2.utils.markupsafe.Markup(markdown_prose(value))
    environment.filters["code"] = lambda value: jinja2.utils.markupsafe.Markup(str(value).rstrip("\n"))
    environment.filters["fence"] = lambda value: jinja2.utils.markupsafe.Markup(_fence(str(value)))
    environment.filters["count"] = lambda value: count(value, space=" ")
    environment.filters["shape"] = _shape
    environment.filters["plain"] = plain
    environment.filters["delta"] = lambda c: "" if c.difference is None else f"{c.difference:+.2%}"
    environment.filters["measured"] = lambda c: "–" if c.measured is None else plain(_short(c.measured))
    environment.filters["symbol"] = lambda status: SYMBOL[status]
    environment.filters["json_string"] = lambda value: jinja2.utils.markupsafe.Markup(
        json.dumps(html.escape(str(value)), ensure_ascii=False)
    )
    environment.globals["topic_titles"] = TOPIC_TITLES
    return environment


def _short(value: Any) -> Any:
    """A measured number to six significant digits (the checks keep them all)."""
    return f"{value:g}" if isinstance(value, float) else value


def _shape(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{name}: {_shape(shape)}" for name, shape in value.items())
    return "×".join(str(dim) for dim in value)


def render_pages(data: SiteData, docs: Path, sources: Path, example: Path | None = None) -> list[Any]:
    """Write every Markdown page under ``docs``; returns the nav for mkdocs.yml."""
    from papers.reference import cli_reference, hook_reference

    environment = _environment(sources)

    def write(path: str, template: str, **context: Any) -> None:
        target = docs / path
        target.parent.mkdir(parents=True, exist_ok=True)
        text = environment.get_template(template).render(**context)
        target.write_text(text, encoding="utf-8")

    write("index.md", "index.md.j2", data=data)
    nav: list[Any] = [{"Home": "index.md"}]
    for topic, members in data.topics.items():
        charts = data.charts.get(topic, [])
        for _, name, svg in charts:
            (docs / "charts").mkdir(parents=True, exist_ok=True)
            (docs / "charts" / name).write_text(svg, encoding="utf-8")
        write(f"{topic}/index.md", "topic.md.j2", topic=topic, papers=members, charts=charts)
        own = [page.path for page in members if page.path.startswith(topic + "/")]
        nav.append({TOPIC_TITLES.get(topic, topic): [f"{topic}/index.md", *own]})
    for page in data.papers:
        write(page.path, "paper.md.j2", page=page, spec=page.spec)
    from papers.spec import Spec

    schema = json.dumps(Spec.model_json_schema(by_alias=True), indent=2, ensure_ascii=False)
    write("reference/schema.md", "schema.md.j2", schema=schema)
    write("reference/cli.md", "cli.md.j2", commands=cli_reference())
    write(
        "guides/plugins.md",
        "plugins.md.j2",
        hooks=hook_reference(),
        example=_example_files(example),
    )
    nav.append({"Reference": ["reference/cli.md", "reference/schema.md"]})
    nav.append({"Guides": ["guides/plugins.md"]})
    return nav


def _example_files(example: Path | None) -> list[tuple[str, str, str]]:
    """The example plugin package's files as (path, language, text), where the source tree has it."""
    if example is None or not example.is_dir():
        return []
    language = {".toml": "toml", ".py": "python", ".yaml": "yaml"}
    shown = []
    for path in sorted(example.rglob("*")):
        relative = path.relative_to(example)
        if (
            path.is_file()
            and path.suffix in language
            and not any(part.startswith(".") or part.endswith(".egg-info") for part in relative.parts)
            and "__pycache__" not in relative.parts
            and "build" not in relative.parts
        ):
            text = path.read_text(encoding="utf-8")
            shown.append((relative.as_posix(), language[path.suffix], text))
    # pyproject.toml first: it is what makes a package a plugin
    return sorted(shown, key=lambda item: (item[0] != "pyproject.toml", item[0]))


# --- the build ------------------------------------------------------------------------------------


class SiteError(PapersError):
    """The site cannot be built (a missing asset, mkdocs failed)."""


def _node_modules(sources: Path) -> Path:
    return Path(os.environ.get("PAPERS_SITE_NODE_MODULES") or sources / "node_modules")


def _vendored(sources: Path) -> dict[str, Path]:
    """The third-party files the site ships, each checked to be there (before anything is measured)."""
    modules = _node_modules(sources)
    found = {}
    for target, origin in ASSETS.items():
        path = modules / origin
        if not path.is_file():
            raise SiteError(
                f"{path} is missing: run `npm ci` in {sources} (or `make site-assets`) to install "
                "the site's JavaScript"
            )
        found[target] = path
    return found


def _copy_assets(sources: Path, docs: Path, vendored: dict[str, Path]) -> None:
    for target, path in vendored.items():
        destination = docs / target
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, destination)
    shutil.copytree(sources / "assets", docs / "assets", dirs_exist_ok=True)


def source_date_epoch(sources: Path) -> str:
    """``SOURCE_DATE_EPOCH``, else the time of the repository's last commit, else 1980-01-01."""
    if os.environ.get("SOURCE_DATE_EPOCH", "").isdigit():
        return os.environ["SOURCE_DATE_EPOCH"]
    try:
        done = subprocess.run(
            ["git", "-C", str(sources), "log", "-1", "--format=%ct"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if done.returncode == 0 and done.stdout.strip().isdigit():
            return done.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return str(DEFAULT_EPOCH)


def build_site(
    out: str | Path = "build",
    *,
    site_url: str = "http://127.0.0.1:8000/",
    example: Path | None = None,
    quiet: bool = False,
    results: str | Path | ResultsFile | None = None,
) -> Path:
    """Render the pages into ``out/docs`` and build the HTML into ``out/site``; returns ``out/site``."""
    sources = site_sources()
    out = Path(out).resolve()
    docs, html_dir = out / "docs", out / "site"
    if example is None:
        example = sources.parent / "tests" / "plugin_packages" / "example"
    vendored = _vendored(sources)
    if results is not None:
        from papers.results import ResultsFile, read_results

        if not isinstance(results, ResultsFile):
            results = read_results(results)  # a bad file is refused before anything is measured or written
    data = collect(results)
    if docs.exists():
        shutil.rmtree(docs)  # pages of papers no longer in the registry must go
    docs.mkdir(parents=True)
    _copy_assets(sources, docs, vendored)
    nav = render_pages(data, docs, sources, example)
    config = {
        "INHERIT": str(sources / "mkdocs.yml"),
        "site_url": site_url,
        "docs_dir": str(docs),
        "site_dir": str(html_dir),
        "nav": nav,
    }
    config_file = out / "mkdocs.yml"
    config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    environment = {
        **os.environ,
        "NO_MKDOCS_2_WARNING": "1",
        "SOURCE_DATE_EPOCH": source_date_epoch(sources),
    }
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--clean", "-f", str(config_file)]
    if quiet:
        command.append("--quiet")
    done = subprocess.run(command, env=environment, check=False)
    if done.returncode != 0:
        raise SiteError(f"mkdocs build --strict failed (exit {done.returncode}); its messages are above")
    return html_dir


def serve_site(directory: Path, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve a built site until interrupted."""
    import functools
    import http.server

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    with http.server.ThreadingHTTPServer((host, port), handler) as server:
        print(f"serving {directory} at http://{host}:{server.server_address[1]}/ (Ctrl-C stops)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()


__all__ = ["SiteData", "build_site", "collect", "markdown_text", "serve_site", "site_sources"]
