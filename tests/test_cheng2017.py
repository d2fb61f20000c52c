"""The survey (``cheng2017``): its taxonomy's links derived from the registry, a compression paper
that no technique links failing the check, the techniques not yet implemented listed, and the topics."""

from __future__ import annotations

import dataclasses

import pytest

import papers
import papers.registry
from papers.registry import get_registry
from papers_plugins.compression import taxonomy


def test_every_compression_paper_of_the_registry_is_linked_to_a_technique():
    registry = get_registry()
    assert taxonomy.unlinked(registry) == []
    linked = taxonomy.links(registry)
    by_name = {t.name: papers for t, papers in linked.items()}
    assert {"han2015", "deep_compression", "dns"} <= set(by_name["Network pruning"])
    assert {"hinton2015", "fitnets", "attention_transfer"} <= set(by_name["Knowledge distillation"])
    assert "carreira2017_quantization" in by_name["Quantization and binarization"]


def relabelled(entry, **changes):
    return dataclasses.replace(entry, spec=entry.spec.model_copy(update=changes))


def test_a_paper_of_a_kind_no_technique_covers_fails_the_check(monkeypatch):
    registry = get_registry()
    monkeypatch.setitem(
        registry.papers, "hinton2015", relabelled(registry.papers["hinton2015"], kind="low-rank")
    )
    monkeypatch.setattr(
        taxonomy, "TECHNIQUES", tuple(t for t in taxonomy.TECHNIQUES if "low-rank" not in t.kinds)
    )
    assert "hinton2015" in taxonomy.unlinked(registry)
    measured, passing = taxonomy.taxonomy_check().runner(False)
    assert measured < passing == 100.0


def test_papers_that_land_later_are_linked_by_their_kind(monkeypatch):
    registry = get_registry()
    monkeypatch.setitem(registry.papers, "newcomer", relabelled(registry.papers["hinton2015"], id="newcomer"))
    by_name = {t.name: p for t, p in taxonomy.links(registry).items()}
    assert "newcomer" in by_name["Knowledge distillation"]


def test_the_page_links_implementations_and_lists_what_is_not_implemented():
    page = taxonomy.taxonomy_markdown(get_registry())
    assert "[hinton2015](hinton2015.md)" in page and "[attention\\_transfer](attention_transfer.md)" in page
    missing = page.split("Not yet implemented in the registry:")[1]
    assert "Structural matrices" in missing and "Knowledge distillation" not in missing


@pytest.mark.parametrize("topic", ["review", "compression"])
def test_papers_list_by_topic_lists_the_survey(topic, run):
    assert "\ncheng2017 " in run("list", "--topic", topic).stdout


def test_the_check_passes_on_the_registry_as_it_is():
    check = papers.registry.get_registry().checks["cheng2017-taxonomy"][1]
    assert check.runner(False) == (100.0, 100.0)
