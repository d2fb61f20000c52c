"""The documentation site: Markdown pages rendered from the registry, then HTML by MkDocs Material.

Nothing on the site is written per paper. ``build_site`` reads every spec of the registry, measures
every variant (measurements come from the cache that ``papers check`` fills), checks the reported
results, draws the graphs (``papers.diagram``) and the charts (``papers.charts``), renders the jinja2
templates of ``papers_site`` (the repository's ``site/`` folder) into ``<out>/docs``, and runs
``mkdocs build --strict`` into ``<out>/site``.

Text from specs is untrusted: the templates autoescape HTML, the ``md`` filter also escapes what
Markdown would read as syntax, and the ``link`` filter links http(s) addresses only, percent-encoding
whatever could end a link's target. A previous build is replaced only by a finished one: the pages and
the HTML are built in a scratch folder inside ``<out>`` and renamed into place, under an exclusive lock
on its marker file ``.papers-site``; a folder holding anything else is refused unless forced. Two
builds of one tree give the same bytes: no dates but ``SOURCE_DATE_EPOCH`` (which MkDocs uses for the
sitemap), no random ids, sorted inputs.
"""

from __future__ import annotations

import contextlib
import html
import json
import math
import os
import re
import shutil
import string
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from papers.errors import PapersError, PluginError
from papers.files import write_atomic
from papers.plugins import describe
from papers.text import STATUS, count, plain

if TYPE_CHECKING:
    from collections.abc import Iterator

    from papers.results import ResultsFile

ASSETS = {
    # what the site ships -> where it comes from, under site/node_modules (installed by `npm ci`)
    "assets/vendor/mermaid.min.js": "mermaid/dist/mermaid.min.js",
    "assets/vendor/tablesort.min.js": "tablesort/dist/tablesort.min.js",
    "assets/vendor/tablesort.number.min.js": "tablesort/dist/sorts/tablesort.number.min.js",
}
THEME_FOLDER = ".theme"
"""Under docs/: Material's main.html, extended (``templates/mkdocs-main.html.j2``)."""
DEFAULT_EPOCH = 315532800
"""1980-01-01, the date reproducible builds use where neither SOURCE_DATE_EPOCH nor git gives one."""
TOPIC_TITLES = {
    "classification": "Image classification",
    "detection": "Object detection",
    "segmentation": "Semantic segmentation",
    "compression": "Model compression",
}


LOCAL_URL = "http://127.0.0.1:8000/"


def default_site_url() -> str:
    """The site's address for canonical links and the sitemap: the project's documentation or home
    page URL from its metadata (pyproject's ``[project.urls]``), else ``LOCAL_URL``."""
    from importlib.metadata import PackageNotFoundError, metadata

    try:
        urls = metadata("papers").get_all("Project-URL") or []
    except PackageNotFoundError:
        return LOCAL_URL
    found = {}
    for entry in urls:
        label, _, url = entry.partition(",")
        found[label.strip().lower()] = url.strip()
    for label in ("documentation", "docs", "homepage", "home"):
        if link_target(found.get(label, "")):
            return found[label].rstrip("/") + "/"
    return LOCAL_URL


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


# Characters a link target keeps as they are: letters, digits and the URL punctuation that Python-Markdown
# passes through unchanged. Everything else (a space, a quote, which starts a link title, a parenthesis
# or bracket, which ends the target, <, >, `, \, {, }, and any non-ASCII character) is percent-encoded.
_LINK_SAFE = frozenset(string.ascii_letters + string.digits + "-._~:/?#@!$&*+,;=%")
_WEB_ADDRESS = re.compile(r"https?://[A-Za-z0-9]")


def link_target(url: Any) -> str | None:
    """``url`` made safe as the target of a Markdown link, or ``None`` where it is not an http(s) address.

    Specs' addresses are validated (``papers.spec.WebAddress``, ``Doi``, ``ArxivId``); this holds even
    for one that was not: no scheme but http(s), and nothing in it can end the target or start syntax.
    """
    text = str(url)
    if not _WEB_ADDRESS.match(text):
        return None
    return "".join(
        char if char in _LINK_SAFE else "".join(f"%{byte:02X}" for byte in char.encode("utf-8"))
        for char in text
    )


def markdown_link(label: Any, url: Any) -> str:
    """``[label](url)`` with the label escaped as text and the target by :func:`link_target`; only the
    label, as text, where the address is not http(s)."""
    target = link_target(url)
    text = markdown_text(label)
    return f"[{text}]({target})" if target is not None else text


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
    features: list[str] = field(default_factory=list)
    """The graph's feature stages, for ``build_model(..., features=[...])``."""
    protocol: str | None = None
    """The test protocol of the variant's first reported accuracy (``single_crop``, ``ten_crop``, ...)."""
    task: Any = None
    """The graph's task layer (:class:`papers.spec.DenseDetection`, :class:`papers.spec.Segmentation`)."""
    snippet: str = ""
    """Python that runs the variant on an image, with its preprocessing, and extracts features."""
    base: str | None = None
    """A method variant's base: the variant its methods are applied to."""
    methods: list[tuple[str, str]] = field(default_factory=list)
    """A method variant's methods, each with its settings as plain text."""


@dataclass
class ArchitectureView:
    title: str
    caption: str
    text: str
    groups: list[ArchitectureView] = field(default_factory=list)
    """A graph's top-level groups, each drawn on its own."""


MARKS = {"pass": "✓", "fail": "✗", "not_measurable": "○", "inconsistent": "≠"}
"""The mark beside a variant in a results table, per check status (the legend says what each means)."""
DIFF_ROWS = 40
"""The most node rows a difference shows on a paper page; `papers diff` lists them all."""

MARK_TITLES = {
    "pass": "within the tolerance",
    "fail": "outside the tolerance",
    "not_measurable": "not measurable here",
    "inconsistent": "paper inconsistent",
}
_UNITS = {"percent": "%", "thousand": "k", "million": "M", "billion": "G", "count": "", "shape": ""}


