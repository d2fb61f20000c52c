"""The taxonomy of Cheng, Wang, Zhou and Zhang's survey of model compression and acceleration (2017,
arXiv 1710.09282) linked to the registry's implementations.

The survey sorts the field into four categories: parameter pruning and sharing (quantization and
binarization, network pruning, structural matrices), low-rank factorisation, transferred/compact
convolutional filters, and knowledge distillation. :data:`TECHNIQUES` names each technique with the
works the survey discusses under it and a rule that finds its implementations in the registry: the
compression kinds it covers, and the registry papers whose methods it covers beyond their kind (the
LC algorithm's pluggable C step, for one). The links are derived from the registry as it is when they
are asked for, so papers that other plugins add are linked as they land; :func:`unlinked` lists the
registry's compression papers (reviews aside) that no technique links, which the survey's check
reports as a failure, and :func:`not_implemented` the techniques the registry has nothing for yet.
The table is Markdown (:func:`taxonomy_markdown`), printed by ``papers check cheng2017 --run``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Technique:
    category: str
    name: str
    section: str
    examples: str
    """The works the survey discusses under the technique, in words."""
    kinds: tuple[str, ...] = ()
    """Compression kinds whose registry papers implement it."""
    papers: tuple[str, ...] = field(default=())
    """Registry papers that implement it beyond their kind."""


TECHNIQUES = (
    Technique(
        "Parameter pruning and sharing",
        "Quantization and binarization",
        "Section II.A",
        "k-means and product quantization (Gong et al.), 8- and 16-bit fixed point (Vanhoucke et al., "
        "Gupta et al.), Deep Compression's pruning, trained quantization and Huffman coding (Han et al.), "
        "BinaryConnect, BinaryNet and XNOR-Net",
        kinds=("quantization",),
        papers=("carreira2017", "deep_compression"),
    ),
    Technique(
        "Parameter pruning and sharing",
        "Network pruning",
        "Section II.B",
        "Optimal Brain Damage and Surgeon, magnitude pruning with retraining (Han et al.), data-free "
        "pruning (Srinivas and Babu), HashedNets, soft weight-sharing, sparsity constraints and "
        "structured (filter, channel) pruning",
        kinds=("pruning",),
        papers=("carreira2017", "soft_weight_sharing"),
    ),
    Technique(
        "Parameter pruning and sharing",
        "Structural matrices",
        "Section II.C",
        "circulant projections (Cheng et al.), Adaptive Fastfood transforms, structured transforms for "
        "small-footprint models (Sindhwani et al.)",
    ),
    Technique(
        "Low-rank factorization",
        "Low-rank factorization and sparsity",
        "Section III",
        "separable filters (Rigamonti et al.), low-rank expansions (Jaderberg et al.), the linear "
        "structure of convolutions (Denton et al.), CP decomposition (Lebedev et al.), Tucker "
        "decomposition (Kim et al.), low-rank regularisation (Tai et al.)",
        kinds=("low-rank",),
        papers=("carreira2017",),
    ),
    Technique(
        "Transferred/compact convolutional filters",
        "Transferred and compact convolutional filters",
        "Section IV",
        "equivariant group convolutions (Cohen and Welling), CReLU (Shang et al.), multi-bias "
        "non-linearity, SqueezeNet's fire modules and 3×3 filters decomposed into 1×3 and 3×1",
    ),
    Technique(
        "Knowledge distillation",
        "Knowledge distillation",
        "Section V",
        "model compression (Buciluǎ et al.), soft targets at a temperature (Hinton et al.), FitNets' hints "
        "(Romero et al.), attention transfer (Zagoruyko and Komodakis), Net2Net",
        kinds=("distillation",),
    ),
)


def compression_papers(registry: Any) -> dict[str, Any]:
    """The registry's compression papers that implement something (its reviews aside), by id."""
    return {
        paper: entry.spec
        for paper, entry in registry.papers.items()
        if "compression" in entry.spec.topics and entry.spec.kind != "review"
    }


def links(registry: Any) -> dict[Technique, list[str]]:
    """Each technique's implementations in the registry: the papers of its kinds and those it names."""
    present = {paper: entry.spec for paper, entry in registry.papers.items()}
    found = {}
    for technique in TECHNIQUES:
        by_kind = [p for p, spec in compression_papers(registry).items() if spec.kind in technique.kinds]
        named = [p for p in technique.papers if p in present]
        found[technique] = sorted(set(by_kind) | set(named))
    return found


def unlinked(registry: Any) -> list[str]:
    """The registry's compression papers (reviews aside) that no technique links."""
    linked = {paper for papers in links(registry).values() for paper in papers}
    return sorted(set(compression_papers(registry)) - linked)


def not_implemented(registry: Any) -> list[Technique]:
    """The techniques the registry has no implementation of yet."""
    return [technique for technique, papers in links(registry).items() if not papers]


def taxonomy_markdown(registry: Any) -> str:
    """The taxonomy as a Markdown page: each technique, the survey's examples and the registry's papers
    implementing it (links to their pages), then the techniques not yet implemented."""
    from papers.site import markdown_text

    rows = [
        "| category | technique | the survey's examples | in the registry |",
        "|---|---|---|---|",
    ]
    for technique, papers in links(registry).items():
        # paper ids are slugs: safe as link targets (the paper pages sit beside this one)
        implemented = ", ".join(f"[{markdown_text(paper)}]({paper}.md)" for paper in papers) or "not yet"
        rows.append(
            f"| {markdown_text(technique.category)} | {markdown_text(technique.name)} ({technique.section}) "
            f"| {markdown_text(technique.examples)} | {implemented} |"
        )
    missing = not_implemented(registry)
    lines = [*rows, "", "Not yet implemented in the registry:"]
    lines += [f"- {markdown_text(t.name)} ({t.section})" for t in missing] or ["- nothing"]
    return "\n".join(lines) + "\n"


def taxonomy_check() -> Any:
    """The survey's check: the share of the registry's compression papers its taxonomy links; passes at
    100%, and names the papers no technique links."""
    from papers.checks import TrainingCheck

    def run(progress: bool) -> tuple[float, float]:
        from papers.registry import get_registry

        registry = get_registry()
        papers, missing = compression_papers(registry), unlinked(registry)
        if progress:
            print(taxonomy_markdown(registry))
            if missing:
                print(f"not linked by any technique: {', '.join(missing)}")
        share = 100.0 * (len(papers) - len(missing)) / len(papers) if papers else 100.0
        return round(share, 4), 100.0

    return TrainingCheck(
        name="cheng2017-taxonomy",
        variant="cheng2017",
        data="the registry's compression papers",
        min_accuracy=100.0,
        metric="linked_percent",
        runner=run,
        proxy="no training: the share of the registry's compression papers (reviews aside) that the "
        "survey's taxonomy links to a technique, derived from their kinds and the papers each "
        "technique names; passes when every one is linked",
    )
