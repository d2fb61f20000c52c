"""Every registered variant builds on the meta device to the shape the builder inferred (as timm's
test that builds every registered model), and every library variant names a loadable reference."""

from __future__ import annotations

import pytest
import torch

import papers
from papers.build import assemble, trace
from papers.registry import get_registry

VARIANTS = sorted(get_registry().variants)


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_builds_on_meta_and_runs_to_its_inferred_shape(variant):
    registry = get_registry()
    flat = papers.expand_variant(variant)
    traced = trace(flat, registry.catalogue)
    model = assemble(flat, traced, registry.catalogue).eval()
    out = model(
        *[
            torch.empty(shape if name in flat.unbatched else (1, *shape), device="meta")
            for name, shape in flat.inputs.items()
        ]
    )
    outputs = list(out) if isinstance(out, tuple) else [out]
    assert [tuple(o.shape) for o in outputs] == [traced.shapes[node] for node in flat.outputs.values()]
    assert sum(traced.params.values()) > 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_library_variants_say_how_they_differ_and_name_a_reference(variant):
    _, spec_variant = get_registry().variant(variant)
    if spec_variant.origin in ("torchvision", "timm"):
        assert spec_variant.reference and spec_variant.reference.startswith(spec_variant.origin)
    if "." in variant:
        assert spec_variant.origin == variant.rsplit(".", 1)[1], (
            "an id.library variant is that library's model"
        )


def test_reference_model_builds_the_named_library_model():
    model = papers.reference_model("vgg11", num_classes=3)
    assert type(model).__name__ == "VGG" and model.classifier[-1].out_features == 3
    with pytest.raises(papers.PapersError, match="names no reference"):
        papers.reference_model("vgg11_lrn")