@dataclass
class ResultRow:
    """One reported result with its check, as a results table shows it."""

    check: Any
    mark: str
    metric: str
    """The metric in words, with its scope where it is not the whole model: ``macs of inception3a``."""
    data: str
    """Dataset, split and protocol: ``CIFAR-10 test, single crop``."""
    conditions: str
    reported: str
    """The number as the paper prints it, with its unit: ``7.40%``."""
    measured: str
    tolerance: str
    """``±0.005``, or with ``(spec)`` where the spec widens or narrows the default."""
    notes: list[int] = field(default_factory=list)
    """Footnote numbers: the result's note, the paper's contradiction, what the check adds."""


@dataclass
class Erratum:
    """A result the paper's own numbers contradict (``inconsistent:``), for the errata page."""

    page: Any
    row: ResultRow
    reason: str


def printed_decimals(results: list[Any]) -> dict[int, int]:
    """Decimals each numeric result is printed with, by position: a column of a paper's table shares
    its precision, so ``7.40`` (a float 7.4 once read) shows as printed beside ``24.19``.

    A tolerance of half a unit of a decimal (``0.005``) fixes it; otherwise the most decimals among
    the results of the same source, metric, unit and dataset.
    """

    def own(value: float) -> int:
        text = repr(float(value))
        return 0 if text.endswith(".0") or "e" in text else len(text.partition(".")[2])

    group: dict[tuple[Any, ...], int] = {}
    for result in results:
        if isinstance(result.value, int | float):
            key = (result.source, result.metric, result.unit, result.dataset)
            group[key] = max(group.get(key, 0), own(result.value))
    decimals = {}
    for index, result in enumerate(results):
        if not isinstance(result.value, int | float):
            continue
        fixed = _half_unit_decimals(result.tolerance)
        key = (result.source, result.metric, result.unit, result.dataset)
        decimals[index] = max(fixed, group[key]) if fixed is not None else group[key]
    return decimals


def _half_unit_decimals(tolerance: float | None) -> int | None:
    for places in range(1, 7):
        if tolerance is not None and math.isclose(tolerance, 0.5 * 10.0**-places, rel_tol=1e-9):
            return places
    return None


def _number(value: float, decimals: int) -> str:
    return f"{value:,.{decimals}f}"


def _with_unit(text: str, unit: str) -> str:
    suffix = _UNITS.get(unit, f" {unit}")
    return text + suffix if suffix in ("", "%") else f"{text} {suffix}"


def _metric_words(check: Any) -> str:
    words = check.metric.replace("top1", "top-1").replace("top5", "top-5").replace("_", " ")
    words = {"macs": "multiply-adds", "params": "parameters", "output shape": "output shape"}.get(
        words, words
    )
    if check.scope == "backbone":
        return f"{words} without the classifier"
    if check.scope.startswith("node:"):
        return f"{words} of {check.scope[5:]}"
    return words


def _conditions(conditions: dict[str, Any]) -> str:
    return ", ".join(
        key.replace("_", " ") + ("" if value in (None, True) else f" {plain(value)}")
        for key, value in conditions.items()
    )


def result_rows(spec: Any, checks: list[Any], notes: list[str]) -> list[ResultRow]:
    """A results table's rows, each check beside the result it checks (``checks`` are in the order of
    ``spec.results``); footnote texts are appended to ``notes`` (one number per distinct text)."""
    paired = len(checks) == len(spec.results)  # not so with training checks (``papers check --run``)
    results = list(spec.results) if paired else [None] * len(checks)
    decimals = printed_decimals(list(spec.results)) if paired else {}
    rows = []
    for index, (check, result) in enumerate(zip(checks, results, strict=True)):
        places = decimals.get(index)
        if isinstance(check.reported, list):
            reported = _shape(check.reported)
            measured = "–" if check.measured is None else _shape(check.measured)
        else:
            places = places if places is not None else 2
            reported = _with_unit(_number(check.reported, places), check.unit)
            measured = (
                "–" if check.measured is None else _with_unit(_number(check.measured, places + 2), check.unit)
            )
        texts = []
        if result is not None and result.note:
            texts.append(" ".join(result.note.split()))
        if check.reason and check.status != "not_measurable":
            texts.append(("Paper inconsistent: " if check.status == "inconsistent" else "") + check.reason)
        if check.proxy:
            texts.append(f"A proxy: measured on {check.proxy}.")
        custom = result is not None and result.tolerance is not None
        if custom and _half_unit_decimals(result.tolerance) is None and not isinstance(check.reported, list):
            texts.append(
                f"The spec sets the tolerance to ±{_with_unit(plain(result.tolerance), check.unit)}, "
                "not half a unit of the last digit printed."
            )
        numbers = []
        for text in texts:
            if text not in notes:
                notes.append(text)
            numbers.append(notes.index(text) + 1)
        tolerance = "" if isinstance(check.reported, list) else f"±{check.tolerance:g}"
        if custom and tolerance and _half_unit_decimals(result.tolerance) is None:
            tolerance += " (spec)"
        data = ", ".join(
            part
            for part in (
                " ".join(p for p in (check.dataset, result.split if result else None) if p),
                (check.protocol or "").replace("_", " "),
            )
            if part
        )
        rows.append(
            ResultRow(
                check=check,
                mark=MARKS.get(check.status, "?"),
                metric=_metric_words(check),
                data=data,
                conditions=_conditions(result.conditions) if result is not None else "",
                reported=reported,
                measured=measured,
                tolerance=tolerance,
                notes=numbers,
            )
        )
    return rows


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
    rows: list[ResultRow] = field(default_factory=list)
    """The reported-vs-measured table."""
    notes: list[str] = field(default_factory=list)
    """Its numbered footnotes."""
    diffs: list[Any] = field(default_factory=list)
    """``papers diff`` of each library variant against the variant it is built from
    (:func:`papers.diff.library_pairs`)."""
    sections: list[tuple[str, str]] = field(default_factory=list)
    """Sections the paper's plugin module adds after its summary (:func:`page_sections`)."""


