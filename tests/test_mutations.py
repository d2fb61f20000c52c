"""Hypothesis (c): mutated and invalid specs fail only with the project's own error, naming the field.

A valid spec is mutated (a field dropped, a value of another type, an out-of-range value, a broken
reference) or replaced by random YAML; validating and building it either succeeds or raises a
:class:`PapersError` naming the file, and the field for anything that parsed as a mapping.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import papers
from papers.errors import PapersError
from tests.conftest import minimal_spec


def _base() -> dict[str, Any]:
    data = minimal_spec()
    data["blocks"] = {
        "unit": {
            "params": {"width": 4, "stride": 1},
            "nodes": [
                {
                    "name": "conv",
                    "op": "conv2d",
                    "args": {
                        "out_channels": "${width}",
                        "kernel_size": 3,
                        "padding": 1,
                        "stride": "${stride}",
                    },
                },
                {"name": "relu", "op": "relu"},
            ],
        }
    }
    data["graphs"]["net"]["nodes"] = [
        {
            "name": "stem",
            "group": [
                {
                    "repeat": "depth",
                    "as": "i",
                    "body": [
                        {"block": "unit", "args": {"width": "${width}", "stride": "${2 if i == 0 else 1}"}}
                    ],
                }
            ],
        },
        {"name": "skip", "op": "add", "in": ["stem", "stem"], "feature": "stage1"},
        {"name": "pool", "op": "adaptive_avgpool2d", "args": {"output_size": 1}},
        {"name": "flat", "op": "flatten", "args": {"start_dim": 1}},
        {"name": "fc", "op": "linear", "args": {"out_features": "${num_classes}"}},
    ]
    data["graphs"]["net"]["params"]["depth"] = 2
    data["graphs"]["net"]["outputs"] = [{"name": "logits", "node": "fc"}]
    data["hyperparameters"] = {
        "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
        "batch_size": 128,
        "augmentation": [{"name": "random_crop", "args": {"size": 16}}],
    }
    data["results"] = [
        {"variant": "tiny8", "metric": "params", "value": 1.0, "unit": "thousand", "source": "Table 1"}
    ]
    return data


BASE = _base()
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@pytest.fixture(autouse=True, scope="module")
def _no_cache():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PAPERS_NO_CACHE", "1")
        yield


FOLDER = Path(tempfile.mkdtemp(prefix="papers-mutations-"))
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**15), 10**15),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)
out_of_range = st.sampled_from([-1, 0, -(10**12), 10**12, 1e300, "", [], {}, 10**9])
references = st.sampled_from(
    ["ghost", "${ghost}", "stem", "image", "${1 // 0}", "skip.x", "${depth * 10**6}"]
)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    found = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, child in items:
        found.append((*prefix, key))
        found.extend(_paths(child, (*prefix, key)))
    return found


@st.composite
def mutated_specs(draw) -> str:
    data = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(data)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        action = draw(st.sampled_from(["drop", "retype", "range", "reference"]))
        if action == "drop":
            del parent[key]
        else:
            parent[key] = draw({"retype": junk, "range": out_of_range, "reference": references}[action])
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False)


random_yaml = st.one_of(
    st.text(max_size=200),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=20,
    ).map(lambda data: yaml.dump(data, Dumper=_Dumper)),
)


def _validate(text: str) -> None:
    path = FOLDER / "spec.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        papers.validate_file(path)
    except PapersError as error:
        assert error.file == str(path)
        parsed_as_mapping = isinstance(_safe_parse(text), dict)
        if parsed_as_mapping:
            assert error.field, f"no field path in: {error}"


def _safe_parse(text: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)
    except Exception:
        return None


def common(examples: int) -> settings:
    return settings(suppress_health_check=[HealthCheck.too_slow], deadline=None, max_examples=examples)


def test_the_base_spec_is_valid():
    path = FOLDER / "base.yaml"
    path.write_text(yaml.safe_dump(BASE))
    papers.validate_file(path)


@common(2000)
@given(mutated_specs())
def test_mutated_specs_fail_only_with_the_projects_error_and_a_field(text):
    _validate(text)


@common(300)
@given(random_yaml)
def test_random_yaml_fails_only_with_the_projects_error(text):
    _validate(text)


@pytest.mark.slow
@common(20000)
@given(mutated_specs() | random_yaml)
def test_many_more_mutations(text):
    _validate(text)
