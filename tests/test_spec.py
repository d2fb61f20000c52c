"""Spec models: strict, closed, and precise about where a problem is."""

from __future__ import annotations

import json

import pytest

from papers.errors import SpecError
from papers.spec import METRIC_DIRECTION, Metric, Spec, validate_spec
from tests.conftest import minimal_spec


def error_for(data) -> SpecError:
    with pytest.raises(SpecError) as caught:
        validate_spec(data, file="spec.yaml")
    return caught.value


def test_minimal_spec_is_valid():
    spec = validate_spec(minimal_spec())
    assert spec.id == "tiny"
    assert spec.variant("tiny8").graph == "net"


def test_unknown_field_is_named():
    data = minimal_spec()
    data["citation"]["jounral"] = "typo"
    error = error_for(data)
    assert error.field == "citation.jounral"
    assert "unknown field" in error.message


def test_string_where_a_number_is_due_is_not_converted():
    data = minimal_spec()
    data["citation"]["year"] = "2015"
    error = error_for(data)
    assert error.field == "citation.year"
    assert "'2015'" in error.message


def test_missing_required_field_is_named():
    data = minimal_spec()
    del data["summary"]
    assert error_for(data).field == "summary"


def test_node_error_paths_skip_union_tags():
    data = minimal_spec()
    data["graphs"]["net"]["nodes"][0]["args"] = "not a mapping"
    assert error_for(data).field == "graphs.net.nodes[0].args"


def test_node_without_a_kind_is_explained():
    data = minimal_spec()
    data["graphs"]["net"]["nodes"][1] = {"name": "x"}
    error = error_for(data)
    assert error.field == "graphs.net.nodes[1]"
    assert "a node needs one of the keys op, block, group" in error.message


def test_results_must_name_a_variant_of_the_spec():
    data = minimal_spec()
    data["results"] = [
        {"variant": "nope", "metric": "params", "value": 1.0, "unit": "million", "source": "T1"}
    ]
    error = error_for(data)
    assert error.field == "results[0].variant"


def test_variant_ids_are_unique_and_name_a_graph():
    data = minimal_spec()
    data["variants"].append(dict(data["variants"][0]))
    assert error_for(data).field == "variants[1].id"
    data = minimal_spec()
    data["variants"][0]["graph"] = "other"
    assert error_for(data).field == "variants[0].graph"


def test_shape_results_take_shapes_and_numbers_take_numbers():
    data = minimal_spec()
    data["results"] = [
        {"variant": "tiny8", "metric": "output_shape", "value": 10.0, "unit": "count", "source": "T1"}
    ]
    assert error_for(data).field == "results[0]"


def test_compression_papers_carry_a_kind():
    data = minimal_spec()
    data["topics"] = ["compression"]
    assert "kind" in error_for(data).message
    data["kind"] = "pruning"
    assert validate_spec(data).kind == "pruning"


def test_library_variants_explain_how_they_differ():
    data = minimal_spec()
    data["variants"][0]["origin"] = "torchvision"
    assert "origin_note" in error_for(data).message


def test_spec_is_frozen():
    spec = validate_spec(minimal_spec())
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance error
        spec.id = "other"  # type: ignore[misc]


def test_every_metric_has_a_direction():
    assert set(Metric.__args__) == set(METRIC_DIRECTION)


def test_json_schema_describes_the_spec():
    schema = Spec.model_json_schema(by_alias=True)
    json.dumps(schema)
    assert {"id", "citation", "graphs", "variants", "results"} <= set(schema["properties"])