@dataclass
class SiteData:
    papers: list[PaperPage]
    topics: dict[str, list[PaperPage]]
    charts: dict[str, list[tuple[str, str, str]]]
    """Topic -> (title, file name, SVG text)."""
    errata: list[Erratum] = field(default_factory=list)
    """Every result marked inconsistent with its paper's own numbers, across the registry."""


def collect(results: str | Path | ResultsFile | None = None) -> SiteData:
    """Everything the pages show, from the registry: specs, measurements, checks (with the accuracies
    of a results file from ``papers eval``, where given), diagrams."""
    from papers import api
    from papers.cite import bibtex, reference
    from papers.diff import diff, library_pairs
    from papers.registry import get_registry

    entries = get_registry().list()
    api.measure_many([v.id for entry in entries for v in entry.spec.variants])  # in parallel, into the cache
    specs = {entry.spec.id: entry.spec for entry in entries}
    pages = []
    for entry in entries:
        spec = entry.spec
        measured = {}
        flats = {}
        for variant in spec.variants:
            flats[variant.id] = api.expand_variant(variant.id)
            measured[variant.id] = api.measure(variant.id)  # cached by papers.measure
        checks = api.check(spec.id, results=results) if spec.variants else []
        counts = {status: sum(c.status == status for c in checks) for status in STATUS}
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
            variants=[_variant_page(v, measured[v.id], flats[v.id], spec) for v in spec.variants],
            checks=checks,
            counts=counts,
        )
        page.rows = result_rows(spec, checks, page.notes)
        _architecture(page, spec, flats, measured)
        used = {  # a paper of another topic (a detector's backbone) is not drawn from
            paper: specs[paper]
            for paper in spec.uses
            if paper in specs and set(specs[paper].topics) & set(spec.topics)
        }
        page.diffs = [diff(a, b) for a, b in library_pairs(spec, used)]
        page.sections = page_sections(entry)
        pages.append(page)
    topics: dict[str, list[PaperPage]] = {}
    for page in pages:
        for topic in page.spec.topics:
            topics.setdefault(topic, []).append(page)
    from papers.charts import topic_charts

    charts = {topic: topic_charts(topic, members) for topic, members in topics.items()}
    errata = [
        Erratum(page=page, row=row, reason=row.check.reason)
        for page in pages
        for row in page.rows
        if row.check.status == "inconsistent"
    ]
    return SiteData(papers=pages, topics=dict(sorted(topics.items())), charts=charts, errata=errata)


def page_sections(entry: Any) -> list[tuple[str, str]]:
    """What a paper's plugin module adds to its page: ``page_sections(registry)`` of the module, where it
    has one, gives (title, Markdown) pairs made from the registry as it is when the site is built (a
    survey's taxonomy linked to the papers that implement it). The Markdown is the plugin's code's, not
    a spec's text: it goes on the page as written, and escapes what it quotes."""
    import importlib

    from papers.registry import get_registry

    registry = get_registry()
    info = registry.manager.plugins.get(entry.plugin)
    if info is None or not info.module:
        return []
    make = getattr(importlib.import_module(info.module), "page_sections", None)
    if make is None:
        return []
    try:
        made = [(str(title), str(text)) for title, text in make(registry)]
    except Exception as exc:  # a plugin's code: what it raises is its failure, on one line
        raise PluginError(f"plugin {entry.plugin}: page_sections failed: {describe(exc)}") from exc
    return made


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


def _variant_page(variant: Any, measurement: Any, flat: Any = None, spec: Any = None) -> VariantPage:
    page = VariantPage(
        id=variant.id,
        name=variant.name,
        graph=variant.graph,
        origin=variant.origin,
        origin_note=variant.origin_note,
        reference=variant.reference,
        args=dict(variant.args),
        params=measurement.params,
        macs=measurement.macs,
        inputs={
            name: shape if name in getattr(flat, "unbatched", ()) else shape[1:]  # rois: [K, 5] whole
            for name, shape in measurement.input_shapes.items()
        },
        output=measurement.output_shapes,
        library=variant.reference.partition(":")[0] if variant.reference else None,
        library_model=variant.reference.partition(":")[2] if variant.reference else None,
        features=list(getattr(flat, "features", {}) or {}),
        protocol=next(
            (
                r.protocol
                for r in (spec.results if spec is not None else [])
                if r.variant == variant.id and getattr(r, "protocol", None)
            ),
            None,
        ),
    )
    graph = spec.graphs.get(variant.graph) if spec is not None and variant.graph else None
    page.task = getattr(graph, "detection", None) or getattr(graph, "segmentation", None)
    page.base = variant.base
    page.methods = [(step.name, plain(step.settings)) for step in variant.methods]
    page.snippet = usage_snippet(page)
    return page


_TRANSFORMS = {
    "NoneType": "the weights' resize, centre crop, mean and std",
    "DenseDetection": "to floats in [0, 1]",
    "RegionDetection": "to floats in [0, 1]",
    "SingleShotDetection": "to floats in [0, 1]",
    "Segmentation": "the weights' resize, mean and std",
}
"""What a torchvision weights' ``transforms()`` does, by the variant's task layer."""
_IMAGENET = ("[0.485, 0.456, 0.406]", "[0.229, 0.224, 0.225]")


