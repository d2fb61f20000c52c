"""papers: the classic deep-learning literature as specs, runnable models and checked numbers.

>>> import papers
>>> [spec.id for spec in papers.list_papers(topic="classification")]  # doctest: +SKIP
>>> model = papers.build_model("vgg16", num_classes=10)                  # doctest: +SKIP

The names below are imported when first used, so that ``papers list`` (answered from the
registry's index) imports neither pydantic nor torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "build_model": "papers.api",
    "check": "papers.api",
    "expand_variant": "papers.api",
    "feature_info": "papers.api",
    "get_spec": "papers.api",
    "list_papers": "papers.api",
    "measure": "papers.api",
    "measure_many": "papers.api",
    "reference_model": "papers.api",
    "validate_file": "papers.api",
    "compress": "papers.compression",
    "load_compressed": "papers.compression",
    "diff": "papers.diff",
    "export_onnx": "papers.export",
    "lineage": "papers.lineage",
    "GraphError": "papers.errors",
    "PapersError": "papers.errors",
    "PluginError": "papers.errors",
    "SpecError": "papers.errors",
    "UnknownIdError": "papers.errors",
}

__all__ = [
    "GraphError",
    "PapersError",
    "PluginError",
    "SpecError",
    "UnknownIdError",
    "build_model",
    "check",
    "compress",
    "diff",
    "expand_variant",
    "export_onnx",
    "feature_info",
    "get_spec",
    "lineage",
    "list_papers",
    "load_compressed",
    "measure",
    "measure_many",
    "reference_model",
    "validate_file",
]

if TYPE_CHECKING:
    from papers.api import (
        build_model,
        check,
        expand_variant,
        feature_info,
        get_spec,
        list_papers,
        measure,
        measure_many,
        reference_model,
        validate_file,
    )
    from papers.compression import compress, load_compressed
    from papers.diff import diff
    from papers.errors import GraphError, PapersError, PluginError, SpecError, UnknownIdError
    from papers.export import export_onnx
    from papers.lineage import lineage


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'papers' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


class _Package(types.ModuleType):
    """``papers.measure`` is a function and a module: importing the module must not replace the
    function (the import system sets a package's attribute for each submodule it loads)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
