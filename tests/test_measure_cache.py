"""The measurement cache: keyed by the expanded graph, read back exactly, never trusted when damaged."""

from __future__ import annotations

import importlib

import pytest

from papers.graph import expand
from papers.measure import graph_key, measure_graph
from papers.ops import Catalogue
from papers.spec import validate_spec
from tests.conftest import minimal_spec

CATALOGUE = Catalogue()
measure_module = importlib.import_module("papers.measure")  # `papers.measure` is also a function


def flat_for(**bind):
    return expand(validate_spec(minimal_spec()), "net", bind, CATALOGUE)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERS_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("PAPERS_NO_CACHE", raising=False)
    return tmp_path / "measure"


def _refuse_to_measure(monkeypatch):
    def refuse(*args):
        raise AssertionError("measured again instead of reading the cache")

    monkeypatch.setattr(measure_module, "_measure", refuse)


def test_a_measurement_is_read_back_from_the_cache_unchanged(cache, monkeypatch):
    first = measure_graph("tiny8", flat_for(), CATALOGUE)
    assert len(list(cache.glob("*.json"))) == 1
    _refuse_to_measure(monkeypatch)
    again = measure_graph("tiny8", flat_for(), CATALOGUE)
    assert again == first


def test_another_variant_with_the_same_graph_shares_the_entry_under_its_own_name(cache, monkeypatch):
    measure_graph("tiny8", flat_for(), CATALOGUE)
    _refuse_to_measure(monkeypatch)
    assert measure_graph("other", flat_for(), CATALOGUE).variant == "other"


def test_a_different_graph_is_a_different_key():
    assert graph_key(flat_for(), CATALOGUE) != graph_key(flat_for(width=9), CATALOGUE)
    assert graph_key(flat_for(), CATALOGUE) == graph_key(flat_for(), CATALOGUE)


def test_a_damaged_entry_is_measured_again(cache):
    first = measure_graph("tiny8", flat_for(), CATALOGUE)
    (entry,) = cache.glob("*.json")
    entry.write_text('{"params": "not a measurement"')
    assert measure_graph("tiny8", flat_for(), CATALOGUE) == first


def test_papers_no_cache_writes_and_reads_nothing(cache, monkeypatch):
    monkeypatch.setenv("PAPERS_NO_CACHE", "1")
    measure_graph("tiny8", flat_for(), CATALOGUE)
    assert not cache.exists()


def test_editing_a_plugins_layer_changes_the_key(tmp_path, monkeypatch):
    from papers.ops import Op

    layer = tmp_path / "papers_test_layer.py"
    layer.write_text(
        "from torch import nn\n\n\nclass Twice(nn.Module):\n    def forward(self, x):\n        return 2 * x\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    catalogue = Catalogue()
    catalogue.add(Op("twice", "papers_test_layer:Twice"), origin="test")
    data = minimal_spec()
    data["graphs"]["net"]["nodes"].insert(1, {"name": "twice", "op": "twice"})
    flat = expand(validate_spec(data), "net", {}, catalogue)
    before = graph_key(flat, catalogue)
    layer.write_text(layer.read_text().replace("2 * x", "3 * x"))
    measure_module._source_hash.cache_clear()
    assert graph_key(flat, catalogue) != before


def test_measure_many_fills_the_cache_in_worker_processes(cache, monkeypatch):
    import papers

    variants = ["resnet20", "resnet32", "resnet44", "resnet56"]
    measured = papers.measure_many(variants, jobs=2)
    assert len(list(cache.glob("*.json"))) == len(variants)
    assert [m.variant for m in measured.values()] == variants
    _refuse_to_measure(monkeypatch)
    assert papers.measure_many(variants, jobs=2) == measured, "the second call reads the cache only"