def usage_snippet(variant: VariantPage) -> str:
    """Python that runs ``variant`` on one image with the preprocessing it expects (the library
    weights' own transforms where it has weights, else resize, centre crop and normalisation at its
    input size), then extracts its last feature stages with ``features=``."""
    from papers.evaluate import default_resize

    if variant.base is not None:
        return _compressed_snippet(variant)
    shapes = list(variant.inputs.values())
    shape = shapes[0] if len(shapes) == 1 else None
    lines = ["import torch", "import papers"]
    if variant.library == "torchvision":
        lines[1:1] = ["import torchvision"]
    elif variant.library == "timm":
        lines[1:1] = ["import timm"]
    elif shape is not None and len(shape) == 3:
        return _trained_snippet(variant, shape, default_resize)
    lines.append("")
    lines.append(f'model = papers.build_model("{variant.id}").eval()')
    if variant.library == "torchvision":
        lines += [
            f'weights = torchvision.models.get_model_weights("{variant.library_model}").DEFAULT',
            "model.load_state_dict(weights.get_state_dict())",
            f"preprocess = weights.transforms()  # {_TRANSFORMS[type(variant.task).__name__]}",
        ]
    elif variant.library == "timm":
        lines += [
            f'library = timm.create_model("{variant.library_model}", pretrained=True)',
            "model.load_state_dict(library.state_dict())",
            "config = timm.data.resolve_data_config({}, model=library)  # input size, mean, std, crop",
            "preprocess = timm.data.create_transform(**config)",
        ]
    else:
        inputs = ", ".join(f"{name}: {_shape(s)}" for name, s in variant.inputs.items())
        lines.append(f"# inputs: {inputs} (without the batch)")
        return "\n".join(lines) + "\n"
    if variant.task is not None:
        return "\n".join(lines + _task_lines(variant)) + "\n"
    lines += [
        "",
        "batch = preprocess(image).unsqueeze(0)  # image: a PIL image or a uint8 tensor",
        "with torch.no_grad():",
        "    logits = model(batch)",
    ]
    return "\n".join(lines + _features_lines(variant, from_run=False)) + "\n"


def _compressed_snippet(variant: VariantPage) -> str:
    """A method variant: its base's weights compressed with ``papers compress``, the file read back."""
    lines = [
        "import papers",
        "",
        f"# papers train {variant.base} --data DIR --out run  (or weights of your own)",
        f"# papers compress {variant.id} --weights run/model.safetensors --data DIR --out out",
        "# out/report.json: bytes, top-1 before and after, and the speed measured on this machine",
        'model = papers.load_compressed("out/model.safetensors").eval()  # the decoded weights',
    ]
    return "\n".join(lines) + "\n"


def _task_lines(variant: VariantPage) -> list[str]:
    """A detector or a segmenter run on one image, as its task layer takes it."""
    from papers.spec import DenseDetection, RegionDetection

    if isinstance(variant.task, DenseDetection | RegionDetection):
        t = variant.task.transform
        return [
            "",
            f"# the detector resizes (shorter side {t.min_size}, longer at most {t.max_size}) and normalises",
            f"# (mean {t.image_mean}, std {t.image_std}) each image itself",
            "images = [preprocess(image)]  # image: a PIL image or a uint8 tensor",
            "with torch.no_grad():",
            "    detections = model(images)  # per image: boxes, labels and scores",
        ]
    return [
        "",
        "batch = preprocess(image).unsqueeze(0)  # image: a PIL image or a uint8 tensor",
        "with torch.no_grad():",
        '    scores = model(batch)["out"]  # class scores per pixel, at the input\'s size',
    ]


def _features_lines(variant: VariantPage, *, from_run: bool) -> list[str]:
    """``features=``: the variant's last two feature stages, with the model's weights (and the run's
    build options, ``from_run``)."""
    if not variant.features:
        return []
    stages = variant.features[-2:]
    build = f'backbone = papers.build_model("{variant.id}", features={stages!r}'.replace("'", '"')
    return [
        "",
        build + (', **record["options"])' if from_run else ")"),
        "backbone.load_state_dict(model.state_dict(), strict=False)",
        "with torch.no_grad():",
        "    maps = backbone(batch)  # " + ", ".join(f'maps["{s}"]' for s in stages) + ": feature maps",
    ]


_NORMALIZE = '    *([T.Normalize(norm["mean"], norm["std"])] if norm else []),'


