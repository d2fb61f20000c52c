"""papers: the classic deep-learning literature as specs, runnable models and checked numbers.

>>> import papers
>>> [spec.id for spec in papers.list_papers(topic="classification")]  # doctest: +SKIP
>>> model = papers.build_model("vgg16", num_classes=10)                  # doctest: +SKIP
"""

from papers.api import (
    build_model,
    check,
    expand_variant,
    get_spec,
    list_papers,
    measure,
    measure_many,
    reference_model,
    validate_file,
)
from papers.errors import GraphError, PapersError, PluginError, SpecError, UnknownIdError

__version__ = "0.1.0"

__all__ = [
    "GraphError",
    "PapersError",
    "PluginError",
    "SpecError",
    "UnknownIdError",
    "build_model",
    "check",
    "expand_variant",
    "get_spec",
    "list_papers",
    "measure",
    "measure_many",
    "reference_model",
    "validate_file",
]
