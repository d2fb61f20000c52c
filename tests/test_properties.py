"""Property tests: (a) generated valid graphs build, and run to the shape the builder inferred;
(b) a spec written to YAML and read back is the same spec."""

from __future__ import annotations

import string

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from papers.build import build
from papers.graph import expand
from papers.load import dump_spec, load_spec_text
from papers.measure import measure_graph
from papers.ops import Catalogue
from papers.spec import validate_spec
from tests.conftest import minimal_spec

CATALOGUE = Catalogue()


@st.composite
def graphs(draw):
    """A valid random DAG over a small image: convs, pools, norms, residual adds and concatenations."""
    channels, height, width = draw(st.integers(1, 4)), draw(st.integers(4, 12)), draw(st.integers(4, 12))
    shapes = {"image": (channels, height, width)}
    nodes, last = [], "image"
    for index in range(draw(st.integers(1, 8))):
        name = f"n{index}"
        c, h, w = shapes[last]
        choice = draw(st.sampled_from(["conv", "relu", "bn", "pool", "add", "cat"]))
        same = [n for n, s in shapes.items() if s == (c, h, w) and n != last]
        spatial = [n for n, s in shapes.items() if s[1:] == (h, w) and n != last]
        if choice == "conv":
            kernel, stride = draw(st.integers(1, 3)), draw(st.integers(1, 2))
            padding = draw(st.integers(0, kernel // 2))
            out_h, out_w = (h + 2 * padding - kernel) // stride + 1, (w + 2 * padding - kernel) // stride + 1
            if out_h < 1 or out_w < 1:
                continue
            out = draw(st.integers(1, 8))
            nodes.append(
                {
                    "name": name,
                    "op": "conv2d",
                    "in": last,
                    "args": {
                        "out_channels": out,
                        "kernel_size": kernel,
                        "stride": stride,
                        "padding": padding,
                    },
                }
            )
            shapes[name] = (out, out_h, out_w)
        elif choice == "pool" and h >= 2 and w >= 2:
            nodes.append({"name": name, "op": "maxpool2d", "in": last, "args": {"kernel_size": 2}})
            shapes[name] = (c, h // 2, w // 2)
        elif choice == "add" and same:
            other = draw(st.sampled_from(same))
            nodes.append({"name": name, "op": "add", "in": [last, other]})
            shapes[name] = (c, h, w)
        elif choice == "cat" and spatial:
            other = draw(st.sampled_from(spatial))
            nodes.append({"name": name, "op": "cat", "in": [last, other], "args": {"dim": 1}})
            shapes[name] = (c + shapes[other][0], h, w)
        elif choice in ("relu", "bn"):
            nodes.append({"name": name, "op": "relu" if choice == "relu" else "batchnorm2d", "in": last})
            shapes[name] = (c, h, w)
        else:
            continue
        last = name
    nodes.append({"name": "flat", "op": "flatten", "in": last, "args": {"start_dim": 1}})
    nodes.append({"name": "fc", "op": "linear", "args": {"out_features": draw(st.integers(1, 5))}})
    if draw(st.booleans()):  # the same graph inside a sequential group
        nodes = [{"name": "body", "group": nodes}]
    return {"inputs": {"image": [channels, height, width]}, "nodes": nodes}


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(graphs())
def test_generated_graphs_build_and_run_to_the_inferred_shape(graph):
    spec = validate_spec(minimal_spec(**graph))
    flat = expand(spec, "net", {}, CATALOGUE)
    inferred = measure_graph("tiny8", flat, CATALOGUE).output_shape
    model = build(flat, CATALOGUE).eval()
    with torch.no_grad():
        out = model(torch.randn(2, *graph["inputs"]["image"]))
    assert list(out.shape[1:]) == inferred[1:]


text = st.text(alphabet=string.ascii_letters + string.digits + " -:#'\"é✓&*!%{}[]", min_size=1, max_size=30)
tricky = st.sampled_from(["yes", "no", "null", "1e3", "0x10", "~", "on", "2015", "- a", "a: b", "${x}"])
numbers = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False, allow_infinity=False)
values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | numbers | text | tricky,
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=8,
)


@st.composite
def specs(draw):
    data = minimal_spec()
    data["name"] = draw(text | tricky)
    data["summary"] = draw(text | tricky)
    data["citation"]["title"] = draw(text | tricky)
    data["citation"]["authors"] = draw(st.lists(text | tricky, min_size=1, max_size=3))
    data["citation"]["year"] = draw(st.integers(1900, 2100))
    data["topics"] = draw(
        st.lists(
            st.sampled_from(["classification", "detection", "segmentation"]),
            min_size=1,
            max_size=3,
            unique=True,
        )
    )
    data["graphs"]["net"]["params"]["extra"] = draw(values)
    data["variants"][0]["args"] = {"width": draw(st.integers(1, 64))}
    if draw(st.booleans()):
        data["hyperparameters"] = {
            "optimizer": {
                "name": "sgd",
                "lr": draw(st.floats(1e-6, 1.0)),
                "momentum": draw(st.floats(0, 0.99)),
            },
            "weight_decay": draw(st.floats(0, 1e-2)),
            "batch_size": draw(st.integers(1, 4096)),
            "augmentation": [{"name": "random_crop", "args": {"size": draw(values)}}],
        }
    data["results"] = [
        {
            "variant": "tiny8",
            "metric": metric,
            "value": draw(st.floats(0, 1e9)),
            "unit": "count",
            "source": draw(text),
            "conditions": {"k": draw(values)},
        }
        for metric in draw(st.lists(st.sampled_from(["params", "macs", "top1_error"]), max_size=3))
    ]
    return validate_spec(data)


@given(specs())
def test_spec_round_trips_through_yaml_unchanged(spec):
    assert load_spec_text(dump_spec(spec)) == spec