def _trained_snippet(variant: VariantPage, shape: list[int], default_resize: Any) -> str:
    """A variant without library weights: trained with ``papers train``, its run folder read back
    (build options, weights, the normalisation training used) and its paper's test protocol applied
    as ``papers eval`` does (the shorter side resized, one centre crop, or ten crops averaged)."""
    channels, height, width = shape
    size = height if height == width else [height, width]
    resize = default_resize((height, width))
    ten_crop = variant.protocol == "ten_crop"
    single = (None, "single_crop", "center_crop")
    protocol = (
        "ten crops, logits averaged"
        if ten_crop
        else "one centre crop"
        if variant.protocol in single
        else f"one centre crop (the paper's {variant.protocol} protocol, not run here)"
    )
    lines = [
        "import json",
        "from pathlib import Path",
        "",
        "import torch",
        "from safetensors.torch import load_file",
        "from torchvision.transforms import v2 as T",
        "import papers",
        "",
        f'run = Path("run")  # papers train {variant.id} --data DIR --out run',
        'record = json.loads((run / "recipe.json").read_text())',
        f'model = papers.build_model("{variant.id}", **record["options"]).eval()',
        'model.load_state_dict(load_file(run / "model.safetensors"))',
        'norm = record["normalize"]  # the per-channel mean and std training used (None: none)',
    ]
    if variant.task is not None:  # any size: no resize or crop; a detector normalises itself
        from papers.spec import DenseDetection, RegionDetection

        lines += [
            "preprocess = T.Compose([",
            "    T.ToImage(),",
            "    T.ToDtype(torch.float32, scale=True),",
            *([] if isinstance(variant.task, DenseDetection | RegionDetection) else [_NORMALIZE]),
            "])",
        ]
        return "\n".join(lines + _task_lines(variant)) + "\n"
    lines += [
        f"# as `papers eval --protocol {'ten_crop' if ten_crop else 'single_crop'}` tests it: shorter side to"
        f" {resize} px, {protocol}",
        "preprocess = T.Compose([",
        *(["    T.Grayscale(),"] if channels == 1 else []),
        "    T.ToImage(),",
        "    T.ToDtype(torch.float32, scale=True),",
        f"    T.Resize({resize}, antialias=True),",
        f"    T.TenCrop({size})," if ten_crop else f"    T.CenterCrop({size}),",
        _NORMALIZE,
        "])",
        "",
    ]
    if ten_crop:
        lines += [
            "batch = torch.stack(preprocess(image))  # image: a PIL image or a uint8 tensor; ten crops",
            "with torch.no_grad():",
            "    logits = model(batch).mean(0, keepdim=True)",
        ]
    else:
        lines += [
            "batch = preprocess(image).unsqueeze(0)  # image: a PIL image or a uint8 tensor",
            "with torch.no_grad():",
            "    logits = model(batch)",
        ]
    return "\n".join(lines + _features_lines(variant, from_run=True)) + "\n"


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
    """The instance that shows most of its block (most kinds of node), a downsampling one (a stride
    above 1, where variants such as ResNet v1 and v1.5 differ) before others, the smallest of those."""

    def kinds(instance: str) -> tuple[int, int, int]:
        members = [n for n in flat.nodes if n.name.startswith(instance + ".")]
        shapes = {(re.sub(r"\d+", "", n.name[len(instance) :]), n.op) for n in members}
        strided = any(n.args.get("stride") not in (None, 1, [1, 1], (1, 1)) for n in members)
        return (-len(shapes), -strided, len(members))

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
    environment.filters["link"] = lambda url, label: jinja2.utils.markupsafe.Markup(markdown_link(label, url))
    environment.filters["prose"] = lambda value: jinja2.utils.markupsafe.Markup(markdown_prose(value))
    environment.filters["code"] = lambda value: jinja2.utils.markupsafe.Markup(str(value).rstrip("\n"))
    environment.filters["fence"] = lambda value: jinja2.utils.markupsafe.Markup(_fence(str(value)))
    environment.filters["count"] = lambda value: count(value, space=" ")
    # a long node name (roi_heads.box_predictor.cls_score) may break after its dots, not overflow its column
    environment.filters["break_at_dots"] = lambda value: jinja2.utils.markupsafe.Markup(
        str(value).replace("\\.", "\\.<wbr>")
    )
    environment.filters["signed_count"] = lambda value: (
        ("+" if value > 0 else "−" if value < 0 else "") + (count(abs(value), space=" "))
    )
    environment.filters["shape"] = _shape
    environment.filters["plain"] = plain
    environment.filters["delta"] = lambda c: "" if c.difference is None else f"{c.difference:+.2%}"
    environment.filters["measured"] = lambda c: "–" if c.measured is None else plain(_short(c.measured))
    environment.filters["symbol"] = lambda status: STATUS[status]
    environment.filters["json_string"] = lambda value: jinja2.utils.markupsafe.Markup(
        json.dumps(html.escape(str(value)), ensure_ascii=False)
    )
    environment.filters["rst"] = lambda value: jinja2.utils.markupsafe.Markup(rst_prose(value))
    environment.filters["usage"] = lambda help_text: help_text.split("\n\n", 1)[0].removeprefix("Usage: ")
    environment.filters["description"] = _help_paragraphs
    environment.globals["topic_titles"] = TOPIC_TITLES
    environment.globals["mark_titles"] = MARK_TITLES
    environment.globals["diff_rows"] = DIFF_ROWS
    return environment


def rst_prose(text: Any) -> str:
    """A docstring's reStructuredText (``code``, :class:`x`) as :func:`markdown_prose`, paragraph by
    paragraph."""
    plain_text = re.sub(r":[a-z]+:`~?([^`]+)`", r"`\1`", str(text))
    plain_text = re.sub(r"``([^`]+)``", r"`\1`", plain_text)
    paragraphs = [p for p in re.split(r"\n\s*\n", plain_text) if p.strip()]
    return "\n\n".join(markdown_prose(paragraph) for paragraph in paragraphs)


