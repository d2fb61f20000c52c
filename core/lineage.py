"""The registry's family tree: which paper builds on which, read from the specs.

A paper builds on another where its spec lists it in ``uses``, inlines one of its graphs
(``graph: resnet.resnet``), instantiates one of its blocks (``block: preact-resnet.basic``), or has a
method variant whose base is one of its variants (``base: vgg16``). Each edge keeps what it was
read from, so the tree can be checked against the specs. The site draws it as a mermaid flowchart
(labels cut to :func:`papers.diagram.label_text`'s safe alphabet), each node a link to its paper.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from papers.diagram import label_text
from papers.spec import BlockNode, GraphNode, GroupNode, RepeatNode, Spec


@dataclass(frozen=True)
class LineageEdge:
    """``target`` builds on ``source`` (both paper ids)."""

    source: str
    target: str
    via: tuple[str, ...]
    """What the edge was read from, in the spec of ``target``: ``uses``, ``graph resnet.resnet``,
    ``block preact-resnet.basic``, ``base vgg16``."""


def lineage() -> list[LineageEdge]:
    """Every edge of the registry's family tree, the older paper first, in registry order."""
    from papers.registry import get_registry

    registry = get_registry()
    specs = [entry.spec for entry in registry.list()]
    return spec_edges(specs, {variant: entry.spec.id for variant, (entry, _) in registry.variants.items()})


def spec_edges(specs: Sequence[Spec], paper_of: Mapping[str, str]) -> list[LineageEdge]:
    """The edges among ``specs``; ``paper_of`` maps a variant id to its paper's id (method bases)."""
    order = {spec.id: index for index, spec in enumerate(specs)}
    year = {spec.id: spec.citation.year for spec in specs}
    found: dict[tuple[str, str], list[str]] = {}
    for spec in specs:
        for source, via in _references(spec, paper_of):
            # a later paper is no ancestor: torchvision's FCN on ResNet (2016) is a library variant of
            # FCN (2015), not a sign that FCN built on ResNet
            if source != spec.id and year.get(source, spec.citation.year) <= spec.citation.year:
                reasons = found.setdefault((source, spec.id), [])
                if via not in reasons:
                    reasons.append(via)
    edges = [LineageEdge(source, target, tuple(via)) for (source, target), via in found.items()]
    last = len(order)
    return sorted(edges, key=lambda e: (order.get(e.source, last), e.source, order.get(e.target, last)))


def _references(spec: Spec, paper_of: Mapping[str, str]) -> Iterator[tuple[str, str]]:
    for paper in spec.uses:
        yield paper, "uses"
    bodies = [graph.nodes for graph in spec.graphs.values()] + [block.nodes for block in spec.blocks.values()]
    for node in _walk(node for body in bodies for node in body):
        if isinstance(node, GraphNode) and "." in node.graph:
            yield node.graph.partition(".")[0], f"graph {node.graph}"
        elif isinstance(node, BlockNode) and "." in node.block and not node.block.startswith("${"):
            yield node.block.partition(".")[0], f"block {node.block}"
    for variant in spec.variants:
        if variant.base is not None and variant.base in paper_of:
            yield paper_of[variant.base], f"base {variant.base}"


def _walk(nodes: Iterable[Any]) -> Iterator[Any]:
    for node in nodes:
        yield node
        if isinstance(node, GroupNode):
            yield from _walk(node.group)
        elif isinstance(node, RepeatNode):
            yield from _walk(node.body)


# --- the site's page ------------------------------------------------------------------------------

_PAGE_PATH = re.compile(r"[a-z0-9_\-]+(/[a-z0-9_\-]+)*\.md")


@dataclass(frozen=True)
class LineagePaper:
    id: str
    name: str
    year: int
    path: str | None
    """Its page, relative to the site's root (``classification/resnet.md``); ``None``: no page."""

    @property
    def topic(self) -> str:
        """The folder of its page (``classification``)."""
        return (self.path or "").rpartition("/")[0]

    @property
    def page(self) -> str:
        """The file of its page in that folder (``resnet.md``)."""
        return (self.path or "").rpartition("/")[2]


@dataclass(frozen=True)
class LineagePage:
    """What the lineage page shows: the flowchart, its edges and the papers outside the tree."""

    diagram: str
    edges: list[tuple[LineagePaper, LineagePaper, tuple[str, ...]]]
    alone: list[LineagePaper]


def lineage_page(
    specs: Sequence[Spec], paths: Mapping[str, str], edges: Sequence[LineageEdge]
) -> LineagePage:
    """The lineage page of ``specs`` (oldest first), their pages at ``paths`` (paper id to the page's
    path under the site's root); the page itself is at the root (``lineage.md``)."""
    papers = {
        spec.id: LineagePaper(spec.id, spec.name, spec.citation.year, _page(paths.get(spec.id)))
        for spec in specs
    }
    known = [edge for edge in edges if edge.source in papers and edge.target in papers]
    linked = {paper for edge in known for paper in (edge.source, edge.target)}
    drawn = [paper for paper in papers.values() if paper.id in linked]
    ids = {paper.id: f"p{index}" for index, paper in enumerate(drawn)}
    lines = ["flowchart LR"]
    for paper in drawn:
        lines.append(f'  {ids[paper.id]}["{label_text(paper.name)}<br>{paper.year}"]')
    for edge in known:
        specific = [via for via in edge.via if via != "uses"] or list(edge.via)  # `uses` goes without saying
        label = label_text(", ".join(specific), limit=80)
        lines.append(f'  {ids[edge.source]} -->|"{label}"| {ids[edge.target]}')
    for paper in drawn:
        if paper.path is not None:  # the page is at /lineage/, each paper's at /topic/id/
            lines.append(f'  click {ids[paper.id]} href "../{paper.path[: -len(".md")]}/"')
    return LineagePage(
        diagram="\n".join(lines) + "\n",
        edges=[(papers[e.source], papers[e.target], e.via) for e in known],
        alone=[paper for paper in papers.values() if paper.id not in linked],
    )


def _page(path: str | None) -> str | None:
    """A page path that is safe inside a quoted mermaid link and a Markdown link target, else ``None``."""
    return path if path is not None and _PAGE_PATH.fullmatch(path) else None
