"""Cheng, Wang, Zhou and Zhang, "A Survey of Model Compression and Acceleration for Deep Neural Networks"
(2017, arXiv 1710.09282): the survey's taxonomy linked to the registry's implementations.

The paper's plugin: its spec (kind ``review``), its check, that every compression paper of the
registry is linked to a technique of the taxonomy, and the taxonomy as a section of its page
(``page_sections``). The taxonomy is in :mod:`papers_plugins.compression.taxonomy`.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from papers.hookspecs import hookimpl


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "compression" / "cheng2017.yaml"]


@hookimpl
def papers_checks() -> list:
    from papers_plugins.compression.taxonomy import taxonomy_check

    return [taxonomy_check()]


def page_sections(registry: Any) -> list[tuple[str, str]]:
    """The survey's page shows its taxonomy, each technique linked to the registry's papers."""
    from papers_plugins.compression.taxonomy import taxonomy_markdown

    return [("The survey's taxonomy in the registry", taxonomy_markdown(registry))]