def _help_paragraphs(help_text: str) -> list[str]:
    """The paragraphs of a command's ``--help`` between its usage line and its options, each on one
    line (the options are the reference's table)."""
    body = help_text.split("\n\n", 1)[1] if "\n\n" in help_text else ""
    body = re.split(r"^(?:Options|Commands):$", body, maxsplit=1, flags=re.M)[0]
    return [" ".join(paragraph.split()) for paragraph in body.split("\n\n") if paragraph.strip()]


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

    readme = sources.parent / "README.md"  # the source tree's; an installed package has none
    readme_text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    training = readme_section(readme_text, "Training and evaluation")
    write("index.md", "index.md.j2", data=data, has_training=bool(training))
    nav: list[Any] = [{"Home": "index.md"}]
    for topic, members in data.topics.items():
        charts = data.charts.get(topic, [])
        for _, name, svg in charts:
            (docs / "charts").mkdir(parents=True, exist_ok=True)
            (docs / "charts" / name).write_text(svg, encoding="utf-8")
        table = variant_table(members)
        (docs / topic).mkdir(parents=True, exist_ok=True)
        (docs / topic / "variants.json").write_text(
            json.dumps(table, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        (docs / topic / "variants.csv").write_text(_csv(table), encoding="utf-8")
        write(f"{topic}/index.md", "topic.md.j2", topic=topic, papers=members, charts=charts, table=table)
        own = [page.path for page in members if page.path.startswith(topic + "/")]
        nav.append({TOPIC_TITLES.get(topic, topic): [f"{topic}/index.md", *own]})
    for page in data.papers:
        write(page.path, "paper.md.j2", page=page, spec=page.spec)
    write("errata.md", "errata.md.j2", errata=data.errata)
    nav.append({"Errata": "errata.md"})
    write("lineage.md", "lineage.md.j2", lineage=_lineage(data))
    from papers.spec import Spec

    schema = Spec.model_json_schema(by_alias=True)
    (docs / "reference").mkdir(parents=True, exist_ok=True)
    schema_text = json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
    (docs / "reference" / "spec.schema.json").write_text(schema_text, encoding="utf-8")
    write("reference/schema.md", "schema.md.j2", models=schema_tables(schema))
    write("reference/cli.md", "cli.md.j2", commands=cli_reference())
    write("reference/python.md", "python.md.j2", entries=api_reference())
    write(
        "guides/plugins.md",
        "plugins.md.j2",
        hooks=hook_reference(),
        example=_example_files(example),
    )
    nav.append({"Lineage": "lineage.md"})
    nav.append({"Reference": ["reference/cli.md", "reference/python.md", "reference/schema.md"]})
    write(
        "guides/getting-started.md",
        "getting-started.md.j2",
        tour=readme_section(readme_text, "A short tour"),
        training=bool(training),
    )
    guides = ["guides/getting-started.md"]
    if training:
        write("guides/training.md", "training.md.j2", body=training)
        guides.append("guides/training.md")
    nav.append({"Guides": [*guides, "guides/plugins.md"]})
    return nav


_PREFERRED_PROTOCOLS = ("single_crop", "center_crop", "single_scale")


def variant_table(pages: list[PaperPage]) -> list[dict[str, Any]]:
    """Every variant of ``pages`` as a row (timm's results CSV, torchvision's table): measured
    parameters and multiply-adds, input size, the paper's top-1 and top-5 error for one single model
    under one protocol (single crop where reported), and the library weights that load into it."""
    rows = []
    for page in pages:
        for variant in page.variants:
            top1 = _best_error(page.spec, variant.id, ("top1_error", "top1_accuracy", "error", "accuracy"))
            top5 = None
            if top1 is not None:
                top5 = _best_error(page.spec, variant.id, ("top5_error", "top5_accuracy"), (top1[1], top1[2]))
            rows.append(
                {
                    "paper": page.spec.id,
                    "variant": variant.id,
                    "name": variant.name,
                    "params": variant.params,
                    "macs": variant.macs,
                    "input": _shape(next(iter(variant.inputs.values())))
                    if len(variant.inputs) == 1
                    else _shape(variant.inputs),
                    "top1_error": top1[0] if top1 else None,
                    "top5_error": top5[0] if top5 else None,
                    "dataset": top1[1] if top1 else None,
                    "protocol": top1[2] if top1 else None,
                    "weights": variant.reference,
                }
            )
    return rows


def _best_error(
    spec: Any, variant: str, metrics: tuple[str, ...], where: tuple[Any, Any] | None = None
) -> tuple[float, str | None, str | None] | None:
    """The lowest error a single model of ``variant`` reports (100 − accuracy for an accuracy), under
    the most preferred protocol it reports, or under ``where`` (dataset, protocol)."""
    from papers.charts import single_model

    found = []
    for result in spec.results:
        if result.variant != variant or result.metric not in metrics or not single_model(result):
            continue
        if result.split not in (None, "val", "test") or not isinstance(result.value, int | float):
            continue
        if where is not None and (result.dataset, result.protocol) != where:
            continue
        error = result.value if "error" in result.metric else 100.0 - result.value
        preferred = result.protocol in _PREFERRED_PROTOCOLS
        rank = _PREFERRED_PROTOCOLS.index(result.protocol) if preferred else len(_PREFERRED_PROTOCOLS)
        found.append((rank, round(error, 3), result.dataset, result.protocol))
    if not found:
        return None
    _, error, dataset, protocol = min(found, key=lambda item: (item[0], item[1], item[2] or ""))
    return error, dataset, protocol


def _csv(rows: list[dict[str, Any]]) -> str:
    import csv
    import io

    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    return buffer.getvalue()


@dataclass
class ApiEntry:
    name: str
    signature: str
    """``build_model(variant, **options)``, or ``class SpecError(PapersError)``."""
    doc: str


def api_reference() -> list[ApiEntry]:
    """What ``import papers`` offers (``papers.__all__``): functions first, then the errors, each with
    its signature and docstring."""
    import inspect

    import papers

    entries = []
    for name in papers.__all__:
        value = getattr(papers, name)
        if inspect.isclass(value):
            bases = ", ".join(base.__name__ for base in value.__bases__ if base is not object)
            signature = f"class {name}({bases})" if bases else f"class {name}"
        else:
            try:
                signature = name + _signature(inspect.signature(value))
            except (TypeError, ValueError):
                signature = name
        entries.append(ApiEntry(name=name, signature=signature, doc=inspect.getdoc(value) or ""))
    return sorted(entries, key=lambda entry: (entry.signature.startswith("class "), entry.name))


def _signature(signature: Any) -> str:
    """A signature as written in the source: annotations as their text (they are strings under
    ``from __future__ import annotations``), defaults as Python literals."""
    import inspect

    parts, star = [], False
    for parameter in signature.parameters.values():
        if parameter.kind is parameter.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        if parameter.kind is parameter.VAR_POSITIONAL:
            star = True
        prefix = {parameter.VAR_POSITIONAL: "*", parameter.VAR_KEYWORD: "**"}.get(parameter.kind, "")
        text = prefix + parameter.name
        if parameter.annotation is not inspect.Parameter.empty:
            annotation = parameter.annotation
            text += f": {annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)}"
        if parameter.default is not inspect.Parameter.empty:
            text += f" = {parameter.default!r}"
        parts.append(text)
    returned = signature.return_annotation
    arrow = "" if returned is inspect.Signature.empty else f" -> {returned}"
    return f"({', '.join(parts)}){arrow}"


def readme_section(text: str, title: str) -> str:
    """The Markdown under the README's ``## title`` up to its next ``##`` heading ("" where none)."""
    lines = text.splitlines()
    if f"## {title}" not in lines:
        return ""
    start = lines.index(f"## {title}") + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "\n".join(lines[start:end]).strip() + "\n"


@dataclass
class SchemaField:
    name: str
    type: str
    required: bool
    default: str
    description: str


def schema_tables(schema: dict[str, Any]) -> list[tuple[str, str, list[SchemaField]]]:
    """(model, description, fields) for the spec and each model it refers to, the spec first."""
    definitions = schema.get("$defs", {})
    models = [("Spec", schema), *sorted((n, d) for n, d in definitions.items() if "properties" in d)]
    tables = []
    for name, definition in models:
        required = set(definition.get("required", []))
        fields = [
            SchemaField(
                name=key,
                type=_schema_type(value),
                required=key in required,
                default="" if "default" not in value else json.dumps(value["default"], ensure_ascii=False),
                description=" ".join(str(value.get("description", "")).split()),
            )
            for key, value in definition["properties"].items()
        ]
        tables.append((name, " ".join(str(definition.get("description", "")).split()), fields))
    return tables


def _schema_type(value: dict[str, Any]) -> str:
    """A JSON Schema type in a few words: ``Result[]``, ``"model" | "node"``, ``number ≥ 0 | null``."""
    if "$ref" in value:
        return value["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in value or "oneOf" in value:
        options = value.get("anyOf", value.get("oneOf", []))
        return " | ".join(dict.fromkeys(_schema_type(option) for option in options))
    if "enum" in value:
        shown = [json.dumps(v, ensure_ascii=False) for v in value["enum"]]
        return " | ".join(shown[:8]) + (f" | … ({len(shown)} in all)" if len(shown) > 8 else "")
    if "const" in value:
        return json.dumps(value["const"], ensure_ascii=False)
    kind = str(value.get("type", "any"))
    if kind == "array":
        return f"{_schema_type(value.get('items', {}))}[]"
    extra = value.get("additionalProperties")
    if kind == "object" and isinstance(extra, dict):
        return f"{{name: {_schema_type(extra)}}}"
    signs = (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<"))
    bounds = [f"{sign} {value[key]:g}" for key, sign in signs if key in value]
    return " ".join([kind, *bounds])


def _lineage(data: SiteData) -> Any:
    """The lineage page's content: the registry's family tree (``papers.lineage``), linked to the pages."""
    from papers.lineage import lineage, lineage_page

    paths = {page.id: page.path for page in data.papers}
    return lineage_page([page.spec for page in data.papers], paths, lineage())


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


# --- the output folder ----------------------------------------------------------------------------

MARKER = ".papers-site"
"""The file that marks a folder as a site build (which the next build may replace) and that a build
holds an exclusive ``flock`` on while it writes, so that a second build of the folder refuses."""
_MARKER_TEXT = (
    b"Written by `papers site build`: docs/, site/ and mkdocs.yml are replaced by the next build.\n"
)
_BUILT = frozenset({"docs", "site", "mkdocs.yml"})
_SCRATCH = MARKER + ".tmp-"
"""Prefix of the folder a build renders into, beside docs/ and site/, before renaming them into place."""


def _refuse(out: Path | str, message: str) -> SiteError:
    return SiteError(message, file=str(out))


def check_output(out: Path, *, force: bool = False, shown: str | None = None) -> None:
    """Refuse, before anything is written, an output path that is a file (or lies under one), or a
    folder holding anything but a previous site build (unless ``force``). ``out`` is an absolute
    path; errors name it as ``shown``, as the user wrote it."""
    name = shown or str(out)
    existing = out
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        if existing == out:
            raise _refuse(name, "is a file, not a folder; --out names the folder for docs/ and site/")
        raise _refuse(name, f"cannot make this folder: {existing} is a file")
    if existing != out or force:
        return
    foreign = _foreign_entries(out, name)
    if foreign:
        listed = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise _refuse(
            name,
            f"is not empty and not a previous site build (it holds {listed}); name another folder, "
            "or pass --force to replace its docs/, site/ and mkdocs.yml",
        )


def _foreign_entries(out: Path, shown: str) -> list[str]:
    """What ``out`` holds besides a site build: every entry where it is no site build."""
    try:
        entries = sorted(os.listdir(out))
    except OSError as error:
        raise _refuse(shown, f"cannot read the folder: {error.strerror or error}") from None
    ours = [name for name in entries if name != MARKER and not name.startswith(_SCRATCH)]
    if MARKER in entries or (set(ours) <= _BUILT and _previous_config(out)):
        return [name for name in ours if name not in _BUILT]
    return ours


def _previous_config(out: Path) -> bool:
    """Whether ``out/mkdocs.yml`` is the one a build before the marker file existed wrote there."""
    try:
        config = json.loads((out / "mkdocs.yml").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "INHERIT" in config and config.get("docs_dir") == str(out / "docs")


@contextlib.contextmanager
def _locked(out: Path, name: str) -> Iterator[bool]:
    """Hold an exclusive lock on ``out``'s marker file; refuse if another build holds it. Yields whether
    the marker is new (and written now)."""
    try:
        import fcntl
    except ImportError:  # no flock on this platform: builds of one folder are not guarded
        fcntl = None  # type: ignore[assignment]
    marker = out / MARKER
    for _ in range(3):
        try:
            handle = os.open(marker, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as error:
            raise _refuse(name, f"cannot write into the folder: {error.strerror or error}") from None
        try:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # a failed build removes the marker it made: make sure this is still the marker
            if os.path.samestat(os.fstat(handle), os.stat(marker)):
                break
        except BlockingIOError:
            os.close(handle)
            raise _refuse(
                name,
                "another `papers site build` is writing into this folder; run again when it has finished",
            ) from None
        except FileNotFoundError:
            pass
        except OSError as error:
            os.close(handle)
            raise _refuse(name, f"cannot lock the folder: {error.strerror or error}") from None
        os.close(handle)
    else:
        raise _refuse(name, "the folder keeps changing under this build; run it again")
    try:
        new = os.fstat(handle).st_size == 0
        if new:
            os.write(handle, _MARKER_TEXT)
        yield new
    finally:
        os.close(handle)


def _missing_ancestor(out: Path) -> Path | None:
    """The outermost folder of ``out`` (itself included) that does not exist yet, if any."""
    missing = None
    for folder in (out, *out.parents):
        if os.path.lexists(folder):
            break
        missing = folder
    return missing


def _remove_made(out: Path, made: Path) -> None:
    """Remove the folders a failed build made, from ``out`` up to ``made``, as long as they are empty."""
    for folder in (out, *out.parents):
        try:
            folder.rmdir()
        except OSError:
            return
        if folder == made:
            return


def _swap_in(out: Path, scratch: Path) -> None:
    """Rename the new docs/ and site/ into place; the previous ones go into ``scratch``, removed next."""
    previous = scratch / "previous"
    previous.mkdir()
    for name in ("docs", "site"):
        if os.path.lexists(out / name):
            os.replace(out / name, previous / name)
        os.replace(scratch / name, out / name)


def build_site(
    out: str | Path = "build",
    *,
    site_url: str | None = None,
    example: Path | None = None,
    quiet: bool = False,
    results: str | Path | ResultsFile | None = None,
    force: bool = False,
) -> Path:
    """Render the pages into ``out/docs`` and build the HTML into ``out/site``; returns ``out/site``.

    Both are built in a scratch folder inside ``out`` and renamed into place at the end, so a failed
    or interrupted build leaves the previous one as it was. ``out`` must be a folder that is empty, new,
    or holds a previous build (``force`` replaces docs/, site/ and mkdocs.yml of any folder, leaving
    the rest); while a build writes, a second one of the same folder refuses. Raises
    :class:`SiteError` before writing anything where ``out`` is refused.
    """
    sources = site_sources()
    site_url = site_url or default_site_url()
    shown = str(out)
    out = Path(out).resolve()
    check_output(out, force=force, shown=shown)
    if example is None:
        example = sources.parent / "tests" / "plugin_packages" / "example"
    vendored = _vendored(sources)
    if results is not None:
        from papers.results import ResultsFile, read_results

        if not isinstance(results, ResultsFile):
            results = read_results(results)  # a bad file is refused before anything is measured or written
    made = _missing_ancestor(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _refuse(shown, f"cannot make the folder: {error.strerror or error}") from None
    try:
        with _locked(out, shown) as new_marker:
            try:
                # again, now that no other build can write here: one may have done so meanwhile
                check_output(out, force=force, shown=shown)
                for name in os.listdir(out):
                    if name.startswith(_SCRATCH):  # left by a build that was killed
                        shutil.rmtree(out / name, ignore_errors=True)
                _build_into(out, shown, sources, vendored, example, site_url, quiet, results)
            except BaseException:
                if new_marker:  # the folder was no site build: take the marker away, under the lock
                    with contextlib.suppress(OSError):
                        (out / MARKER).unlink()
                raise
    except BaseException:
        if made is not None and not os.path.lexists(out / MARKER):
            _remove_made(out, made)
        raise
    return out / "site"


def _build_into(
    out: Path,
    shown: str,
    sources: Path,
    vendored: dict[str, Path],
    example: Path,
    site_url: str,
    quiet: bool,
    results: ResultsFile | None,
) -> None:
    data = collect(results)
    try:
        scratch = Path(tempfile.mkdtemp(prefix=_SCRATCH, dir=out))
    except OSError as error:
        raise _refuse(shown, f"cannot write into the folder: {error.strerror or error}") from None
    try:
        docs = scratch / "docs"
        docs.mkdir()
        _copy_assets(sources, docs, vendored)
        nav = render_pages(data, docs, sources, example)
        # the theme's main.html, which loads mermaid on pages with a diagram only; MkDocs leaves
        # dot-folders of docs/ out of the site
        theme = docs / THEME_FOLDER
        theme.mkdir()
        shutil.copyfile(sources / "templates" / "mkdocs-main.html.j2", theme / "main.html")
        config = {
            "INHERIT": str(sources / "mkdocs.yml"),
            "site_url": site_url,
            "docs_dir": str(docs),
            "site_dir": str(scratch / "site"),
            "theme": {"custom_dir": str(theme)},
            "nav": nav,
        }
        config_file = scratch / "mkdocs.yml"
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
        _trim(scratch / "site")
        _swap_in(out, scratch)
        # the configuration as it would build the folder in place (`mkdocs serve -f out/mkdocs.yml`)
        config.update(
            docs_dir=str(out / "docs"),
            site_dir=str(out / "site"),
            theme={"custom_dir": str(out / "docs" / THEME_FOLDER)},
        )
        text = json.dumps(config, indent=2, ensure_ascii=False) + "\n"
        write_atomic(out / "mkdocs.yml", text.encode("utf-8"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _trim(site: Path) -> None:
    """Remove what a reader's browser never needs: source maps (and the comments naming them) and
    lunr's other languages and word splitters (the search is in English)."""
    for path in sorted(site.rglob("*.map")):
        path.unlink()
    shutil.rmtree(site / "assets" / "javascripts" / "lunr", ignore_errors=True)
    for path in sorted(site.rglob("*")):
        if path.suffix in (".js", ".css") and path.is_file():
            data = path.read_bytes()
            trimmed = re.sub(rb"\n?(//# sourceMappingURL=|/\*# sourceMappingURL=)[^\n]*", b"", data)
            if trimmed != data:
                path.write_bytes(trimmed)


def serve_site(directory: Path, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve a built site until interrupted."""
    import functools
    import http.server

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    with http.server.ThreadingHTTPServer((host, port), handler) as server:
        print(f"serving {directory} at http://{host}:{server.server_address[1]}/ (Ctrl-C stops)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()


__all__ = [
    "SiteData",
    "build_site",
    "check_output",
    "collect",
    "link_target",
    "markdown_link",
    "markdown_text",
    "serve_site",
    "site_sources",
]
